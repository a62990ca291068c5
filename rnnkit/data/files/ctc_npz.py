"""Feature sequences and their label sequences in a NumPy ``.npz`` file, for CTC.

Arrays (N examples, T frames, D features):

- ``X (N, T, D)`` float: the frames, padded past each example's length (any values);
- ``lengths (N,)`` int: frames of each example, in [1, T];
- the labels, one of
  - ``labels (N,)`` strings: every character a symbol (``"4071"``, ``"hello"``), with
    ``alphabet`` an array of single-character strings, or inferred (the sorted characters);
  - ``label_ids``: an object array of N integer lists, or an ``(N, L)`` integer array padded
    past ``label_lengths (N,)``; ids in [0, K) where K = len(``alphabet``) when given, else the
    largest id + 1 (symbols then read ``"0"``, ``"1"``, ...).

Refused with a ``DataFileError`` naming the file and the array or the example: a missing
array, ``X`` not 3-D or not finite, lengths out of [1, T], labels of the wrong count, a symbol
or id outside the alphabet, and labels that CTC cannot align in the frames: a labelling l needs
T >= |l| + (the number of adjacent repeats in l), a blank between each repeat. Nothing is
skipped. Object arrays need ``allow_pickle``: load only files you trust.

Label index k (0-based in the alphabet) is CTC class k + 1; class 0 is the blank.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.files.errors import DataFileError, LoadReport


@dataclass
class CTCExamples:
    """The examples of a file: frames, lengths and (when the file has them) labels."""

    features: Tensor  # (N, T, D) float32
    lengths: Tensor  # (N,) int64
    labels: list[tuple[int, ...]] | None  # label indices in [0, K), None without labels
    alphabet: list[str]  # the K symbols

    def subset(self, indices: Sequence[int]) -> CTCExamples:
        rows = torch.tensor(list(indices), dtype=torch.int64)
        labels = None if self.labels is None else [self.labels[index] for index in indices]
        return CTCExamples(self.features[rows], self.lengths[rows], labels, self.alphabet)

    def __len__(self) -> int:
        return len(self.lengths)


def load_ctc_npz(
    path: str | Path, alphabet: Sequence[str] | None = None, require_labels: bool = True
) -> tuple[CTCExamples, LoadReport]:
    """Read and check a CTC ``.npz``; ``alphabet``: a trained run's symbols (else the file's,
    or inferred). Without ``require_labels`` a file of frames alone is accepted."""
    path = Path(path)
    arrays = _read(path)
    features = _features(path, arrays)
    lengths = _lengths(path, arrays, features.shape)
    labels, symbols = None, list(alphabet) if alphabet is not None else None
    if "labels" in arrays or "label_ids" in arrays or require_labels:
        if symbols is None and "alphabet" in arrays:
            symbols = [str(symbol) for symbol in np.asarray(arrays["alphabet"]).ravel()]
        labels, symbols = _labels(path, arrays, len(lengths), symbols)
        check_alignable(path, labels, lengths)
    report = LoadReport(path, read=len(lengths))
    return CTCExamples(features, lengths, labels, symbols or []), report


def _read(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a zip archive (never a bare pickle: a non-zip file is refused first)."""
    if not path.is_file():
        raise DataFileError(path, "expected a NumPy .npz archive, found no such file")
    if not zipfile.is_zipfile(path):
        raise DataFileError(path, "expected a NumPy .npz archive, found a file that is not a zip")
    try:
        with np.load(path, allow_pickle=True) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise DataFileError(path, f"expected a NumPy .npz archive, found {error}") from None


