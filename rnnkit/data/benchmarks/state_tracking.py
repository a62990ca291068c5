"""Word problems on finite groups: track the running product of a sequence of group elements.

The state-tracking tasks of Merrill et al. 2024, "The Illusion of State in State-Space Models"
(https://arxiv.org/abs/2404.08819), also used by Grazzi et al. 2025 and DeltaProduct (Siems et
al. 2025): parity (Z_2), cyclic groups Z_n (abelian, solvable by a diagonal recurrence with
complex or negative eigenvalues), S3 and S4 (solvable, not abelian), and S5 and A5 (non-solvable:
NC^1-complete word problems). One layer of DeltaProduct tracks S_n with n - 1 Householder factors
(every permutation of n points is a product of at most n - 1 transpositions, each a reflection):
2 for S3, 3 for S4, 4 for S5; the DeltaProduct code's README finds 1 factor fails on S3.

Every group is a list of permutations of the points ``0 .. k - 1``; a permutation ``p`` is the
tuple of images, ``p[i]`` the image of point ``i``. Elements are numbered in the order of
:func:`group_elements` (Z_n: the rotation by ``g`` is element ``g``; S_n and A_n: lexicographic,
so element 0 is the identity), and that number is the token.

Composition order: ``compose(a, b)`` is "first ``a``, then ``b``": ``i -> b[a[i]]``. Reading
``g_1 g_2 ... g_T``, the target at position ``t`` is ``g_1 ; g_2 ; ... ; g_t`` (apply ``g_1``
first), every position scored. For parity the tokens are bits and the target is the parity of
the ones seen so far.

Lengths: train on lengths up to ``train_length`` (``L``), test on every length up to
``test_length_factor * L``. Splits: test sequences longer than ``L`` are disjoint from training
by length; at lengths up to ``L``, sequences with at most ``SMALL_SPACE`` possibilities are
split by a fixed random permutation of all of them (a quarter, at least one, is test), larger
spaces by the hash of the tokens (see ``batches``).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnkit.data.benchmarks.batches import (
    TEST_BUCKETS,
    Split,
    TokenBatch,
    check_choice,
    check_int,
    check_split,
    draw_split,
)

GROUPS = ("parity", "cyclic", "s3", "s4", "s5", "a5")
DEGREES = {"s3": 3, "s4": 4, "s5": 5, "a5": 5}  # the points the permutations move
SMALL_SPACE = 2**16
Permutation = tuple[int, ...]


@dataclass(frozen=True)
class StateTrackingConfig:
    """Options of the word-problem generator."""

    group: str = "parity"
    """One of ``GROUPS``."""
    cyclic_order: int = 5
    """``n`` of Z_n, used when ``group == "cyclic"``."""
    train_length: int = 16
    """``L``: training sequences have lengths ``1 .. L``."""
    test_length_factor: int = 4
    """Test sequences have lengths ``1 .. test_length_factor * L``."""

    def __post_init__(self) -> None:
        check_choice("group", self.group, GROUPS)
        check_int("cyclic_order", self.cyclic_order, 2)
        check_int("train_length", self.train_length, 1)
        check_int("test_length_factor", self.test_length_factor, 1)

    @property
    def vocabulary_size(self) -> int:
        """Tokens are the group's elements, inputs and targets alike."""
        return len(group_elements(self.group, self.cyclic_order))

    @property
    def max_test_length(self) -> int:
        return self.test_length_factor * self.train_length


@functools.cache
def group_elements(group: str, cyclic_order: int = 5) -> tuple[Permutation, ...]:
    """The elements of ``group`` as permutations, in token order."""
    check_choice("group", group, GROUPS)
    if group in ("parity", "cyclic"):
        order = 2 if group == "parity" else cyclic_order
        return tuple(
            tuple((point + shift) % order for point in range(order)) for shift in range(order)
        )
    permutations = tuple(itertools.permutations(range(DEGREES[group])))  # lexicographic
    if group == "a5":
        return tuple(p for p in permutations if _is_even(p))
    return permutations


def compose(first: Permutation, second: Permutation) -> Permutation:
    """First ``first``, then ``second``: ``i -> second[first[i]]``."""
    return tuple(second[image] for image in first)


def multiplication_table(group: str, cyclic_order: int = 5) -> Tensor:
    """``(G, G)`` int64: ``table[a, b]`` is the token of ``compose(element a, element b)``."""
    return _table(group, cyclic_order).clone()


def evaluation_lengths(config: StateTrackingConfig) -> range:
    """Every test length, ``1 .. test_length_factor * train_length``."""
    return range(1, config.max_test_length + 1)


@functools.cache
def _table(group: str, cyclic_order: int) -> Tensor:
    elements = group_elements(group, cyclic_order)
    index = {element: token for token, element in enumerate(elements)}
    rows = [[index[compose(a, b)] for b in elements] for a in elements]
    return torch.tensor(rows, dtype=torch.long)


def running_products(inputs: Tensor, table: Tensor) -> Tensor:
    """``(B, T)`` tokens of the prefix products ``g_1 ; ... ; g_t`` of ``inputs`` ``(B, T)``."""
    state = inputs[:, 0]
    products = [state]
    for position in range(1, inputs.shape[1]):
        state = table[state, inputs[:, position]]
        products.append(state)
    return torch.stack(products, dim=1)


def draw_batch(
    config: StateTrackingConfig,
    batch_size: int,
    length: int,
    generator: torch.Generator,
    split: Split = "train",
) -> TokenBatch:
    """``batch_size`` words of ``length`` elements ``(B, length)`` with their running products."""
    check_split(split)
    limit = config.train_length if split == "train" else config.max_test_length
    check_int("length", length, 1, limit)
    check_int("batch_size", batch_size, 1)
    table = _table(config.group, config.cyclic_order)
    size = table.shape[0]

    def finish(inputs: Tensor) -> TokenBatch:
        return TokenBatch(
            inputs, running_products(inputs, table), torch.ones_like(inputs, dtype=torch.bool)
        )

    if length > config.train_length:
        return finish(torch.randint(size, (batch_size, length), generator=generator))
    if size**length <= SMALL_SPACE:
        pool = _small_space_split(size, length)[split]
        chosen = pool[torch.randint(len(pool), (batch_size,), generator=generator)]
        digits = size ** torch.arange(length - 1, -1, -1)
        return finish(chosen[:, None] // digits % size)
    return draw_split(
        lambda count: finish(torch.randint(size, (count, length), generator=generator)),
        lambda batch: batch.inputs,
        batch_size,
        split,
    )


@functools.cache
def _small_space_split(size: int, length: int) -> dict[str, Tensor]:
    """The indices (base-``size`` numbers) of all words of ``length``, split train/test."""
    count = size**length
    order = torch.randperm(count, generator=torch.Generator().manual_seed(length))
    test_count = max(1, count // TEST_BUCKETS)
    return {"test": order[:test_count], "train": order[test_count:]}


def _is_even(permutation: Permutation) -> bool:
    inversions = sum(
        1
        for left, right in itertools.combinations(range(len(permutation)), 2)
        if permutation[left] > permutation[right]
    )
    return inversions % 2 == 0
