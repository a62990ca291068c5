"""CTC on your own feature sequences: ``rnnkit train ctc --data FEATURES.npz``.

The file holds frames ``X (N, T, D)``, ``lengths (N,)`` and labels (``rnnkit.data.files.ctc_npz``:
strings with an alphabet, or label-id lists). A validation and a test split are held out of it
by ``data.split_seed`` (or the test set comes from ``--data.test=FILE``). The model is
``rnnkit.models.CRNN`` reading the ``(D, T)`` feature map of each example as an image of D rows:
2-D convolutions over features and frames (``--model.conv_layers``, ``--model.channels``; with
``--model.height_poolings=0`` they keep D) feed a bidirectional recurrent reader of any cell
(``--model.recurrent.cell=gru``), trained with CTC (Graves et al. 2006) in nats per label, as
``digit-strings`` is; training step s draws its examples from ``batch_generator(seed, s)``.

Scores, as ``digit-strings`` (greedy during training; greedy, prefix beam search and prefix
beam search with a character n-gram model fitted on the training labels in the report and
``rnnkit eval``): exact accuracy, label error rate (edit distance over the reference labels)
and sequence error rate. ``rnnkit predict`` writes ``index, label`` read greedily.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import torch

from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.ctc_files_task import CTCFilesConfig, CTCFilesTask, read_examples
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tasks.digit_strings import Readings, read_greedy, write_readings
from rnnkit.train.tasks.file_tasks import write_table
from rnnkit.train.threads import restoring_threads

NAME = "ctc"


def build(config: CTCFilesConfig, metadata: dict[str, Any] | None) -> CTCFilesTask:
    return CTCFilesTask(config, metadata)


def scores(loss: float, readings: dict[str, Readings]) -> dict[str, float]:
    results = {"loss": loss}
    for name, reading in readings.items():
        results.update({f"{name}_{key}": value for key, value in reading.metrics().items()})
    return results


def label_text(task: CTCFilesTask, labels: tuple[int, ...]) -> str:
    """Symbols joined (with spaces when a symbol is longer than a character)."""
    separator = " " if any(len(symbol) != 1 for symbol in task.alphabet) else ""
    return separator.join(task.alphabet[label] for label in labels)


def report(task: CTCFilesTask, result: Any, stream: TextIO, run_dir: Path) -> None:
    """Final validation metrics, the test set with every decoder, a few readings."""
    if result.evaluation:
        evaluation = result.evaluation
        stream.write(
            f"final validation (greedy) after {result.step} steps ({result.train_seconds:.0f} s "
            f"of training): loss {evaluation['loss']:.4f} nats/label, exact "
            f"{evaluation['exact_accuracy']:.4f}, label error rate "
            f"{evaluation['label_error_rate']:.4f}\n"
        )
    test = task.splits()["test"]
    if not len(test):
        return
    loss, readings = read_examples(task, test, with_beams=True)
    stream.write(f"test set ({len(test)} examples):\n")
    write_readings(stream, loss, readings, "label")
    greedy = readings["greedy"]
    pairs = zip(greedy.references, greedy.hypotheses, strict=True)
    for true, read in list(pairs)[: task.config.decoding.examples]:
        verdict = "" if true == read else "MISREAD"
        stream.write(f"  true {label_text(task, true)}  read {label_text(task, read)}  {verdict}\n")


@restoring_threads
def evaluate_run(run_dir: Path, stream: TextIO) -> dict[str, float]:
    """Every decoder's scores on the run's test split."""
    config, task, step = supervised.load_run(run_dir, NAME, CTCFilesConfig, build)
    test = task.splits()["test"]
    if not len(test):
        raise ValueError(f"{run_dir} held out no test examples; rnnkit eval {run_dir} --data FILE")
    loss, readings = read_examples(task, test, with_beams=True)
    source = config.data.test or f"the test split of {config.data.path}"
    stream.write(f"{source}, {len(test)} examples (model at step {step}):\n")
    write_readings(stream, loss, readings, "label")
    return scores(loss, readings)


@restoring_threads
def evaluate_file(run_dir: Path, data_path: Path, stream: TextIO) -> dict[str, float]:
    """Every decoder's scores on a labelled file the user brings."""
    _, task, step = supervised.load_run(run_dir, NAME, CTCFilesConfig, build)
    examples = task.load(data_path, task.alphabet, task.feature_size)
    loss, readings = read_examples(task, examples, with_beams=True)
    stream.write(f"{task.summaries[-1]} (model at step {step}):\n")
    write_readings(stream, loss, readings, "label")
    return scores(loss, readings)


@restoring_threads
def predict_file(run_dir: Path, data_path: Path, output_path: Path, stream: TextIO) -> int:
    """``index, label`` rows (greedy) for every example of ``data_path`` (labels not needed)."""
    _, task, _ = supervised.load_run(run_dir, NAME, CTCFilesConfig, build)
    examples = task.load(data_path, task.alphabet, task.feature_size, require_labels=False)
    stream.write(task.summaries[-1] + "\n")
    with torch.no_grad():  # no labels, so no loss: the reader's outputs alone
        outputs = [task.model(images, lengths) for images, lengths, _, _ in task.batches(examples)]
    hypotheses = read_greedy(outputs, [()] * len(examples)).hypotheses
    rows = ((index, label_text(task, read)) for index, read in enumerate(hypotheses))
    return write_table(output_path, ["index", "label"], rows)


def next_steps(run_dir: Path) -> str:
    return (
        f"evaluate (greedy, beam, beam + n-gram) with\n  rnnkit eval {run_dir} [--data FILE]\n"
        f"predict with\n  rnnkit predict {run_dir} --data FEATURES.npz --output out.tsv\n"
    )


DEFINITIONS = [
    TaskDefinition(
        name=NAME,
        description="CRNN + CTC on a file of feature sequences and their labels",
        config_type=CTCFilesConfig,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
        shortcuts={"data": "data.path"},
        evaluate_file=evaluate_file,
        predict_file=predict_file,
    )
]
