"""The traceable form of every strategy, for export: a cell's recurrence as one scan op.

A strategy's own code checks values (finite inputs, lengths in range) and picks paths by them,
which a tracer cannot follow with a symbolic sequence length. Export therefore runs each cell
as the sequential reference, ``y_t, s_t = cell.recur(p_t, s_{t-1})`` with ``p =
cell.project_inputs(x)`` for all steps at once, inside torch's scan higher-order op, which the
ONNX exporter writes as one ``Scan`` loop over a symbolic number of steps. With lengths, a
finished sequence keeps its state and its outputs are zero, as in ``strategies/sequential.py``.

Strategies traced this way (``check_traceable``): ``sequential``; ``native`` (the same
recurrence: torch 2.13's exporter fixes the sequence length of ``aten.gru`` / ``aten.lstm`` to
the example's, a guard in their decomposition, and writes a graph that fails or is wrong at
other lengths, so the fused kernels are not exported as ONNX's LSTM/GRU operators); ``scan``,
``scan:loop``, ``scan:chunked`` (a linear cell's recurrence step by step); ``auto`` when it
picks one of those. Strategies that run compiled Numba or Triton code, or iterate to a
tolerance, raise ``ExportError``: ``fused``, ``scan:compiled``, ``scan:triton``, ``newton`` and
its variants.

ONNX opset 27 has a ``LinearAttention`` operator (linear, gated, delta and gated-delta rules;
onnxruntime 1.32 runs it through its function body, and only with known ranks); the
matrix-state cells (gla, deltanet, gated_deltanet) are exported as the ``Scan`` loop instead,
which needs no custom translation and is checked against eager in ``tests/deploy``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch._higher_order_ops.scan import scan

from rnnkit.cells.base import Cell
from rnnkit.nn.stack import reverse_padded
from rnnkit.strategies import choose

Fields = tuple[Tensor, ...]  # one cell's state fields, each (B, size)

TRACED_STRATEGIES = ("sequential", "native", "scan", "scan:loop", "scan:chunked")
UNTRACEABLE = {
    "fused": "runs the whole time loop in a compiled Numba kernel",
    "scan:compiled": "runs a compiled Numba scan",
    "scan:triton": "runs a Triton GPU kernel",
    "newton": "iterates to a tolerance (a number of solves that depends on the values)",
}


class ExportError(ValueError):
    """A module, strategy or task that cannot be exported, with what to use instead."""


def check_traceable(cell: Cell, strategy: str) -> None:
    """Raise ``ExportError`` when ``cell`` under ``strategy`` cannot be exported."""
    name = choose(cell)[0] if strategy == "auto" else strategy
    family = "newton" if name.startswith("newton") else name
    if family in UNTRACEABLE:
        where = f"strategy {strategy!r}" + (f" (auto -> {name})" if strategy == "auto" else "")
        raise ExportError(
            f"{where} cannot be traced for export: it {UNTRACEABLE[family]}. Build the layer "
            "with strategy='sequential' (any cell), 'native' (LSTM, GRU, RNN) or 'scan' "
            "(linear cells) and load the same weights (load_state_dict); all compute the "
            "same recurrence"
        )
    if name not in TRACED_STRATEGIES:
        raise ExportError(
            f"strategy {strategy!r} has no traceable form; traced: {', '.join(TRACED_STRATEGIES)}"
        )


def run_loop(
    cell: Cell, inputs: Tensor, state: Fields, active: Tensor | None, one_step: bool = False
) -> tuple[Tensor, Fields]:
    """``cell.recur`` over ``inputs (B, T, D)`` as one scan op; ``active (B, T)`` floats, 1 at
    the steps within each sequence's length (None: every step). ``one_step``: ``T == 1``
    without the scan op (``torch.jit.trace`` cannot trace it; ``export_torchscript``)."""
    projected = cell.project_inputs(inputs).transpose(0, 1)  # (T, B, P)
    if one_step:
        output, new = cell.recur(projected[0], cell.state_type(*state))
        return output.unsqueeze(1), tuple(new)
    if active is None:

        def step(carry: list[Tensor], projected_t: Tensor) -> tuple[list[Tensor], Tensor]:
            output, new = cell.recur(projected_t, cell.state_type(*carry))
            return list(new), output.clone()  # a scan output may not alias the carry

        final, outputs = scan(step, list(state), projected)
    else:

        def masked_step(
            carry: list[Tensor], step_inputs: tuple[Tensor, Tensor]
        ) -> tuple[list[Tensor], Tensor]:
            projected_t, active_t = step_inputs  # (B, P), (B, 1)
            output, new = cell.recur(projected_t, cell.state_type(*carry))
            kept = [active_t * a + (1 - active_t) * b for a, b in zip(new, carry, strict=True)]
            return kept, output * active_t

        mask = active.transpose(0, 1).unsqueeze(-1).to(inputs.dtype)  # (T, B, 1)
        final, outputs = scan(masked_step, list(state), (projected, mask))
    return outputs.transpose(0, 1), tuple(final)


def run_traced_stack(
    cells: Sequence[Cell],
    num_directions: int,
    inputs: Tensor,
    states: Sequence[Fields],
    lengths: Tensor | None,
    one_step: bool = False,
) -> tuple[Tensor, tuple[Fields, ...]]:
    """``run_stack`` (``rnnkit/nn/stack.py``) in evaluation mode, each cell by ``run_loop``:
    ``inputs (B, T, D)`` -> ``(B, T, directions * O)`` and each cell's final fields."""
    active = None
    if lengths is not None:
        steps = torch.arange(inputs.shape[1], device=inputs.device)
        active = (steps[None, :] < lengths[:, None]).to(inputs.dtype)  # (B, T)
    finals: list[Fields] = []
    layer_inputs = inputs
    for layer in range(len(cells) // num_directions):
        outputs = []
        for direction in range(num_directions):
            index = layer * num_directions + direction
            sequence = layer_inputs if direction == 0 else reverse_padded(layer_inputs, lengths)
            output, final = run_loop(cells[index], sequence, states[index], active, one_step)
            outputs.append(output if direction == 0 else reverse_padded(output, lengths))
            finals.append(final)
        layer_inputs = outputs[0] if num_directions == 1 else torch.cat(outputs, -1)
    return layer_inputs, tuple(finals)
