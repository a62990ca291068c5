"""Sequence to sequence on your own pairs: ``rnnkit train seq2seq --data PAIRS.tsv``.

The file holds ``source<TAB>target`` per line (``rnnkit.data.files.pairs_tsv``: characters or
whitespace-separated symbols per side, ``--data.source_tokens=chars|words`` and
``--data.target_tokens``). A validation and a test split are held out of it by
``data.split_seed`` (or the test set comes from ``--data.test=FILE``); both vocabularies are
built on the training split, and a token of the held-out sets or of a later file that training
never saw maps to ``<unk>`` and is counted in the report (an unknown target token is never
predicted, so it always counts as an error). The model is ``rnnkit.models.seq2seq`` (any cell,
``--model.encoder.cell=gru``), trained as ``reverse`` and ``add`` are (``seq2seq_tasks``: the
teacher-forced cross-entropy in nats per target token, eos included); training step s draws
its pairs from ``batch_generator(seed, s)``, so a resumed run repeats the uninterrupted one.

Scores (greedy during training; greedy and beam search in the report and ``rnnkit eval``):
exact-sequence accuracy and the token error rate, the edit distance over the reference's
tokens (``rnnkit.decoding.metrics.label_error_rate``): the word error rate when targets are
words, the character (or phoneme) error rate for symbols. ``rnnkit predict`` writes
``source, prediction`` by beam search (``--decoding.beam_width=1`` is greedy).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import torch

from rnnkit.data.files.pairs_tsv import Pair, read_pairs, read_sources
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tasks.file_tasks import write_table
from rnnkit.train.tasks.seq2seq_files_task import (
    EVALUATION_BATCH,
    Seq2SeqFilesConfig,
    Seq2SeqFilesTask,
    score_pairs,
)
from rnnkit.train.tasks.seq2seq_plots import plot_attention_weights
from rnnkit.train.tasks.seq2seq_tasks import decode, greedy_attention
from rnnkit.train.threads import restoring_threads

NAME = "seq2seq"
ATTENTION_PLOTS = 3


def format_scores(task: Seq2SeqFilesTask, metrics: dict[str, float], count: int) -> str:
    kind = "word" if task.config.data.target_tokens == "words" else "character"
    text = (
        f"  {count} pairs: loss {metrics['loss']:.4f} nats/token, token accuracy "
        f"{metrics['token_accuracy']:.4f}\n"
        f"  greedy: exact {metrics['exact_accuracy']:.4f}, {kind} error rate "
        f"{metrics['token_error_rate']:.4f}\n"
    )
    if "beam_exact_accuracy" in metrics:
        text += (
            f"  beam (width {task.config.decoding.beam_width}): exact "
            f"{metrics['beam_exact_accuracy']:.4f}, {kind} error rate "
            f"{metrics['beam_token_error_rate']:.4f}\n"
        )
    return text + (
        f"  unknown tokens (mapped to <unk>, counted as errors): "
        f"{metrics['unknown_source_tokens']:.0f} source, "
        f"{metrics['unknown_target_tokens']:.0f} target\n"
    )


def build(config: Seq2SeqFilesConfig, metadata: dict[str, Any] | None) -> Seq2SeqFilesTask:
    return Seq2SeqFilesTask(config, metadata)


def report(task: Seq2SeqFilesTask, result: Any, stream: TextIO, run_dir: Path) -> None:
    """Final validation metrics, the test set with greedy and beam search, a few test
    predictions and ``attention-1.png`` ... of the first test pairs."""
    if result.evaluation:
        metrics = result.evaluation
        stream.write(
            f"final validation after {result.step} steps ({result.train_seconds:.0f} s of "
            f"training): loss {metrics['loss']:.4f} nats/token, exact (greedy) "
            f"{metrics['exact_accuracy']:.4f}, token error rate {metrics['token_error_rate']:.4f}\n"
        )
    test = task.splits()["test"]
    if not test:
        return
    metrics, hypotheses = score_pairs(task, test, beam=True)
    stream.write(f"test set:\n{format_scores(task, metrics, len(test))}")
    stream.write("test examples (greedy):\n")
    count = task.config.decoding.examples
    for pair, hypothesis in list(zip(test, hypotheses["greedy"], strict=True))[:count]:
        source, target = task.texts(pair)
        predicted = task.texts((pair[0], hypothesis))[1]
        verdict = "ok" if hypothesis == pair[1] else f"wrong, expected {target}"
        stream.write(f"  {source} -> {predicted}  ({verdict})\n")
    for path in plot_attention(task, test[:ATTENTION_PLOTS], run_dir):
        stream.write(f"attention of a test example: {path}\n")


def plot_attention(task: Seq2SeqFilesTask, pairs: Sequence[Pair], run_dir: Path) -> list[Path]:
    """``attention-K.png``: the attention weights while decoding each pair greedily."""
    if task.model.attention is None:
        return []
    task.model.eval()
    paths = []
    for number, pair in enumerate(pairs, start=1):
        predicted, weights = greedy_attention(task.model, task.batch([pair]), task.max_length)
        symbols = [task.target_vocabulary.symbols[token] for token in predicted.tolist()]
        title = f"{NAME}: attention on test pair {number}"
        path = run_dir / f"attention-{number}.png"
        paths.append(plot_attention_weights(weights, list(pair[0]), symbols, title, path))
    return paths


@restoring_threads
def evaluate_run(run_dir: Path, stream: TextIO) -> dict[str, float]:
    """Greedy and beam search scores on the run's test split."""
    config, task, step = supervised.load_run(run_dir, NAME, Seq2SeqFilesConfig, build)
    test = task.splits()["test"]
    if not test:
        raise ValueError(f"{run_dir} held out no test pairs; rnnkit eval {run_dir} --data FILE")
    metrics, _ = score_pairs(task, test, beam=True)
    source = config.data.test or f"the test split of {config.data.path}"
    stream.write(f"{source} (model at step {step}):\n{format_scores(task, metrics, len(test))}")
    return metrics


