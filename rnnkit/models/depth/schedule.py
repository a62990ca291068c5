"""Test-time depth: run a trained model's blocks in another order, skipping or repeating some.

"Skip a Layer or Loop it? Test-Time Depth Adaptation of Pretrained LLMs" (Li et al. 2025,
https://arxiv.org/abs/2507.07996) composes the layers of a trained model into a new chain of
layers for each input, without retraining: a layer may be skipped, repeated (looped) or moved.
Here one chain, a *layer schedule*, is applied to every input: for the trained blocks
``f_0 .. f_{L-1}`` of a ``SequenceModel`` and the schedule ``(s_1, .., s_M)``,

    x_0 = E[tokens]
    x_j = f_{s_j}(x_{j-1})                  j = 1 .. M, any s_j in 0 .. L-1, repeats allowed
    outputs = head(norm(x_M))

so ``0,1,2,3`` is the trained model, ``0,1,3`` skips block 2, ``0,1,1,2,3`` repeats block 1 and
``3,2,1,0`` reverses the order. Each application keeps its own recurrent state or KV cache.

Syntax of a schedule string: comma-separated items, each

    N          block N                                  ``2``
    A-B        blocks A to B, inclusive; B < A counts down  ``0-3`` = 0,1,2,3; ``3-1`` = 3,2,1
    ITEMxK     the item K times                         ``1x3`` = 1,1,1; ``0-3x2`` = 0..3, 0..3

with spaces ignored: ``"0, 1x2, 3-2"`` is 0, 1, 1, 3, 2.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:  # the sequence model imports this package; no import at run time
    from rnnkit.models.sequence_model import SequenceModel

ITEM = re.compile(r"^(\d+)(?:-(\d+))?(?:x(\d+))?$")
SYNTAX = "comma-separated N, A-B (inclusive) or either followed by xK (K repeats)"


def parse_schedule(text: str, num_blocks: int, argument: str = "--depth-schedule") -> list[int]:
    """The block indices of the schedule string ``text`` (syntax in the module docstring) for
    a model of ``num_blocks`` blocks; errors name ``argument``, what was expected and got."""
    compact = text.replace(" ", "")
    if not compact:
        raise ValueError(f"{argument}: expected {SYNTAX}, got an empty schedule")
    schedule: list[int] = []
    for item in compact.split(","):
        match = ITEM.match(item)
        if match is None:
            raise ValueError(f"{argument}: expected {SYNTAX}, got {item!r} in {text!r}")
        start, end, repeats = match.groups()
        first, last = int(start), int(start if end is None else end)
        step = 1 if last >= first else -1
        indices = list(range(first, last + step, step))
        if repeats is not None and int(repeats) == 0:
            raise ValueError(f"{argument}: expected a repeat count of 1 or more, got {item!r}")
        for index in indices:
            if index >= num_blocks:
                raise ValueError(
                    f"{argument}: expected block indices 0..{num_blocks - 1} (the model has "
                    f"{num_blocks} blocks), got {index} in {text!r}"
                )
        schedule.extend(indices * (1 if repeats is None else int(repeats)))
    return schedule


def format_schedule(schedule: list[int]) -> str:
    """``[0, 1, 1, 2]`` -> ``"0,1,1,2"``."""
    return ",".join(str(index) for index in schedule)


def apply_schedule(model: SequenceModel, schedule: list[int]) -> None:
    """Make ``model`` run its trained blocks in the order ``schedule`` (indices into the
    blocks it has now), in place and without copying weights: a repeated block is the same
    module run again. For evaluation; its state then has one entry per scheduled block."""
    if model.depth is not None:
        raise ValueError(
            "--depth-schedule: expected a model without depth recursion (depth.recursion="
            f"'none'), got depth.recursion={model.config.depth.recursion!r}"
        )
    blocks = model.block_list()
    if not schedule:
        raise ValueError("schedule: expected at least one block index, got none")
    for index in schedule:
        if not 0 <= index < len(blocks):
            raise ValueError(f"schedule: expected block indices 0..{len(blocks) - 1}, got {index}")
    model.blocks = nn.ModuleList(blocks[index] for index in schedule)
