"""``rnnkit train classify --data TRAIN [--test TEST]``: one label per sequence, from your files.

The sequences come from a UCR/UEA ``.ts`` file, a wide or long CSV/TSV table or an ``.npz``
archive (``classify_data``); a stratified validation split is held out of TRAIN, the labels are
mapped on TRAIN and the per-feature normalization is fitted on the training split only. The
model is ``rnnkit.models.SequenceClassifier``: any registered cell and strategy
(``--model.recurrent.cell=gru``, ``--model.recurrent.bidirectional=true``), a pooling
(``--model.pooling=last|mean|attention``) and a linear head, over zero-padded batches with
their lengths. Training step ``s`` draws its sequences from ``supervised.batch_generator(seed,
s)``, so a resumed run sees the batches of the uninterrupted one.

Metrics: ``loss`` (cross-entropy, nats per sequence), ``accuracy``, ``macro_f1``. The report
scores TEST (when given) and draws its confusion matrix (else the validation split's) into
``confusion_matrix.png``. ``rnnkit eval RUN`` scores TEST, else the validation split;
``rnnkit eval RUN --data FILE`` scores a file; ``rnnkit predict RUN --data FILE --output
preds.csv`` writes ``index, predicted`` and one ``probability_<class>`` column per class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data.files import DataFileError
from rnnkit.data.files.sequences import LabelledSequences
from rnnkit.models.sequence_classifier import SequenceClassifier, SequenceClassifierConfig
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.task import FitResult
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.classify_data import (
    PaddedSequences,
    Scored,
    SequenceFilesConfig,
    check_features,
    encode_labels,
    load_sequences,
    normalization,
    plot_confusion,
    sorted_classes,
    stratified_split,
    write_predictions,
)
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

NAME = "classify"
CONFUSION_FILE = "confusion_matrix.png"


@dataclass
class ClassifyConfig:
    """Sequence classification on your files: every setting of a run."""

    data: SequenceFilesConfig = field(default_factory=SequenceFilesConfig)
    model: SequenceClassifierConfig = field(default_factory=SequenceClassifierConfig)
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(
            learning_rate=3e-3, weight_decay=0.01, warmup_steps=50
        )
    )
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_steps=2000, time_budget_seconds=300, threads=1)
    )
    evaluation_batch_size: int = 256
    """Sequences per batch when scoring."""
    seed: int = 0
    """Seeds the weights and the training batches: runs stopped by steps repeat exactly."""


class ClassifyTask(supervised.NoCarriedTensors):
    """The ``TrainingTask``: cross-entropy of each sequence's label."""

    unit = "sequence"
    splits_batch_by_rank = True  # under torchrun each rank trains its rows (train_loss)

    def __init__(self, config: ClassifyConfig, metadata: dict[str, Any] | None) -> None:
        if not config.data.train:
            raise ValueError("classify needs a training file: --data TRAIN (.ts, .csv, .npz)")
        self.config = config
        self._splits: tuple[PaddedSequences, Tensor, PaddedSequences, Tensor] | None = None
        self.notes: list[str] = []
        self._metadata = metadata if metadata is not None else self._fit()
        self.classes: list[str] = list(self._metadata["classes"])
        self.num_features = int(self._metadata["num_features"])
        self.model = SequenceClassifier(config.model, self.num_features, len(self.classes))
        self.model.set_normalization(
            torch.tensor(self._metadata["mean"]), torch.tensor(self._metadata["std"])
        )

    def _fit(self) -> dict[str, Any]:
        """Load TRAIN, hold out validation, map the labels, fit the normalization."""
        data = self.config.data
        whole = load_sequences(data.train, data)
        assert whole.labels is not None  # required by load_sequences
        training, validation = stratified_split(
            whole.labels, data.validation_fraction, data.split_seed
        )
        mean, std = normalization([whole.values[index] for index in training])
        classes = sorted_classes(whole.labels)
        self._splits = self._padded(whole, classes, training, validation)
        if data.test:  # refuse a bad TEST file now, not after training
            test = load_sequences(data.test, data)
            check_features(test, whole.num_features)
            encode_labels(test, classes)
            self.notes.append(test.report.summary())
        return {
            "classes": classes,
            "num_features": whole.num_features,
            "mean": mean.tolist(),
            "std": std.tolist(),
        }

    def _padded(
        self,
        whole: LabelledSequences,
        classes: list[str],
        training: list[int],
        validation: list[int],
    ) -> tuple[PaddedSequences, Tensor, PaddedSequences, Tensor]:
        targets = encode_labels(whole, classes)
        self.notes = [
            whole.report.summary(),
            f"{len(training)} training and {len(validation)} validation sequences (stratified, "
            f"split_seed {self.config.data.split_seed}); {len(classes)} classes",
        ]
        return (
            PaddedSequences.of([whole.values[index] for index in training]),
            targets[training],
            PaddedSequences.of([whole.values[index] for index in validation]),
            targets[validation],
        )

    def splits(self) -> tuple[PaddedSequences, Tensor, PaddedSequences, Tensor]:
        """``(training, targets, validation, targets)``; a resumed run re-reads TRAIN."""
        if self._splits is None:
            data = self.config.data
            whole = load_sequences(data.train, data)
            assert whole.labels is not None
            check_features(whole, self.num_features)
            if sorted_classes(whole.labels) != self.classes:
                raise DataFileError(
                    whole.source,
                    f"its labels are now {', '.join(sorted_classes(whole.labels))}; the run was "
                    f"trained on {', '.join(self.classes)}",
                )
            split = stratified_split(whole.labels, data.validation_fraction, data.split_seed)
            self._splits = self._padded(whole, self.classes, *split)
        return self._splits

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        training, targets, _, _ = self.splits()
        generator = supervised.batch_generator(self.config.seed, step)
        batch_size = self.config.trainer.batch_size
        rows = torch.randint(len(training), (batch_size,), generator=generator)
        rows = supervised.rank_rows(rows, batch_size)  # this rank's rows of the whole batch
        values, lengths = training.select(rows)
        return functional.cross_entropy(self.model(values, lengths), targets[rows]), len(rows)

    def log_probabilities(self, padded: PaddedSequences) -> Tensor:
        """``(N, C)`` log-probabilities of the classes, in eval mode, without gradients."""
        training = self.model.training
        self.model.eval()
        with torch.no_grad():
            logits = [
                self.model(values, lengths)
                for values, lengths in padded.batches(self.config.evaluation_batch_size)
            ]
        self.model.train(training)
        return torch.log_softmax(torch.cat(logits), -1)

    def score(self, padded: PaddedSequences, targets: Tensor) -> Scored:
        return Scored(self.log_probabilities(padded), targets)

    def evaluate(self) -> dict[str, float]:
        _, _, validation, targets = self.splits()
        return self.score(validation, targets).metrics()

    def score_file(self, path: Path) -> tuple[Scored, str]:
        """The scores of a labelled file and its load report's summary."""
        data = load_sequences(path, self.config.data)
        check_features(data, self.num_features)
        targets = encode_labels(data, self.classes)
        return self.score(PaddedSequences.of(data.values), targets), data.report.summary()

    def metadata(self) -> dict[str, Any]:
        return self._metadata

    def describe(self) -> str:
        return "\n".join(
            [
                *self.notes,
                f"model: {self.model.describe()}",
                self.model.recurrent.describe_strategy(),
            ]
        )


