"""The data side of ``rnnkit train classify``: which files, how they are read, the validation
hold-out, the label map and the normalization statistics, padded batches; the scores, the
confusion matrix plot and the predictions file.

Files by suffix: ``.ts`` (``rnnkit.data.files.ts_format``), ``.csv`` / ``.tsv``
(``csv_sequences``, wide or long), ``.npz`` (``npz_sequences``). The classes are the labels of
the whole TRAIN file (sorted: numerically when every label is an integer); a label of another
file that TRAIN does not have is an error naming that file, the line and the label. The
validation split is held out of TRAIN per class (stratified) by ``split_seed``; the
normalization (per-feature mean and standard deviation over every valid time step) is fitted
on the remaining training sequences only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data.files import DataFileError
from rnnkit.data.files.csv_sequences import LAYOUTS, load_csv
from rnnkit.data.files.npz_sequences import load_npz
from rnnkit.data.files.sequences import MISSING_POLICIES, LabelledSequences
from rnnkit.data.files.ts_format import load_ts
from rnnkit.models.recurrent_config import check_range
from rnnkit.train.tasks.file_tasks import write_table

SUFFIXES = (".ts", ".csv", ".tsv", ".npz")
ANNOTATED_CLASSES = 20
"""Confusion matrices of at most this many classes print their counts in the cells."""


@dataclass
class SequenceFilesConfig:
    """The files of labelled sequences and how they are read."""

    train: str = ""
    """The TRAIN file (``--data``): ``.ts``, ``.csv``, ``.tsv`` or ``.npz``."""
    test: str | None = None
    """An optional TEST file (``--test``), scored after training and by ``rnnkit eval RUN``."""
    label_column: str = "label"
    """CSV/TSV: the column holding each sequence's label."""
    layout: str = "auto"
    """CSV/TSV: ``wide`` (a series per row), ``long`` (a step per row, grouped by ``id``), or
    ``auto`` (long when there is an ``id`` column)."""
    missing: str = "error"
    """Missing values: ``error`` (naming the file and line), ``interpolate`` (linear in time)
    or ``zero``; filled values are counted in the load report."""
    validation_fraction: float = 0.2
    """Share of each class of TRAIN held out for validation, in (0, 1)."""
    split_seed: int = 0
    """Seed of the validation hold-out."""

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.missing not in MISSING_POLICIES:
            raise ValueError(
                f"missing must be one of {', '.join(MISSING_POLICIES)}, got {self.missing!r}"
            )
        check_range("validation_fraction", self.validation_fraction, 0.0, 1.0)
        if self.validation_fraction == 0.0:
            raise ValueError("validation_fraction must be above 0: validation needs sequences")
        for name in ("train", "test"):
            value = getattr(self, name)
            if value and Path(value).suffix.lower() not in SUFFIXES:
                raise ValueError(f"{name}: expected a {', '.join(SUFFIXES)} file, got {value!r}")


def load_sequences(
    path: str | Path, config: SequenceFilesConfig, require_labels: bool = True
) -> LabelledSequences:
    """Read ``path`` by its suffix with the options of ``config``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ts":
        return load_ts(path, config.missing, require_labels)
    if suffix == ".npz":
        return load_npz(path, config.missing, require_labels)
    if suffix in (".csv", ".tsv"):
        return load_csv(path, config.label_column, config.layout, config.missing, require_labels)
    raise DataFileError(path, f"unknown file type {suffix!r}; expected {', '.join(SUFFIXES)}")


def sorted_classes(labels: list[str]) -> list[str]:
    """The distinct labels, numerically sorted when all are integers, else as text."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(training, validation)`` indices: ``round(fraction * n)`` of each class's ``n``
    sequences held out (at most ``n - 1``, so every class stays in training), drawn by
    ``seed``; both sorted."""
    generator = np.random.default_rng(seed)
    training, validation = [], []
    for label in sorted_classes(labels):
        members = [index for index, value in enumerate(labels) if value == label]
        members = [members[i] for i in generator.permutation(len(members))]
        held = min(round(fraction * len(members)), len(members) - 1)
        validation += members[:held]
        training += members[held:]
    if not validation:
        raise ValueError(
            f"validation_fraction {fraction} of {len(labels)} sequences holds none out; "
            "raise --data.validation_fraction"
        )
    return sorted(training), sorted(validation)


def normalization(sequences: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature ``(mean, std)`` over every step of ``sequences``; a constant feature gets
    std 1 (so it becomes 0, not NaN)."""
    steps = np.concatenate(sequences, axis=0)  # (sum T_i, D)
    mean, std = steps.mean(0), steps.std(0)
    return mean, np.where(std > 1e-12, std, 1.0)


