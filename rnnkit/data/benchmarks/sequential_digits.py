"""Sequential digits: scikit-learn's 8x8 handwritten digits read one pixel per step.

The small cousin of sequential and permuted MNIST (Le et al. 2015,
https://arxiv.org/abs/1504.00941): each of the 1797 images of
``sklearn.datasets.load_digits`` (bundled with scikit-learn, no download) becomes a sequence of
``T = 64`` steps with one feature, the pixel intensity scaled from 0..16 to [0, 1], in row-major
order, or with ``permuted`` in one fixed random order of the pixels (drawn from
``permutation_seed``, the same for every image and both splits). The target is the digit.

Splits: a fixed random permutation of the images (``split_seed``) puts the first
``test_fraction`` of them in the test split and the rest in training; disjoint by index.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from rnnkit.data.benchmarks.batches import SequenceBatch, Split, check_float, check_int, check_split

NUM_CLASSES = 10
SEQUENCE_LENGTH = 64


@dataclass(frozen=True)
class SequentialDigitsConfig:
    """Options of the sequential-digits data."""

    permuted: bool = False
    """Read the pixels in a fixed random order instead of row by row."""
    permutation_seed: int = 0
    """Seed of the pixel order when ``permuted``."""
    split_seed: int = 0
    """Seed of the train/test assignment of the images."""
    test_fraction: float = 0.2
    """Share of the images in the test split, in (0, 1)."""

    def __post_init__(self) -> None:
        if not isinstance(self.permuted, bool):
            raise ValueError(f"permuted: expected a bool, got {self.permuted!r}")
        check_int("permutation_seed", self.permutation_seed, 0)
        check_int("split_seed", self.split_seed, 0)
        check_float("test_fraction", self.test_fraction, 0.0, 0.99, open_low=True)


def pixel_order(config: SequentialDigitsConfig) -> Tensor:
    """``(64,)`` int64: the pixel (row-major index) read at each step."""
    if not config.permuted:
        return torch.arange(SEQUENCE_LENGTH)
    return torch.randperm(
        SEQUENCE_LENGTH, generator=torch.Generator().manual_seed(config.permutation_seed)
    )


def split_indices(config: SequentialDigitsConfig, split: Split) -> Tensor:
    """The indices of ``split``'s images in ``load_digits()``, sorted."""
    check_split(split)
    count = _images().shape[0]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(config.split_seed))
    test_count = round(config.test_fraction * count)
    chosen = order[:test_count] if split == "test" else order[test_count:]
    return chosen.sort().values


def load_split(config: SequentialDigitsConfig, split: Split) -> SequenceBatch:
    """The whole split: inputs ``(N, 64, 1)`` float32, targets ``(N,)`` int64 digits."""
    indices = split_indices(config, split)
    pixels = _images()[indices][:, pixel_order(config)]
    return SequenceBatch(pixels.unsqueeze(2), _labels()[indices])


def draw_batch(
    config: SequentialDigitsConfig,
    batch_size: int,
    generator: torch.Generator,
    split: Split = "train",
) -> SequenceBatch:
    """``batch_size`` images of ``split`` drawn uniformly (with replacement)."""
    check_int("batch_size", batch_size, 1)
    whole = load_split(config, split)
    rows = torch.randint(whole.targets.shape[0], (batch_size,), generator=generator)
    return SequenceBatch(whole.inputs[rows], whole.targets[rows])


@functools.cache
def _digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    pixels = torch.tensor(data.data, dtype=torch.float32) / 16.0  # (1797, 64)
    return pixels, torch.tensor(data.target, dtype=torch.long)


def _images() -> Tensor:
    return _digits()[0]


def _labels() -> Tensor:
    return _digits()[1]