def _array(path: Path, arrays: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in arrays:
        raise DataFileError(path, f"missing array {name!r}; found {sorted(arrays)}")
    return arrays[name]


def _features(path: Path, arrays: dict[str, np.ndarray]) -> Tensor:
    values = _array(path, arrays, "X")
    where = "array 'X'"
    if values.ndim != 3:
        raise DataFileError(path, f"expected (N, T, D), found shape {values.shape}", where=where)
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise DataFileError(path, f"expected real numbers, found dtype {values.dtype}", where=where)
    bad = np.flatnonzero(~np.isfinite(values).all(axis=(1, 2)))
    if len(bad):
        raise DataFileError(path, f"example {bad[0]} holds NaN or infinity", where=where)
    return torch.from_numpy(values.astype(np.float32))


def _lengths(path: Path, arrays: dict[str, np.ndarray], shape: tuple[int, ...]) -> Tensor:
    values, where = _array(path, arrays, "lengths"), "array 'lengths'"
    count, steps = shape[0], shape[1]
    if values.shape != (count,) or not np.issubdtype(values.dtype, np.integer):
        raise DataFileError(
            path, f"expected {count} integers (one per example of X), found shape "
            f"{values.shape} of {values.dtype}", where=where,
        )  # fmt: skip
    bad = np.flatnonzero((values < 1) | (values > steps))
    if len(bad):
        raise DataFileError(
            path, f"example {bad[0]}: expected a length in [1, T={steps}], found "
            f"{values[bad[0]]}", where=where,
        )  # fmt: skip
    return torch.from_numpy(values.astype(np.int64))


def _labels(
    path: Path, arrays: dict[str, np.ndarray], count: int, alphabet: list[str] | None
) -> tuple[list[tuple[int, ...]], list[str]]:
    """Label indices per example and the alphabet."""
    if ("labels" in arrays) == ("label_ids" in arrays):
        raise DataFileError(
            path, "expected exactly one of the arrays 'labels' (strings) and 'label_ids', "
            f"found {sorted(arrays)}",
        )  # fmt: skip
    if "labels" in arrays:
        strings = [str(text) for text in _per_example(path, arrays["labels"], "labels", count)]
        if alphabet is None:
            alphabet = sorted({symbol for text in strings for symbol in text})
        index = {symbol: position for position, symbol in enumerate(alphabet)}
        for number, text in enumerate(strings):
            outside = sorted(set(text) - set(index))
            if outside:
                raise DataFileError(
                    path, f"example {number}: symbols {outside} are not in the alphabet "
                    f"{''.join(alphabet)!r}", where="array 'labels'",
                )  # fmt: skip
        return [tuple(index[symbol] for symbol in text) for text in strings], alphabet
    sequences = _id_sequences(path, arrays, count)
    largest = max((max(ids) for ids in sequences if ids), default=0)
    alphabet = alphabet if alphabet is not None else [str(k) for k in range(largest + 1)]
    for number, ids in enumerate(sequences):
        if any(not 0 <= label < len(alphabet) for label in ids):
            raise DataFileError(
                path, f"example {number}: ids {list(ids)} outside the alphabet's "
                f"[0, {len(alphabet)})", where="array 'label_ids'",
            )  # fmt: skip
    return sequences, alphabet


def _per_example(path: Path, values: np.ndarray, name: str, count: int) -> np.ndarray:
    if values.ndim < 1 or values.shape[0] != count:
        raise DataFileError(
            path, f"expected one entry per example ({count}), found shape {values.shape}",
            where=f"array {name!r}",
        )  # fmt: skip
    return values


def _id_sequences(path: Path, arrays: dict[str, np.ndarray], count: int) -> list[tuple[int, ...]]:
    values = _per_example(path, arrays["label_ids"], "label_ids", count)
    where = "array 'label_ids'"
    if values.ndim == 2:
        lengths = _array(path, arrays, "label_lengths")
        if lengths.shape != (count,) or np.any((lengths < 0) | (lengths > values.shape[1])):
            raise DataFileError(
                path, f"expected {count} lengths in [0, L={values.shape[1]}], found {lengths}",
                where="array 'label_lengths'",
            )  # fmt: skip
        rows = [values[number, :length] for number, length in enumerate(lengths)]
    else:
        rows = list(values)
    sequences = []
    for number, row in enumerate(rows):
        ids = np.asarray(row)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise DataFileError(
                path, f"example {number}: expected a list of integers, found {row!r}", where=where
            )
        sequences.append(tuple(int(label) for label in ids))
    return sequences


def required_frames(labels: Sequence[int]) -> int:
    """Frames CTC needs for ``labels``: one per label plus a blank between adjacent repeats."""
    repeats = sum(first == second for first, second in zip(labels, labels[1:], strict=False))
    return len(labels) + repeats


def check_alignable(path: Path, labels: Sequence[Sequence[int]], frames: Tensor) -> None:
    """Refuse the first example whose labels cannot be aligned in its ``frames``."""
    for number, (label, length) in enumerate(zip(labels, frames.tolist(), strict=True)):
        needed = required_frames(label)
        if needed > length:
            raise DataFileError(
                path, f"example {number}: {len(label)} labels need at least {needed} frames "
                f"(CTC: one per label, a blank between repeats), found {length}",
                where="array 'lengths'",
            )  # fmt: skip
