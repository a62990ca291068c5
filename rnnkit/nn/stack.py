"""Running a stack of cells: layers one after another, each forward and optionally reversed.

Cells are ordered as torch orders its layers: ``[layer0, layer0_reverse, layer1, ...]``. The
reverse direction runs the strategy on each sequence reversed within its own length, so padded
positions stay where they are and its final state is the state after the first step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.cells.base import Cell, State
from rnnkit.strategies import Strategy
from rnnkit.strategies.validation import check_inputs, check_lengths, length_mask


def reverse_padded(inputs: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``inputs (B, T, D)`` within its length; padding stays put."""
    if lengths is None:
        return inputs.flip(1)
    steps = inputs.shape[1]
    active = length_mask(lengths, steps, inputs.device)  # (B, T)
    assert active is not None  # lengths is not None
    time = torch.arange(steps, device=inputs.device).unsqueeze(0)  # (1, T)
    lengths = lengths.to(inputs.device).unsqueeze(1)  # (B, 1)
    index = torch.where(active, lengths - 1 - time, time)  # (B, T)
    return inputs.gather(1, index.unsqueeze(-1).expand_as(inputs))


def run_stack(
    cells: Sequence[Cell],
    num_directions: int,
    inputs: Tensor,
    states: Sequence[State] | None,
    lengths: Tensor | Sequence[int] | None,
    strategy: Strategy | Sequence[Strategy],
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, tuple[State, ...]]:
    """Run ``cells`` over ``inputs (B, T, D)``.

    ``states``: one initial state per cell or None. ``strategy``: one strategy for every cell,
    or one per cell (so each cell keeps its own diagnostics). Dropout with probability
    ``dropout`` is applied to the outputs of every layer but the last, in training. Returns the
    last layer's outputs ``(B, T, directions * O)`` and the final state of every cell.
    """
    check_inputs(cells[0], inputs, finite=False)  # the strategy checks the values
    if lengths is not None:
        lengths = check_lengths(lengths, inputs.shape[0], inputs.shape[1])
    num_layers = len(cells) // num_directions
    strategies = list(strategy) if isinstance(strategy, Sequence) else [strategy] * len(cells)
    final_states: list[State] = []
    layer_inputs = inputs
    for layer in range(num_layers):
        direction_outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            state = None if states is None else states[index]
            if direction == 0:
                outputs, final = strategies[index](cells[index], layer_inputs, state, lengths)
            else:
                reversed_inputs = reverse_padded(layer_inputs, lengths)
                outputs, final = strategies[index](cells[index], reversed_inputs, state, lengths)
                outputs = reverse_padded(outputs, lengths)
            direction_outputs.append(outputs)
            final_states.append(final)
        layer_inputs = (
            direction_outputs[0] if num_directions == 1 else torch.cat(direction_outputs, -1)
        )
        if dropout > 0 and training and layer < num_layers - 1:
            layer_inputs = functional.dropout(layer_inputs, dropout, training=True)
    return layer_inputs, tuple(final_states)


def step_stack(
    cells: Sequence[Cell],
    inputs: Tensor,
    states: Sequence[State] | None,
    dropout: float = 0.0,
    training: bool = False,
) -> tuple[Tensor, tuple[State, ...]]:
    """One time step of a unidirectional stack: ``inputs (B, D)`` -> ``(B, O)`` and new states.

    Equal to ``run_stack`` over a sequence one step at a time. ``states=None`` starts a
    sequence: each cell draws its per-sequence masks (``begin_sequence``) and starts from its
    initial state. No strategy and no validation over time: this is the decoding hot path.
    """
    batch_size = inputs.shape[0]
    new_states: list[State] = []
    layer_inputs = inputs
    for layer, cell in enumerate(cells):
        if states is None:
            cell.begin_sequence(batch_size, device=inputs.device, dtype=inputs.dtype)
            state = cell.initial_state(batch_size, device=inputs.device, dtype=inputs.dtype)
        else:
            state = states[layer]
        layer_inputs, state = cell.step(layer_inputs, state)
        new_states.append(state)
        if dropout > 0 and training and layer < len(cells) - 1:
            layer_inputs = functional.dropout(layer_inputs, dropout, training=True)
    return layer_inputs, tuple(new_states)
