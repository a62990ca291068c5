"""Passkey retrieval: a key hidden at a random depth in filler, asked for at the end.

After Mohtashami & Jaggi 2023 ("Landmark Attention", https://arxiv.org/abs/2305.16300) and its
use for state collapse beyond the training length in Chen et al. 2024, "Stuffed Mamba"
(https://arxiv.org/abs/2410.07145). In tokens, a sequence of length ``T`` is

    filler ... KEY d_1 .. d_k filler ... QUERY d_1 .. d_{k-1}

``k = key_digits`` digits; the key block starts at a uniform depth of the filler (or at a given
``depth`` fraction). The filler is the cycle ``FILLER_0, FILLER_1, ...`` (``filler="repeat"``,
like the repeated sentence of the papers) or uniform filler tokens (``filler="random"``). The
last ``k`` positions are scored: after ``QUERY`` the target is ``d_1``, then the next digits
(teacher forcing). Tokens: digits ``0..9``, ``KEY = 10``, ``QUERY = 11``, filler from 12.

Lengths: train at ``train_length``, test up to ``test_length_factor`` (16) times it. Splits: by
the hash of the key, so no test key is ever seen in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnnkit.data.benchmarks.batches import (
    Split,
    TokenBatch,
    check_choice,
    check_float,
    check_int,
    check_split,
    draw_split,
)

KEY, QUERY, FIRST_FILLER = 10, 11, 12
FILLERS = ("repeat", "random")


@dataclass(frozen=True)
class PasskeyConfig:
    """Options of the passkey generator."""

    key_digits: int = 5
    """Digits of the key ``k``."""
    num_filler_tokens: int = 8
    """Distinct filler tokens."""
    filler: str = "repeat"
    """``"repeat"`` (a fixed cycle of the filler tokens) or ``"random"``."""
    train_length: int = 128
    """Tokens per training sequence."""
    test_length_factor: int = 16
    """Test sequences have up to ``test_length_factor * train_length`` tokens."""

    def __post_init__(self) -> None:
        check_int("key_digits", self.key_digits, 1, 18)
        check_int("num_filler_tokens", self.num_filler_tokens, 1)
        check_choice("filler", self.filler, FILLERS)
        check_int("train_length", self.train_length, 2 * self.key_digits + 2)
        check_int("test_length_factor", self.test_length_factor, 1)

    @property
    def vocabulary_size(self) -> int:
        return FIRST_FILLER + self.num_filler_tokens


def draw_batch(
    config: PasskeyConfig,
    batch_size: int,
    length: int,
    generator: torch.Generator,
    split: Split = "train",
    depth: float | None = None,
) -> TokenBatch:
    """``batch_size`` sequences ``(B, length)``; ``depth`` in [0, 1] fixes where the key sits
    in the filler (0: first, 1: last), ``None`` draws it uniformly."""
    check_split(split)
    check_int(
        "length", length, 2 * config.key_digits + 2, config.test_length_factor * config.train_length
    )
    if depth is not None:
        check_float("depth", depth, 0.0, 1.0, open_low=False)
    digits = config.key_digits
    return draw_split(
        lambda count: _draw_unsplit(config, count, length, generator, depth),
        lambda batch: batch.targets[:, -digits:],
        batch_size,
        split,
    )


def _draw_unsplit(
    config: PasskeyConfig,
    count: int,
    length: int,
    generator: torch.Generator,
    depth: float | None,
) -> TokenBatch:
    digits = config.key_digits
    if config.filler == "repeat":
        filler = FIRST_FILLER + torch.arange(length) % config.num_filler_tokens
        inputs = filler.expand(count, length).clone()
    else:
        inputs = torch.randint(
            FIRST_FILLER, config.vocabulary_size, (count, length), generator=generator
        )
    key = torch.randint(10, (count, digits), generator=generator)
    slots = length - 2 * digits  # starts of the key block KEY d_1..d_k before the answer
    if depth is None:
        starts = torch.randint(slots, (count,), generator=generator)
    else:
        starts = torch.full((count,), round(depth * (slots - 1)), dtype=torch.long)
    block = starts[:, None] + torch.arange(digits + 1)  # (B, k + 1)
    inputs.scatter_(1, block, torch.cat([torch.full((count, 1), KEY), key], dim=1))
    answer = length - digits
    inputs[:, answer] = QUERY
    inputs[:, answer + 1 :] = key[:, :-1]
    targets = torch.zeros(count, length, dtype=torch.long)
    targets[:, answer:] = key
    mask = torch.zeros(count, length, dtype=torch.bool)
    mask[:, answer:] = True
    return TokenBatch(inputs, targets, mask)
