"""Resets by segments: a batch cut at its reset points, each (row, segment) a row of its own.

A strategy whose kernel cannot restart a sequence midway (torch's fused kernels, the
matrix-state scans) honours ``resets (B, T)`` with ``run_segments``: row b, of length ``L_b``
and with resets at steps ``s_1 < ... < s_k``, is cut into the segments ``[0, s_1), [s_1,
s_2), ..., [s_k, L_b)``. Every segment becomes one row of a new batch, padded to the longest
segment, its first starting from row b's initial state and the others from the zero state
(the cell's ``initial_state``), and run with its own length. The outputs are
gathered back to ``(B, T)`` and each row's final state is that of its last segment. Only
gathers move the tensors, so gradients reach the inputs, the initial state and the parameters.

Cost: the new batch has one row per segment and the steps of the longest segment; many short
segments beside a long one pad a lot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.validation import length_mask

# a strategy without resets, on arguments already checked: (cell, inputs, state, lengths)
SegmentRunner = Callable[[Cell, Tensor, State, Tensor], tuple[Tensor, State]]


class Segments(NamedTuple):
    """Where the N segments of a batch lie."""

    rows: Tensor  # (N,) the batch row each segment comes from
    starts: Tensor  # (N,) its first step in that row
    lengths: Tensor  # (N,) its steps
    last: Tensor  # (B,) the index of each row's last segment
    positions: Tensor  # (B, T) where step t of row b is in the segments' (N * T') outputs
    active: Tensor  # (B, T) True at steps within each row's length


def find_segments(resets: Tensor, lengths: Tensor | None) -> Segments:
    """The segments of ``resets (B, T)``, True where a segment starts (step 0 always starts
    one), within ``lengths (B,)`` (all T when None)."""
    batch_size, steps = resets.shape
    active = length_mask(lengths, steps, resets.device)
    if active is None:
        active = torch.ones_like(resets)
    starts_mask = resets & active
    starts_mask[:, 0] = True
    rows, starts = starts_mask.nonzero(as_tuple=True)  # row-major: segments in order
    counts = starts_mask.sum(1)  # (B,)
    first = torch.cumsum(counts, 0) - counts  # index of each row's first segment
    segment = first[:, None] + torch.cumsum(starts_mask, 1) - 1  # (B, T) segment of each step
    segment_lengths = torch.bincount(segment[active], minlength=rows.shape[0])
    longest = int(segment_lengths.max())
    offset = torch.arange(steps, device=resets.device) - starts[segment]  # step in its segment
    positions = torch.where(active, segment * longest + offset, 0)
    return Segments(rows, starts, segment_lengths, first + counts - 1, positions, active)


def run_segments(
    run: SegmentRunner,
    cell: Cell,
    inputs: Tensor,
    state: State,
    lengths: Tensor | None,
    resets: Tensor,
) -> tuple[Tensor, State]:
    """``run`` over every segment of ``inputs (B, T, D)`` (a row's first from ``state``, the
    others from zero); returns
    ``outputs (B, T, O)`` (zero past each row's length) and each row's final state."""
    segments = find_segments(resets, lengths)
    longest = int(segments.lengths.max())
    steps = torch.arange(longest, device=inputs.device)
    index = (segments.starts[:, None] + steps).clamp(max=inputs.shape[1] - 1)  # (N, T')
    segment_inputs = inputs[segments.rows[:, None], index]  # (N, T', D)
    first = (segments.starts == 0).unsqueeze(-1)  # (N, 1): a row's first segment
    zero = torch.zeros((), dtype=inputs.dtype, device=inputs.device)
    segment_state = type(state)(
        *(torch.where(first, field.index_select(0, segments.rows), zero) for field in state)
    )
    outputs, final = run(cell, segment_inputs, segment_state, segments.lengths)
    gathered = outputs.flatten(0, 1).index_select(0, segments.positions.flatten())
    gathered = gathered.unflatten(0, segments.positions.shape)  # (B, T, O)
    zero = torch.zeros((), dtype=gathered.dtype, device=gathered.device)
    gathered = torch.where(segments.active.unsqueeze(-1), gathered, zero)
    return gathered, type(final)(*(field.index_select(0, segments.last) for field in final))
