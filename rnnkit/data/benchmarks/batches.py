"""What every benchmark generator shares: the batch type, option checks and disjoint splits.

A token task returns a :class:`TokenBatch`: ``inputs`` and ``targets`` of shape ``(B, T)``
(int64) and a ``mask`` ``(B, T)`` (bool) saying which positions are scored by the loss and the
accuracy. Its vocabulary size is a property of its config.

Splits. ``"train"`` and ``"test"`` are disjoint and fixed:

- each split draws from its own seed stream, :func:`split_generator` ``(seed, split)``;
- where two draws could coincide, a sequence belongs to exactly one split by a hash of its
  identity (its tokens, or what the task names, for example the passkey or the automaton):
  :func:`is_test_identity` puts one sequence in ``TEST_BUCKETS`` into the test split (blake2b,
  independent of the seed, so the partition is the same in every run), and :func:`draw_split`
  draws until it has ``batch_size`` rows of the requested side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, TypeVar, cast

import torch
from torch import Tensor

Split = Literal["train", "test"]
SPLITS = ("train", "test")
TEST_BUCKETS = 4  # one sequence identity in four belongs to the test split
MAX_ROUNDS = 256

BatchType = TypeVar("BatchType", bound=tuple)  # a NamedTuple whose fields are (B, ...) tensors


class TokenBatch(NamedTuple):
    """A batch of a token task."""

    inputs: Tensor  # (B, T) int64
    targets: Tensor  # (B, T) int64; meaningful where mask is True
    mask: Tensor  # (B, T) bool: the positions scored by the loss and the accuracy


class SequenceBatch(NamedTuple):
    """A batch of a real-valued sequence-to-one task (adding, sequential digits)."""

    inputs: Tensor  # (B, T, F) float32
    targets: Tensor  # (B,): float32 sums (adding) or int64 classes (digits)


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``minimum <= value (<= maximum)``."""
    allowed = f">= {minimum}" if maximum is None else f"in {minimum}..{maximum}"
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        raise ValueError(f"{name}: expected an int {allowed}, got {value!r}")


def check_float(name: str, value: object, low: float, high: float, *, open_low: bool) -> None:
    """Raise ``ValueError`` unless ``value`` is a number in ``(low, high]`` or ``[low, high]``."""
    bracket = "(" if open_low else "["
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        number = float(cast(float, value))
        ok = (number > low if open_low else number >= low) and number <= high
    if not ok:
        raise ValueError(f"{name}: expected a number in {bracket}{low}, {high}], got {value!r}")


def check_choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {tuple(allowed)}, got {value!r}")


def check_split(split: str) -> None:
    check_choice("split", split, SPLITS)


def split_generator(seed: int, split: Split) -> torch.Generator:
    """The generator of ``split``'s seed stream: different splits never share a stream."""
    check_int("seed", seed, 0)
    check_split(split)
    digest = hashlib.blake2b(f"rnnkit-benchmarks:{seed}:{split}".encode(), digest_size=8)
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)


def is_test_identity(identities: Tensor) -> Tensor:
    """``(B,)`` bool: whether each row of ``identities`` ``(B, K)`` (int64) is a test sequence."""
    rows = identities.to(torch.long).contiguous().numpy()
    return torch.tensor(
        [
            int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little")
            % TEST_BUCKETS
            == 0
            for row in rows
        ],
        dtype=torch.bool,
    )


def draw_split(
    draw: Callable[[int], BatchType],
    identify: Callable[[BatchType], Tensor],
    batch_size: int,
    split: Split,
) -> BatchType:
    """``batch_size`` rows drawn by ``draw(count)`` whose identity (``identify(batch)``, ``(B, K)``)
    falls in ``split``; rows of the other split are dropped and drawn again."""
    check_int("batch_size", batch_size, 1)
    check_split(split)
    kept: list[BatchType] = []
    count = 0
    for _ in range(MAX_ROUNDS):
        candidate = draw(batch_size)
        rows = is_test_identity(identify(candidate)) == (split == "test")
        kept.append(_select(candidate, rows))
        count += int(rows.sum())
        if count >= batch_size:
            if len(kept) == 1:
                return cast(BatchType, type(candidate)(*(field[:batch_size] for field in kept[0])))
            fields = zip(*kept, strict=True)
            whole = type(candidate)(*(torch.cat(list(field))[:batch_size] for field in fields))
            return cast(BatchType, whole)
    raise RuntimeError(
        f"split: found {count} of {batch_size} {split} sequences in {MAX_ROUNDS} rounds; "
        "the space of sequences is too small to split, make the task larger"
    )


def _select(batch: BatchType, rows: Tensor) -> BatchType:
    # index_select by row numbers: boolean-mask indexing costs far more on small batches
    index = rows.nonzero().squeeze(1)
    return cast(BatchType, type(batch)(*(field.index_select(0, index) for field in batch)))