@restoring_threads
def evaluate_file(run_dir: Path, data_path: Path, stream: TextIO) -> dict[str, float]:
    """Greedy and beam search scores on a pairs file the user brings."""
    config, task, step = supervised.load_run(run_dir, NAME, Seq2SeqFilesConfig, build)
    pairs, load_report = read_pairs(data_path, config.data.source_tokens, config.data.target_tokens)
    metrics, _ = score_pairs(task, pairs, beam=True)
    stream.write(f"{load_report.summary()} (model at step {step}):\n")
    stream.write(format_scores(task, metrics, len(pairs)))
    return metrics


@restoring_threads
def predict_file(run_dir: Path, data_path: Path, output_path: Path, stream: TextIO) -> int:
    """``source, prediction`` rows (beam search) for every source of ``data_path``."""
    config, task, _ = supervised.load_run(run_dir, NAME, Seq2SeqFilesConfig, build)
    sources, load_report = read_sources(data_path, config.data.source_tokens)
    stream.write(load_report.summary() + "\n")
    unknown: dict[str, Counter[str]] = {"source": Counter(), "target": Counter()}
    rows = []
    with torch.no_grad():
        for start in range(0, len(sources), EVALUATION_BATCH):
            chunk = [(source, ()) for source in sources[start : start + EVALUATION_BATCH]]
            batch = task.batch(chunk, unknown)
            outputs = decode(task.model, batch, config.decoding, task.max_length).tolist()
            for pair, output in zip(chunk, outputs, strict=True):
                rows.append(task.texts((pair[0], task.target_vocabulary.decode(output))))
    stream.write(f"unknown source tokens (mapped to <unk>): {sum(unknown['source'].values())}\n")
    return write_table(output_path, ["source", "prediction"], rows)


def next_steps(run_dir: Path) -> str:
    return (
        f"evaluate (greedy and beam search) with\n  rnnkit eval {run_dir} [--data PAIRS.tsv]\n"
        f"predict with\n  rnnkit predict {run_dir} --data SOURCES.txt --output out.tsv\n"
    )


DEFINITIONS = [
    TaskDefinition(
        name=NAME,
        description="encoder-decoder with attention on a file of source<TAB>target pairs",
        config_type=Seq2SeqFilesConfig,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
        shortcuts={"data": "data.path"},
        evaluate_file=evaluate_file,
        predict_file=predict_file,
    )
]
