"""torch's fused recurrent kernels, the ones behind torch.nn.LSTM, GRU and RNN (oneDNN or the
ATen loop on CPU, cuDNN on GPU), for the cells that declare one (``cell.native_kernel``).

A cell whose configuration the kernel cannot compute (peepholes, layer norm, zoneout, recurrent
dropout in training) raises with the reason; there is no silent fallback. Variable lengths run
through the kernel's packed-sequence form, which gives the same semantics as the reference.
The kernels cannot restart a sequence midway: ``resets`` run by segments (``segments.py``),
each segment a row of one packed batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import _VF, Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.segments import run_segments
from rnnkit.strategies.validation import prepare_with_resets

KERNELS: dict[str, Callable[..., Any]] = {
    "lstm": _VF.lstm,
    "gru": _VF.gru,
    "rnn_tanh": _VF.rnn_tanh,
    "rnn_relu": _VF.rnn_relu,
}


class StrategyUnsupportedError(ValueError):
    """A strategy was asked to run a cell it cannot run."""


def unsupported_reason(cell: Cell) -> str | None:
    """Why ``native`` cannot run ``cell`` now, or None when it can."""
    if cell.native_kernel not in KERNELS:
        return f"cell {type(cell).__name__} has no torch fused kernel"
    return cell.native_unsupported_reason()


def run(
    cell: Cell,
    inputs: Tensor,
    state: State | None = None,
    lengths: Tensor | Sequence[int] | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over ``inputs (B, T, D)`` with torch's fused kernel."""
    reason = unsupported_reason(cell)
    if reason is not None:
        raise StrategyUnsupportedError(f"strategy 'native' cannot run this cell: {reason}")
    state, lengths, resets = prepare_with_resets(cell, inputs, state, lengths, resets)
    if resets is not None:
        return run_segments(_run_kernel, cell, inputs, state, lengths, resets)
    return _run_kernel(cell, inputs, state, lengths)


def _run_kernel(
    cell: Cell, inputs: Tensor, state: State, lengths: Tensor | None
) -> tuple[Tensor, State]:
    """The fused kernel over checked arguments."""
    assert cell.native_kernel is not None  # unsupported_reason checked it is in KERNELS
    kernel = KERNELS[cell.native_kernel]
    hidden = tuple(field.unsqueeze(0) for field in state)  # each (1, B, size)
    hidden = hidden if len(hidden) > 1 else hidden[0]
    weights = cell.native_weights()
    steps = inputs.shape[1]
    if lengths is None or bool((lengths == steps).all()):
        result = kernel(inputs, hidden, weights, cell.bias, 1, 0.0, cell.training, False, True)
        return result[0], _state_from(cell, result[1:])
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    # enforce_sorted=False: pack_padded_sequence always gives both permutations
    assert packed.sorted_indices is not None and packed.unsorted_indices is not None
    sorted_hidden = _permute(hidden, packed.sorted_indices)
    result = kernel(
        packed.data,
        packed.batch_sizes,
        sorted_hidden,
        weights,
        cell.bias,
        1,
        0.0,
        cell.training,
        False,
    )
    packed_outputs = PackedSequence(
        result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=steps)
    final = _permute(tuple(result[1:]), packed.unsorted_indices)
    return outputs, _state_from(cell, final if isinstance(final, tuple) else (final,))


def _permute(hidden: Tensor | tuple[Tensor, ...], order: Tensor) -> Tensor | tuple[Tensor, ...]:
    if isinstance(hidden, Tensor):
        return hidden.index_select(1, order)
    permuted = tuple(field.index_select(1, order) for field in hidden)
    return permuted if len(permuted) > 1 else permuted[0]


def _state_from(cell: Cell, hidden: Sequence[Tensor]) -> State:
    return cell.state_type(*(field.squeeze(0) for field in hidden))