def check_features(data: LabelledSequences, num_features: int) -> None:
    if data.num_features != num_features:
        raise DataFileError(
            data.source,
            f"{data.num_features} features per step, the model was trained on {num_features}",
            where=data.locations[0],
        )


def encode_labels(data: LabelledSequences, classes: list[str]) -> Tensor:
    """``(N,)`` int64 class indices; a label outside ``classes`` is a ``DataFileError`` naming
    the file, the place and the label."""
    if data.labels is None:
        raise DataFileError(data.source, "the file has no labels to score against")
    index = {label: position for position, label in enumerate(classes)}
    for label, where in zip(data.labels, data.locations, strict=True):
        if label not in index:
            raise DataFileError(
                data.source,
                f"label {label!r} was never seen in training (its classes: {', '.join(classes)})",
                where=where,
            )
    return torch.tensor([index[label] for label in data.labels], dtype=torch.int64)


@dataclass
class PaddedSequences:
    """Sequences padded with zeros to the longest: ``values (N, T, D)`` float32 and
    ``lengths (N,)`` int64."""

    values: Tensor
    lengths: Tensor

    @classmethod
    def of(cls, sequences: list[np.ndarray]) -> PaddedSequences:
        lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
        values = torch.zeros(len(sequences), int(lengths.max()), sequences[0].shape[1])
        for row, sequence in enumerate(sequences):
            values[row, : len(sequence)] = torch.from_numpy(sequence)
        return cls(values, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def select(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(values (B, T_max, D), lengths (B,))`` of ``rows``, trimmed to their longest."""
        lengths = self.lengths[rows]
        return self.values[rows, : int(lengths.max())], lengths

    def batches(self, batch_size: int) -> list[tuple[Tensor, Tensor]]:
        """Consecutive batches of ``batch_size`` sequences, in order."""
        return [
            self.select(torch.arange(start, min(start + batch_size, len(self))))
            for start in range(0, len(self), batch_size)
        ]


@dataclass
class Scored:
    """A model's reading of a labelled set."""

    log_probs: Tensor  # (N, C)
    targets: Tensor  # (N,)

    def confusion(self) -> Tensor:
        """``(C, C)`` counts: row the true class, column the predicted one."""
        classes = self.log_probs.shape[-1]
        pairs = self.targets * classes + self.log_probs.argmax(-1)
        return torch.bincount(pairs, minlength=classes * classes).view(classes, classes)

    def metrics(self) -> dict[str, float]:
        """``loss`` (nats per sequence), ``accuracy`` and ``macro_f1``: the mean over the
        classes that are true or predicted at least once of ``F1 = 2 TP / (2 TP + FP + FN)``
        (as scikit-learn's ``f1_score(average="macro")``)."""
        matrix = self.confusion().double()
        hits = matrix.diagonal()
        true, predicted = matrix.sum(1), matrix.sum(0)
        present = (true + predicted) > 0
        f1 = 2 * hits[present] / (true[present] + predicted[present])
        return {
            "loss": float(functional.nll_loss(self.log_probs, self.targets)),
            "accuracy": float(hits.sum() / matrix.sum()),
            "macro_f1": float(f1.mean()),
        }


def plot_confusion(scored: Scored, classes: list[str], path: Path, title: str) -> None:
    """Counts of (true class, predicted class) as an image, rows the true classes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    matrix = scored.confusion().numpy()
    size = min(4 + 0.4 * len(classes), 16)
    figure, axes = pyplot.subplots(figsize=(size + 1, size))
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    ticks = list(range(len(classes)))
    axes.set_xticks(ticks, classes, rotation=90 if len(classes) > 8 else 0)
    axes.set_yticks(ticks, classes)
    if len(classes) <= ANNOTATED_CLASSES:
        threshold = matrix.max() / 2
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if count > threshold else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def write_predictions(path: Path, classes: list[str], probabilities: Tensor) -> None:
    """``index, predicted, probability_<class>...`` rows (CSV, or TSV for a ``.tsv`` path)."""
    header = ["index", "predicted", *(f"probability_{name}" for name in classes)]
    rows = (
        [index, classes[int(np.argmax(row))], *(f"{value:.6g}" for value in row)]
        for index, row in enumerate(probabilities.tolist())
    )
    write_table(path, header, rows)
