"""The adding problem (Hochreiter & Schmidhuber 1997, "Long Short-Term Memory", experiment 4).

Two input channels over ``T`` steps: channel 0 a value uniform in [0, 1], channel 1 a marker,
1 at exactly two steps and 0 elsewhere; the target is the sum of the two marked values (in
[0, 2]). Markers are placed as in the modern form of the task (Le et al. 2015, "A Simple Way
to Initialize Recurrent Networks of Rectified Linear Units", https://arxiv.org/abs/1504.00941;
Arjovsky et al. 2016): one uniform in the first half and one uniform in the second half
(``marker_placement="halves"``), or two distinct uniform steps (``"anywhere"``). Predicting
the constant 1 gives a mean squared error of about 1/6, the baseline to beat.

Splits: train and test come from different seed streams (``batches.split_generator``); the
values are continuous, so two sequences coincide with probability zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnnkit.data.benchmarks.batches import SequenceBatch, check_choice, check_int

PLACEMENTS = ("halves", "anywhere")


@dataclass(frozen=True)
class AddingConfig:
    """Options of the adding-problem generator."""

    sequence_length: int = 100
    """Steps ``T``, 2 .. 10000 (the papers use up to 1000)."""
    marker_placement: str = "halves"
    """``"halves"`` (one marker per half) or ``"anywhere"``."""

    def __post_init__(self) -> None:
        check_int("sequence_length", self.sequence_length, 2, 10000)
        check_choice("marker_placement", self.marker_placement, PLACEMENTS)


def draw_batch(config: AddingConfig, batch_size: int, generator: torch.Generator) -> SequenceBatch:
    """``batch_size`` sequences: inputs ``(B, T, 2)`` and targets ``(B,)``."""
    check_int("batch_size", batch_size, 1)
    length = config.sequence_length
    values = torch.rand(batch_size, length, generator=generator)
    if config.marker_placement == "halves":
        half = length // 2
        first = torch.randint(half, (batch_size,), generator=generator)
        second = half + torch.randint(length - half, (batch_size,), generator=generator)
        marked = torch.stack([first, second], dim=1)
    else:
        marked = torch.rand(batch_size, length, generator=generator).argsort(1)[:, :2]
    markers = torch.zeros(batch_size, length).scatter_(1, marked, 1.0)
    targets = values.gather(1, marked).sum(1)
    return SequenceBatch(torch.stack([values, markers], dim=2), targets)
