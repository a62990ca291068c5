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

import csv
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch.nn.utils.rnn import pad_sequence

from rnnkit.data.algorithmic import BOS, EOS, Batch
from rnnkit.data.files.pairs_tsv import (
    Pair,
    PairsDataConfig,
    TokenVocabulary,
    join_tokens,
    load_splits,
    read_pairs,
    read_sources,
)
from rnnkit.decoding.metrics import label_error_rate
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.train.checkpoint import CheckpointError
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tasks.seq2seq_plots import plot_attention_weights
from rnnkit.train.tasks.seq2seq_tasks import DecodingConfig, decode, greedy_attention, token_loss
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

NAME = "seq2seq"
EVALUATION_BATCH = 250
ATTENTION_PLOTS = 3


@dataclass
class Seq2SeqFilesConfig:
    """An encoder-decoder on a file of pairs: every setting of a run."""

    data: PairsDataConfig = field(default_factory=PairsDataConfig)
    """The pairs file and its splits."""
    model: Seq2SeqConfig = field(
        default_factory=lambda: Seq2SeqConfig(attention="additive", attention_style="bahdanau")
    )
    """The encoder-decoder (Bahdanau attention, as ``reverse`` and ``add``)."""
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(learning_rate=3e-3, weight_decay=0.0)
    )
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(time_budget_seconds=300, batch_size=64, threads=1)
    )
    """Stopping, evaluation, logging (one thread, as the other seq2seq tasks)."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """Beam search and the printed examples."""
    seed: int = 0
    """Seeds the batches and the initialization."""


class Seq2SeqFilesTask(supervised.NoCarriedTensors):
    """The ``TrainingTask``: teacher-forced cross-entropy per target token."""

    unit = "token"

    def __init__(self, config: Seq2SeqFilesConfig, metadata: dict[str, Any] | None) -> None:
        self.config = config
        self._splits: dict[str, list[Pair]] | None = None
        self.summaries: list[str] = []
        if metadata is None:
            train = self.splits()["train"]
            self.source_vocabulary = TokenVocabulary.build(source for source, _ in train)
            self.target_vocabulary = TokenVocabulary.build(target for _, target in train)
            longest = max(len(target) for _, target in train)
            self.max_length = config.data.max_output_length or longest + 10
        else:  # a trained run: nothing read until a split is needed
            self.source_vocabulary = TokenVocabulary(metadata["source_vocabulary"][4:])
            self.target_vocabulary = TokenVocabulary(metadata["target_vocabulary"][4:])
            self.max_length = int(metadata["max_length"])
        self.model = Seq2Seq(config.model, len(self.source_vocabulary), len(self.target_vocabulary))

    def splits(self) -> dict[str, list[Pair]]:
        """The pairs of each split, read on first use (checked against a resumed vocabulary)."""
        if self._splits is None:
            self._splits, self.summaries = load_splits(self.config.data)
            if hasattr(self, "source_vocabulary"):
                train = self._splits["train"]
                for side, vocabulary in ((0, self.source_vocabulary), (1, self.target_vocabulary)):
                    found = TokenVocabulary.build(pair[side] for pair in train).symbols
                    if found != vocabulary.symbols:
                        raise CheckpointError(
                            f"{self.config.data.path}: its training split's vocabulary is not "
                            "the checkpoint's; resume on the same file and split"
                        )
        return self._splits

    def batch(self, pairs: Sequence[Pair], unknown: dict[str, Counter[str]] | None = None) -> Batch:
        """Encode and pad ``pairs``; unknown tokens are counted per side in ``unknown``."""
        unknown = unknown if unknown is not None else {"source": Counter(), "target": Counter()}
        sources = [self.source_vocabulary.encode(source, unknown["source"]) for source, _ in pairs]
        targets = [self.target_vocabulary.encode(target, unknown["target"]) for _, target in pairs]
        source, source_lengths = _pad(sources)
        target_input, _ = _pad([[BOS, *target] for target in targets])
        target_output, target_lengths = _pad([[*target, EOS] for target in targets])
        examples = [self.texts(pair) for pair in pairs]
        return Batch(source, source_lengths, target_input, target_output, target_lengths, examples)

    def texts(self, pair: Pair) -> tuple[str, str]:
        data = self.config.data
        return join_tokens(pair[0], data.source_tokens), join_tokens(pair[1], data.target_tokens)

    def train_loss(self, step: int) -> tuple[torch.Tensor, int]:
        train = self.splits()["train"]
        generator = supervised.batch_generator(self.config.seed, step)
        rows = torch.randint(len(train), (self.config.trainer.batch_size,), generator=generator)
        total, tokens, _ = token_loss(self.model, self.batch([train[row] for row in rows.tolist()]))
        return total / tokens, tokens

    def evaluate(self) -> dict[str, float]:
        validation = self.splits()["validation"] or self.splits()["train"][:200]
        return score_pairs(self, validation, beam=False)[0]

    def metadata(self) -> dict[str, Any]:
        return {
            "source_vocabulary": self.source_vocabulary.symbols,
            "target_vocabulary": self.target_vocabulary.symbols,
            "max_length": self.max_length,
        }

    def describe(self) -> str:
        sizes = ", ".join(f"{len(pairs)} {name}" for name, pairs in self.splits().items())
        data = self.config.data
        return (
            "\n".join(self.summaries) + f"\npairs: {sizes}; vocabularies of "
            f"{len(self.source_vocabulary)} source ({data.source_tokens}) and "
            f"{len(self.target_vocabulary)} target ({data.target_tokens}) tokens with specials\n"
            f"{self.model.describe()}\nencoder:\n{self.model.encoder.describe_strategy()}"
        )


def _pad(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = [torch.tensor(sequence, dtype=torch.int64) for sequence in sequences]
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
    return pad_sequence(tensors, batch_first=True), lengths


@torch.no_grad()
def score_pairs(
    task: Seq2SeqFilesTask, pairs: Sequence[Pair], beam: bool
) -> tuple[dict[str, float], dict[str, list[tuple[str, ...]]]]:
    """Loss, teacher-forced token accuracy, and per decoder (greedy, and beam search when
    ``beam``) the exact accuracy and the token error rate; the unknown tokens' counts. Also
    each decoder's hypotheses."""
    task.model.eval()
    decoders = {"greedy": None, "beam": task.config.decoding} if beam else {"greedy": None}
    unknown: dict[str, Counter[str]] = {"source": Counter(), "target": Counter()}
    sums = {"loss": 0.0, "tokens": 0.0, "correct": 0.0}
    hypotheses: dict[str, list[tuple[str, ...]]] = {name: [] for name in decoders}
    for start in range(0, len(pairs), EVALUATION_BATCH):
        batch = task.batch(pairs[start : start + EVALUATION_BATCH], unknown)
        total, tokens, correct = token_loss(task.model, batch)
        sums["loss"] += float(total)
        sums["tokens"] += tokens
        sums["correct"] += correct
        for name, decoding in decoders.items():
            outputs = decode(task.model, batch, decoding, task.max_length).tolist()
            hypotheses[name] += [task.target_vocabulary.decode(output) for output in outputs]
    references = [target for _, target in pairs]
    metrics = {
        "loss": sums["loss"] / sums["tokens"],
        "token_accuracy": sums["correct"] / sums["tokens"],
        "unknown_source_tokens": float(sum(unknown["source"].values())),
        "unknown_target_tokens": float(sum(unknown["target"].values())),
    }
    for name, found in hypotheses.items():
        prefix = "" if name == "greedy" else "beam_"
        exact = sum(
            hypothesis == reference for hypothesis, reference in zip(found, references, strict=True)
        )
        metrics[prefix + "exact_accuracy"] = exact / len(pairs)
        metrics[prefix + "token_error_rate"] = label_error_rate(references, found)
    return metrics, hypotheses


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
    delimiter = "\t" if output_path.suffix == ".tsv" else ","
    with output_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(["source", "prediction"])
        writer.writerows(rows)
    return len(rows)


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
