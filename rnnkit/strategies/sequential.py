"""The reference strategy: ``cell.recur`` one step after another.

Every other strategy is tested against this one. It projects the inputs of all steps at once
(``cell.project_inputs``) and walks the ``unbind`` of the projected tensor, so that the backward
pass stays linear in T (indexing ``x[:, t]`` would allocate a full-size gradient per slice).

With ``lengths``, a sequence that has ended keeps its state (its final state is the state at its
own last step) and its outputs there are zero. With ``resets (B, T)``, a sequence restarts from
the zero state (the cell's ``initial_state``) before each step where it is True; the ``state``
given starts the first segment only, so running in chunks with the carried state gives the
same result as running at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.validation import compiling, length_mask, prepare_with_resets


def run(
    cell: Cell,
    inputs: Tensor,
    state: State | None = None,
    lengths: Tensor | Sequence[int] | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over ``inputs (B, T, D)``: returns ``outputs (B, T, O)`` and the final state."""
    state, lengths, resets = prepare_with_resets(cell, inputs, state, lengths, resets)
    batch_size, steps, _ = inputs.shape
    cell.begin_sequence(batch_size, device=inputs.device, dtype=inputs.dtype)
    projected = cell.project_inputs(inputs)  # (B, T, P)
    # under torch.compile lengths stay: the masked loop gives the same numbers without a host value
    if lengths is not None and not compiling() and bool((lengths == steps).all()):
        lengths = None
    if lengths is None and resets is None:
        outputs = []
        for projected_t in projected.unbind(1):
            output, state = cell.recur(projected_t, state)
            outputs.append(output)
        return torch.stack(outputs, 1), state
    return _run_masked(cell, projected, state, lengths, resets)


def _run_masked(
    cell: Cell, projected: Tensor, state: State, lengths: Tensor | None, resets: Tensor | None
) -> tuple[Tensor, State]:
    batch_size, steps = projected.shape[:2]
    restart = cell.initial_state(batch_size, device=projected.device, dtype=projected.dtype)
    if lengths is None:
        lengths = torch.full((batch_size,), steps, device=projected.device)
    longest = steps if compiling() else int(lengths.max())
    mask = length_mask(lengths, longest, projected.device)
    assert mask is not None  # lengths is a tensor here
    active = mask.T.unsqueeze(-1)  # (T', B, 1)
    restarts = [None] * steps if resets is None else resets.T.unsqueeze(-1).unbind(0)  # (B, 1)
    outputs = []
    for projected_t, active_t, restart_t in zip(
        projected.unbind(1), active.unbind(0), restarts, strict=False
    ):
        if restart_t is not None:
            state = _where(restart_t, restart, state)
        output, candidate = cell.recur(projected_t, state)
        state = _where(active_t, candidate, state)
        outputs.append(torch.where(active_t, output, 0.0))
    stacked = torch.stack(outputs, 1)  # (B, T', O)
    if longest < steps:
        padding = stacked.new_zeros(stacked.shape[0], steps - longest, stacked.shape[2])
        stacked = torch.cat([stacked, padding], 1)
    return stacked, state


def _where(condition: Tensor, chosen: State, other: State) -> State:
    """Per field: ``chosen`` where ``condition (B, 1)`` is True, else ``other``."""
    return type(other)(*(torch.where(condition, a, b) for a, b in zip(chosen, other, strict=True)))
