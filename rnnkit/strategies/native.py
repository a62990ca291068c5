"""torch's fused recurrent kernels, the ones behind torch.nn.LSTM, GRU and RNN (oneDNN or the
ATen loop on CPU, cuDNN on GPU), for the cells that declare one (``cell.native_kernel``).

A cell whose configuration the kernel cannot compute (peepholes, layer norm, zoneout, recurrent
dropout in training) raises with the reason; there is no silent fallback. Variable lengths run
through the kernel's packed-sequence form, which gives the same semantics as the reference.
The kernels cannot restart a sequence midway: ``resets`` run by segments (``segments.py``),
each segment a row of one packed batch. Under ``torch.compile`` the kernel runs as the
``rnnkit::opaque`` custom op (``kernels/custom_ops.py``), differentiated by ``torch.func.vjp``,
which has no rule for the packed kernel: there, variable lengths run as one unpacked kernel call
per distinct length over the rows of that length (the same work as the packed call, one call
more per distinct length).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import _VF, Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.kernels import custom_ops
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
    if resets is not None and not torch.compiler.is_compiling():
        return run_segments(_run_kernel, cell, inputs, state, lengths, resets)
    return _run_kernel(cell, inputs, state, lengths, resets)


def _run_kernel(
    cell: Cell,
    inputs: Tensor,
    state: State,
    lengths: Tensor | None,
    resets: Tensor | None = None,
) -> tuple[Tensor, State]:
    """The fused kernel over checked arguments (under ``torch.compile`` through the
    ``rnnkit::opaque`` custom op, where the host-side lengths and segments are available;
    ``resets`` only there: eager runs cut the segments before)."""
    assert cell.native_kernel is not None  # unsupported_reason checked it is in KERNELS
    weights = list(cell.native_weights())
    has_bias = cast(bool, cell.bias)  # the classic cells' flag
    if torch.compiler.is_compiling():
        text = f"{cell.native_kernel}|{int(has_bias)}|{int(cell.training)}|{len(state)}"
        tensors = [inputs, lengths, resets, *state, *weights]
        results = custom_ops.call("native", tensors, text)
    else:
        results = _call_kernel(
            cell.native_kernel, inputs, tuple(state), weights, has_bias, cell.training, lengths
        )
    return results[0], cell.state_type(*results[1:])


def _call_kernel(
    name: str,
    inputs: Tensor,
    state: tuple[Tensor, ...],
    weights: list[Tensor],
    bias: bool,
    training: bool,
    lengths: Tensor | None,
) -> list[Tensor]:
    """``[outputs (B, T, H), *final state fields (B, size)]`` of torch's kernel ``name``."""
    kernel = KERNELS[name]
    fields = tuple(field.unsqueeze(0) for field in state)  # each (1, B, size)
    hidden = fields if len(fields) > 1 else fields[0]
    steps = inputs.shape[1]
    if lengths is None or bool((lengths == steps).all()):
        result = kernel(inputs, hidden, weights, bias, 1, 0.0, training, False, True)
        return [result[0], *(field.squeeze(0) for field in result[1:])]
    packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
    # enforce_sorted=False: pack_padded_sequence always gives both permutations
    assert packed.sorted_indices is not None and packed.unsorted_indices is not None
    sorted_hidden = _permute(hidden, packed.sorted_indices)
    result = kernel(
        packed.data,
        packed.batch_sizes,
        sorted_hidden,
        weights,
        bias,
        1,
        0.0,
        training,
        False,
    )
    packed_outputs = PackedSequence(
        result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    outputs, _ = pad_packed_sequence(packed_outputs, batch_first=True, total_length=steps)
    final = _permute(tuple(result[1:]), packed.unsorted_indices)
    final = final if isinstance(final, tuple) else (final,)
    return [outputs, *(field.squeeze(0) for field in final)]


class _Fields(tuple):
    """A state's fields, rebuilt as ``type(state)(*fields)`` (as ``run_segments`` does)."""

    def __new__(cls, *fields: Tensor) -> _Fields:
        return super().__new__(cls, fields)


def _run_op(tensors: list, text: str) -> list[Tensor]:
    name, bias_text, training_text, count = text.split("|")
    inputs, lengths, resets = tensors[:3]
    state = _Fields(*tensors[3 : 3 + int(count)])
    weights = tensors[3 + int(count) :]
    bias, training = bias_text == "1", training_text == "1"

    def run(_: object, inputs: Tensor, state: State, lengths: Tensor | None):
        if lengths is None:
            results = _call_kernel(name, inputs, tuple(state), weights, bias, training, None)
        else:
            results = _by_length(name, inputs, tuple(state), weights, bias, training, lengths)
        return results[0], _Fields(*results[1:])

    # oneDNN's float32 kernel has no backward under torch.func.vjp: the ATen loop instead
    with torch.backends.mkldnn.flags(enabled=False):
        if resets is not None and bool(resets.any()):
            outputs, final = run_segments(run, cast(Cell, None), inputs, state, lengths, resets)
        else:
            outputs, final = run(None, inputs, state, lengths)
    return [outputs, *final]


def _by_length(
    name: str,
    inputs: Tensor,
    state: tuple[Tensor, ...],
    weights: list[Tensor],
    bias: bool,
    training: bool,
    lengths: Tensor,
) -> list[Tensor]:
    """``_call_kernel`` with ``lengths`` as one unpacked call per distinct length (the packed
    kernel has no ``torch.func`` rule); outputs past a row's length are zero."""
    steps = inputs.shape[1]
    rows_by_length = []
    results_by_length = []
    for length in torch.unique(lengths).tolist():
        rows = torch.nonzero(lengths == length).squeeze(1)
        fields = tuple(field.index_select(0, rows) for field in state)
        results = _call_kernel(
            name, inputs[:, :length].index_select(0, rows), fields, weights, bias, training, None
        )
        padded = torch.nn.functional.pad(results[0], (0, 0, 0, steps - length))
        rows_by_length.append(rows)
        results_by_length.append([padded, *results[1:]])
    order = torch.cat(rows_by_length).argsort()
    return [
        torch.cat([results[index] for results in results_by_length]).index_select(0, order)
        for index in range(len(results_by_length[0]))
    ]


def _fake_op(tensors: list, text: str) -> list[Tensor]:
    count = int(text.split("|")[3])
    inputs, state = tensors[0], tensors[3 : 3 + count]
    outputs = inputs.new_empty(*inputs.shape[:2], state[0].shape[-1])
    return [outputs, *(torch.empty_like(field) for field in state)]


custom_ops.register_target("native", _run_op, _fake_op, functional=True)


def _permute(hidden: Tensor | tuple[Tensor, ...], order: Tensor) -> Tensor | tuple[Tensor, ...]:
    if isinstance(hidden, Tensor):
        return hidden.index_select(1, order)
    permuted = tuple(field.index_select(1, order) for field in hidden)
    return permuted if len(permuted) > 1 else permuted[0]
