"""Labelled sequences in a NumPy ``.npz`` archive (``numpy.savez``).

Arrays:

- ``X``: ``(N, T, D)`` numbers (``(N, T)``: one feature), padded to the longest sequence;
- ``lengths`` (optional): ``(N,)`` integers in ``1..T``, each sequence's valid steps (without
  it every sequence has ``T`` steps);
- ``y``: ``(N,)`` integers or strings, the labels (optional for prediction,
  ``require_labels=False``).

NaN within a sequence's valid steps is a missing value (``sequences.fill_missing``); the padding
after ``lengths`` is ignored. Object arrays (pickles) are refused: ``numpy.load`` reads them with
``allow_pickle=False``.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from rnnkit.data.files.errors import DataFileError, LoadReport
from rnnkit.data.files.sequences import LabelledSequences, check_missing_policy, fill_missing


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataFileError(path, "a single .npy array, expected an .npz archive")
            return {name: archive[name] for name in archive.files}
    except OSError as error:
        raise DataFileError(path, f"cannot read the file ({error})") from None
    except (ValueError, zipfile.BadZipFile) as error:
        raise DataFileError(path, f"not a NumPy .npz archive without pickles ({error})") from None


def _features(path: Path, arrays: dict[str, np.ndarray]) -> np.ndarray:
    if "X" not in arrays:
        found = ", ".join(sorted(arrays)) or "none"
        raise DataFileError(path, f"no array 'X' (the sequences); arrays: {found}")
    features = arrays["X"]
    if features.ndim == 2:
        features = features[:, :, None]
    if features.ndim != 3 or 0 in features.shape:
        raise DataFileError(
            path,
            f"expected (N, T, D) with N, T, D >= 1, got shape {features.shape}",
            where="array 'X'",
        )
    if not (np.issubdtype(features.dtype, np.number) and not np.iscomplexobj(features)):
        raise DataFileError(path, f"expected real numbers, got {features.dtype}", where="array 'X'")
    return features.astype(np.float64)


def _lengths(path: Path, arrays: dict[str, np.ndarray], count: int, steps: int) -> np.ndarray:
    if "lengths" not in arrays:
        return np.full(count, steps, dtype=np.int64)
    lengths = arrays["lengths"]
    if lengths.shape != (count,) or not np.issubdtype(lengths.dtype, np.integer):
        raise DataFileError(
            path,
            f"expected ({count},) integers (one per sequence of X), got "
            f"shape {lengths.shape} of {lengths.dtype}",
            where="array 'lengths'",
        )
    bad = np.flatnonzero((lengths < 1) | (lengths > steps))
    if bad.size:
        raise DataFileError(
            path,
            f"sequence {bad[0]}: length {lengths[bad[0]]} outside 1..{steps} (X's time steps)",
            where="array 'lengths'",
        )
    return lengths.astype(np.int64)


def _labels(path: Path, arrays: dict[str, np.ndarray], count: int) -> list[str]:
    labels = arrays["y"]
    if labels.shape != (count,):
        raise DataFileError(
            path,
            f"expected ({count},) labels (one per sequence of X), got shape {labels.shape}",
            where="array 'y'",
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype.kind in "US"):
        raise DataFileError(
            path, f"expected integers or strings, got {labels.dtype}", where="array 'y'"
        )
    texts = [
        str(label.decode() if isinstance(label, bytes) else label) for label in labels.tolist()
    ]
    empty = [index for index, text in enumerate(texts) if not text.strip()]
    if empty:
        raise DataFileError(path, f"sequence {empty[0]}: an empty label", where="array 'y'")
    return [text.strip() for text in texts]


def load_npz(
    path: str | Path, missing: str = "error", require_labels: bool = True
) -> LabelledSequences:
    """Read ``X``, ``lengths`` and ``y`` (see the module docstring)."""
    check_missing_policy(missing)
    path = Path(path)
    arrays = _read_arrays(path)
    features = _features(path, arrays)
    count, steps, _ = features.shape
    lengths = _lengths(path, arrays, count, steps)
    if "y" not in arrays and require_labels:
        raise DataFileError(path, f"no array 'y' (the labels); arrays: {', '.join(sorted(arrays))}")
    labels = _labels(path, arrays, count) if "y" in arrays else None
    report = LoadReport(path)
    values, locations = [], []
    for index in range(count):
        where = f"array 'X', sequence {index}"
        if np.isinf(features[index, : lengths[index]]).any():
            raise DataFileError(path, "an infinite value", where=where)
        values.append(fill_missing(features[index, : lengths[index]], missing, report, path, where))
        locations.append(f"sequence {index}")
    return LabelledSequences(values, labels, locations, path, report)
