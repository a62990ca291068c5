"""Labelled sequences read from a file, and the policy for missing values.

Every sequence loader (``ts_format``, ``csv_sequences``, ``npz_sequences``) returns a
``LabelledSequences``: one ``(T_i, D)`` float64 array per sequence (lengths may differ), its
label as text, and where it was in the file (``"line 12"``, ``"row 3"``, ``"sequence 4"``) so
that a later check (a label training never saw) can name the place.

Missing values (``?``, ``NaN``, an empty cell inside a row) follow ``missing``:

- ``"error"`` (the default): refuse the file, naming the line or row of the first one;
- ``"interpolate"``: linear interpolation in time within each feature of a sequence; missing
  values before the first or after the last known value take that value; a feature with no
  known value in a sequence is an error;
- ``"zero"``: replace each by 0 (after normalization a zero is not the mean: use it when 0 is
  a meaningful value).

Filled values are counted in the loader's ``LoadReport`` (``"missing values interpolated"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnkit.data.files.errors import DataFileError, LoadReport

MISSING_POLICIES = ("error", "interpolate", "zero")
MISSING_WORDS = ("?", "nan", "")
"""Cell texts read as a missing value (compared lower-cased, after stripping spaces)."""


@dataclass
class LabelledSequences:
    """Sequences of feature vectors with one label each (``labels`` None: an unlabelled file,
    for prediction only)."""

    values: list[np.ndarray]
    """One ``(T_i, D)`` float64 array per sequence; every ``T_i >= 1``, one ``D`` for all."""
    labels: list[str] | None
    """The label of each sequence as text (integers in NPZ files become their decimal text)."""
    locations: list[str]
    """Where each sequence is in the file: ``"line 12"``, ``"row 3"``, ``"sequence 4"``."""
    source: Path
    report: LoadReport
    """What the loader read and filled; ``read`` is set to the number of sequences."""

    def __post_init__(self) -> None:
        if not self.values:
            raise DataFileError(self.source, "no sequences in the file")
        if self.labels is not None and len(self.labels) != len(self.values):
            raise ValueError(f"{len(self.labels)} labels for {len(self.values)} sequences")
        self.report.read = len(self.values)

    def __len__(self) -> int:
        return len(self.values)

    @property
    def num_features(self) -> int:
        return int(self.values[0].shape[1])

    def lengths(self) -> np.ndarray:
        """``(N,)`` int64: each sequence's number of steps."""
        return np.array([len(sequence) for sequence in self.values], dtype=np.int64)


def check_missing_policy(missing: str) -> None:
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {', '.join(MISSING_POLICIES)}, got {missing!r}")


def parse_number(text: str) -> float:
    """A cell's number; NaN for a missing value (``?``, ``NaN``, empty); ``ValueError`` else."""
    stripped = text.strip()
    if stripped.lower() in MISSING_WORDS:
        return float("nan")
    value = float(stripped)  # raises ValueError for text that is not a number
    if not np.isfinite(value):
        raise ValueError(f"{stripped!r} is not a finite number")
    return value


def fill_missing(
    values: np.ndarray, missing: str, report: LoadReport, path: Path, where: str
) -> np.ndarray:
    """``values (T, D)`` with its NaNs filled by the policy ``missing`` (see the module
    docstring); ``DataFileError`` at ``where`` when the policy is ``"error"``."""
    gaps = np.isnan(values)
    count = int(gaps.sum())
    if count == 0:
        return values
    if missing == "error":
        step, feature = (int(index) for index in np.argwhere(gaps)[0])
        raise DataFileError(
            path,
            f"missing value at step {step + 1}, feature {feature + 1} ({count} in this sequence);"
            " fill them with --data.missing=interpolate or --data.missing=zero",
            where=where,
        )
    filled = values.copy()
    if missing == "zero":
        filled[gaps] = 0.0
        report.fill("missing values set to zero", count)
        return filled
    steps = np.arange(len(values))
    for feature in range(values.shape[1]):
        known = ~gaps[:, feature]
        if not known.any():
            raise DataFileError(
                path,
                f"feature {feature + 1} has no value at any step, nothing to interpolate from",
                where=where,
            )
        filled[:, feature] = np.interp(steps, steps[known], values[known, feature])
    report.fill("missing values interpolated", count)
    return filled
