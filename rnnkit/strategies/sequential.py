"""The reference strategy: ``cell.recur`` one step after another.

Every other strategy is tested against this one. It projects the inputs of all steps at once
(``cell.project_inputs``) and walks the ``unbind`` of the projected tensor, so that the backward
pass stays linear in T (indexing ``x[:, t]`` would allocate a full-size gradient per slice).

With ``lengths``, a sequence that has ended keeps its state (its final state is the state at its
own last step) and its outputs there are zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.validation import length_mask, prepare


def run(
    cell: Cell,
    inputs: Tensor,
    state: State | None = None,
    lengths: Tensor | Sequence[int] | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over ``inputs (B, T, D)``: returns ``outputs (B, T, O)`` and the final state."""
    state, lengths = prepare(cell, inputs, state, lengths)
    batch_size, steps, _ = inputs.shape
    cell.begin_sequence(batch_size, device=inputs.device, dtype=inputs.dtype)
    projected = cell.project_inputs(inputs)  # (B, T, P)
    if lengths is None or bool((lengths == steps).all()):
        outputs = []
        for projected_t in projected.unbind(1):
            output, state = cell.recur(projected_t, state)
            outputs.append(output)
        return torch.stack(outputs, 1), state
    return _run_with_lengths(cell, projected, state, lengths.to(inputs.device))


def _run_with_lengths(
    cell: Cell, projected: Tensor, state: State, lengths: Tensor
) -> tuple[Tensor, State]:
    steps = projected.shape[1]
    longest = int(lengths.max())
    mask = length_mask(lengths, longest, lengths.device)
    assert mask is not None  # lengths is a tensor here
    active = mask.T.unsqueeze(-1)  # (T', B, 1)
    outputs = []
    for projected_t, active_t in zip(projected.unbind(1), active.unbind(0), strict=False):
        output, candidate = cell.recur(projected_t, state)
        state = type(state)(
            *(torch.where(active_t, new, old) for new, old in zip(candidate, state, strict=False))
        )
        outputs.append(torch.where(active_t, output, 0.0))
    stacked = torch.stack(outputs, 1)  # (B, T', O)
    if longest < steps:
        padding = stacked.new_zeros(stacked.shape[0], steps - longest, stacked.shape[2])
        stacked = torch.cat([stacked, padding], 1)
    return stacked, state
