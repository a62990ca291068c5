"""Strings of handwritten digits: scikit-learn's bundled 8x8 digit images placed side by side.

The 1,797 images of ``sklearn.datasets.load_digits()`` (UCI optical digits: 8x8, grey levels
0-16, written by 43 people; bundled with scikit-learn, no download) are split once into three
disjoint pools of images, stratified by digit: within each digit class a permutation drawn from
``split_seed`` puts the first 70% in ``train``, the next 15% in ``validation`` and the rest in
``test``. A string of a split is made only from its own pool's images, so held-out strings are
read from images the model has never seen.

A string of n digits (n uniform in [min_digits, max_digits], digits uniform in 0-9) is a canvas
of ``8 + max_jitter`` rows:

    width = g_0 + 8 + g_1 + 8 + ... + 8 + g_n          gaps g_i uniform in [0, max_gap]
    digit i: a random image of its class from the pool, shifted down by j_i in [0, max_jitter]

Grey levels are scaled to [0, 1]. A batch pads every string on the right with zeros to the
widest one and gives the widths (columns) and the digits (padded with 0) with their counts.
Everything is drawn from the ``torch.Generator`` passed in, so a batch is a function of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IMAGE_SIZE = 8
MAX_GREY_LEVEL = 16.0
NUM_DIGITS = 10
SPLITS = ("train", "validation", "test")


@dataclass
class DigitStringsConfig:
    """How digit strings are drawn, and how the bundled images are split."""

    min_digits: int = 1
    """Fewest digits in a string."""
    max_digits: int = 8
    """Most digits in a string."""
    max_gap: int = 3
    """Blank columns before, between and after digits: uniform in [0, max_gap]."""
    max_jitter: int = 4
    """Vertical shift of each digit in rows, uniform in [0, max_jitter]; height 8 + max_jitter."""
    validation_fraction: float = 0.15
    """Fraction of each digit's images in the validation pool."""
    test_fraction: float = 0.15
    """Fraction of each digit's images in the test pool (the rest train)."""
    split_seed: int = 0
    """Seeds the split of the images into pools (the same for every run by default)."""
    validation_strings: int = 500
    """Strings in the fixed validation set (drawn from the validation pool)."""
    test_strings: int = 1000
    """Strings in the fixed test set of ``rnnkit eval`` (drawn from the test pool)."""

    @property
    def height(self) -> int:
        """Rows of every string image."""
        return IMAGE_SIZE + self.max_jitter

    def max_width(self) -> int:
        """Columns of the widest possible string."""
        return self.max_digits * IMAGE_SIZE + (self.max_digits + 1) * self.max_gap

    def check(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        if not 1 <= self.min_digits <= self.max_digits:
            raise ValueError(
                f"data.min_digits must be at least 1 and at most data.max_digits "
                f"({self.max_digits}), got {self.min_digits}"
            )
        for name in ("max_gap", "max_jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"data.{name} must be 0 or more, got {getattr(self, name)}")
        held_out = self.validation_fraction + self.test_fraction
        if min(self.validation_fraction, self.test_fraction) <= 0 or held_out >= 1:
            raise ValueError(
                "data.validation_fraction and data.test_fraction must be positive and leave "
                f"images to train on, got {self.validation_fraction} and {self.test_fraction}"
            )


@dataclass(frozen=True)
class ImagePool:
    """The digit images of one split."""

    images: Tensor
    """``(N, 8, 8)`` grey levels in [0, 1]."""
    digits: Tensor
    """``(N,)`` the digit of each image."""
    source_indices: Tensor
    """``(N,)`` the index of each image in ``load_digits()`` (to check pools are disjoint)."""

    def indices_of(self, digit: int) -> Tensor:
        return (self.digits == digit).nonzero().flatten()


@dataclass(frozen=True)
class DigitStringBatch:
    """Padded string images with their widths and digits."""

    images: Tensor
    """``(B, height, W)`` grey levels in [0, 1], zero right of each string's width."""
    widths: Tensor
    """``(B,)`` int64 columns of each string."""
    digits: Tensor
    """``(B, L)`` int64 digits, padded with 0 after each string's count."""
    digit_counts: Tensor
    """``(B,)`` int64 digits in each string."""

    def strings(self) -> list[str]:
        """The digits of each string as text, ``"4071"``."""
        return [
            "".join(str(digit) for digit in row[:count])
            for row, count in zip(self.digits.tolist(), self.digit_counts.tolist(), strict=True)
        ]

    def __len__(self) -> int:
        return self.images.shape[0]


def load_pools(config: DigitStringsConfig) -> dict[str, ImagePool]:
    """The train, validation and test pools of the bundled images (stratified by digit)."""
    from sklearn.datasets import load_digits

    config.check()
    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32) / MAX_GREY_LEVEL  # (N, 8, 8)
    digits = torch.tensor(bunch.target, dtype=torch.int64)
    generator = torch.Generator().manual_seed(config.split_seed)
    chosen: dict[str, list[Tensor]] = {split: [] for split in SPLITS}
    for digit in range(NUM_DIGITS):
        members = (digits == digit).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        validation = round(config.validation_fraction * len(members))
        test = round(config.test_fraction * len(members))
        train = len(members) - validation - test
        for split, part in zip(SPLITS, members.split([train, validation, test]), strict=True):
            chosen[split].append(part)
    pools = {}
    for split, parts in chosen.items():
        indices = torch.cat(parts).sort().values
        pools[split] = ImagePool(images[indices], digits[indices], indices)
    return pools


def draw_digits(config: DigitStringsConfig, generator: torch.Generator) -> list[int]:
    """The digits of one string: a uniform count, uniform digits."""
    count = int(torch.randint(config.min_digits, config.max_digits + 1, (), generator=generator))
    return torch.randint(0, NUM_DIGITS, (count,), generator=generator).tolist()


def draw_string(
    pool: ImagePool, config: DigitStringsConfig, generator: torch.Generator
) -> tuple[Tensor, list[int]]:
    """One string image ``(height, width)`` and its digits."""
    digits = draw_digits(config, generator)
    count = len(digits)
    gaps = torch.randint(0, config.max_gap + 1, (count + 1,), generator=generator).tolist()
    shifts = torch.randint(0, config.max_jitter + 1, (count,), generator=generator).tolist()
    width = sum(gaps) + count * IMAGE_SIZE
    canvas = torch.zeros(config.height, width)
    column = gaps[0]
    for digit, gap, shift in zip(digits, gaps[1:], shifts, strict=True):
        candidates = pool.indices_of(digit)
        if len(candidates) == 0:
            raise ValueError(f"the image pool has no image of digit {digit}")
        choice = candidates[int(torch.randint(len(candidates), (), generator=generator))]
        canvas[shift : shift + IMAGE_SIZE, column : column + IMAGE_SIZE] = pool.images[choice]
        column += IMAGE_SIZE + gap
    return canvas, digits


def draw_batch(
    pool: ImagePool, batch_size: int, config: DigitStringsConfig, generator: torch.Generator
) -> DigitStringBatch:
    """``batch_size`` strings drawn from ``pool``, padded to the widest."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    strings = [draw_string(pool, config, generator) for _ in range(batch_size)]
    widths = torch.tensor([image.shape[1] for image, _ in strings], dtype=torch.int64)
    counts = torch.tensor([len(digits) for _, digits in strings], dtype=torch.int64)
    images = torch.zeros(batch_size, config.height, int(widths.max()))
    digits = torch.zeros(batch_size, int(counts.max()), dtype=torch.int64)
    for index, (image, string_digits) in enumerate(strings):
        images[index, :, : image.shape[1]] = image
        digits[index, : len(string_digits)] = torch.tensor(string_digits)
    return DigitStringBatch(images, widths, digits, counts)


def draw_set(
    pool: ImagePool,
    size: int,
    batch_size: int,
    config: DigitStringsConfig,
    generator: torch.Generator,
) -> list[DigitStringBatch]:
    """A fixed set of ``size`` strings in batches of at most ``batch_size``."""
    batches = []
    remaining = size
    while remaining > 0:
        batches.append(draw_batch(pool, min(batch_size, remaining), config, generator))
        remaining -= batch_size
    return batches