def build(config: ClassifyConfig, metadata: dict[str, Any] | None) -> ClassifyTask:
    return ClassifyTask(config, metadata)


def format_metrics(metrics: dict[str, float]) -> str:
    return (
        f"loss {metrics['loss']:.4f}, accuracy {metrics['accuracy']:.4f}, "
        f"macro-F1 {metrics['macro_f1']:.4f}"
    )


def report(task: ClassifyTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
    """Final validation metrics, TEST's (when given), the confusion matrix plot."""
    task.model.eval()
    _, _, validation, targets = task.splits()
    scored = task.score(validation, targets)
    stream.write(
        f"after {result.step} steps ({result.train_seconds:.1f} s of training), validation "
        f"({len(validation)} sequences): {format_metrics(scored.metrics())}\n"
    )
    title = f"validation split of {Path(task.config.data.train).name}"
    if task.config.data.test:
        scored, summary = task.score_file(Path(task.config.data.test))
        stream.write(f"test {summary}: {format_metrics(scored.metrics())}\n")
        title = f"test: {Path(task.config.data.test).name}"
    accuracy = scored.metrics()["accuracy"]
    plot_confusion(
        scored, task.classes, run_dir / CONFUSION_FILE, f"{title} (accuracy {accuracy:.3f})"
    )
    stream.write(f"confusion matrix ({title}): {run_dir / CONFUSION_FILE}\n")


def _load(run_dir: Path) -> tuple[ClassifyConfig, ClassifyTask, int]:
    return supervised.load_run(run_dir, NAME, ClassifyConfig, build)


@restoring_threads
def evaluate_run(run_dir: Path, stream: TextIO) -> dict[str, float]:
    """TEST's metrics when the run was given one, else the validation split's."""
    config, task, step = _load(run_dir)
    if config.data.test:
        return _write_file_scores(task, Path(config.data.test), step, stream)
    _, _, validation, targets = task.splits()
    metrics = task.score(validation, targets).metrics()
    stream.write(
        f"validation split of {config.data.train} ({len(validation)} sequences, model at step "
        f"{step}): {format_metrics(metrics)}\n"
    )
    return metrics


def _write_file_scores(task: ClassifyTask, path: Path, step: int, stream: TextIO) -> dict:
    scored, summary = task.score_file(path)
    metrics = scored.metrics()
    stream.write(f"{summary} (model at step {step}): {format_metrics(metrics)}\n")
    return metrics


@restoring_threads
def evaluate_file(run_dir: Path, data_path: Path, stream: TextIO) -> dict[str, float]:
    _, task, step = _load(run_dir)
    return _write_file_scores(task, data_path, step, stream)


@restoring_threads
def predict_file(run_dir: Path, data_path: Path, output_path: Path, stream: TextIO) -> int:
    """Write ``index, predicted, probability_<class>...`` for every sequence of the file (its
    labels, if any, are not read)."""
    config, task, _ = _load(run_dir)
    data = load_sequences(data_path, config.data, require_labels=False)
    check_features(data, task.num_features)
    log_probabilities = task.log_probabilities(PaddedSequences.of(data.values))
    write_predictions(output_path, task.classes, log_probabilities.exp())
    stream.write(data.report.summary() + "\n")
    return len(data)


def next_steps(run_dir: Path) -> str:
    return (
        f"score the test file (or the validation split), or any labelled file:\n"
        f"  rnnkit eval {run_dir} [--data FILE] [--json]\n"
        f"predict the labels of a file:\n"
        f"  rnnkit predict {run_dir} --data FILE --output predictions.csv\n"
    )


DEFINITIONS = [
    TaskDefinition(
        name=NAME,
        description="sequence classifier on your files (.ts, .csv, .npz): one label per sequence",
        config_type=ClassifyConfig,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
        shortcuts={"data": "data.train", "test": "data.test"},
        evaluate_file=evaluate_file,
        predict_file=predict_file,
    )
]
