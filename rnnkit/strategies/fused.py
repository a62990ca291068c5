"""The ``fused`` strategy: one compiled kernel per cell family runs the whole time loop.

Forward and backward are one call each: per step the product with the recurrent weights and the
cell's pointwise math fused around it, the input projection (``cell.project_inputs``) for all
steps at once outside the loop, the weight gradients one large product after the backward loop.
A cell names its kernel (``cell.fused_kernel``) and hands it its weights by role
(``cell.fused_weights``), with recurrent regularization applied inside the kernel: the
sequence's dropout masks and DropConnect weights from ``begin_sequence``, zoneout masks drawn up
front (``cell.zoneout_masks``) in the order the sequential strategy draws them, so a seeded run
gives the same numbers.

Runs on the CPU in float32 and float64 (Numba; the batch's rows split over the threads torch
may use, each running the whole loop), and the LSTM and GRU also on CUDA tensors (Triton,
``kernels/triton_fused_lstm.py``, ``triton_fused_gru.py``; the options they lack raise);
elsewhere, and for cells without a kernel, it raises with the reason. No double backward.

Under ``torch.compile`` the kernel call goes through the ``rnnkit::opaque`` custom op
(``kernels/custom_ops.py``); the loop then runs all ``T`` steps (rows past their length are
masked by the kernel) instead of stopping at the longest length, which is a host value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.kernels import custom_ops, numba_cpu
from rnnkit.strategies.kernels.fused_elman import run_elman
from rnnkit.strategies.kernels.fused_gru import run_gru
from rnnkit.strategies.kernels.fused_lstm import run_lstm
from rnnkit.strategies.kernels.fused_pararnn import run_paragru, run_paralstm
from rnnkit.strategies.kernels.fused_slstm import run_slstm
from rnnkit.strategies.native import StrategyUnsupportedError
from rnnkit.strategies.validation import compiling, prepare_with_resets

# name -> run(projected, state fields, weights by role, zoneout masks, lengths, resets)
KERNELS: dict[str, Callable[..., tuple[Tensor, tuple[Tensor, ...]]]] = {
    "lstm": run_lstm,
    "gru": run_gru,
    "elman": run_elman,
    "jordan": run_elman,  # Elman's loop with the output layer fed back
    "paragru": run_paragru,
    "paralstm": run_paralstm,
    "slstm": run_slstm,
}
DTYPES = (torch.float32, torch.float64)
CUDA = ("lstm", "gru")  # kernels with a Triton version for CUDA tensors (run_lstm, run_gru)


def unsupported_reason(cell: Cell, device: torch.device | None = None) -> str | None:
    """Why ``fused`` cannot run ``cell`` (on ``device``, default its parameters'), or None."""
    if cell.fused_kernel is None or cell.fused_kernel not in KERNELS:
        return f"cell {type(cell).__name__} has no fused kernel"
    compiler = numba_cpu.available()
    if compiler is not None:
        return f"the fused CPU kernels are unavailable: {compiler}"
    parameter = next(cell.parameters(), None)
    if parameter is not None:
        device = parameter.device if device is None else device
        if parameter.dtype not in DTYPES:
            return f"the fused kernels run float32 and float64, the cell is {parameter.dtype}"
    if device is not None and torch.device(device).type == "cuda" and cell.fused_kernel in CUDA:
        from rnnkit.strategies.kernels import triton_common  # imports Triton: only when used

        missing = triton_common.available()
        return None if missing is None else f"the fused kernel on {device} needs {missing}"
    if device is not None and torch.device(device).type != "cpu":
        return (
            f"the fused kernels run on the CPU (the LSTM and GRU also on CUDA), the cell is on "
            f"{device}"
        )
    return None


def run(
    cell: Cell,
    inputs: Tensor,
    state: State | None = None,
    lengths: Tensor | Sequence[int] | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, State]:
    """Run ``cell`` over ``inputs (B, T, D)`` with its fused kernel: ``outputs (B, T, O)``.

    ``resets (B, T)``: the kernel restarts a row from the zero state (the cell's
    ``initial_state``) before a flagged step; ``state`` starts the first segment only.
    """
    reason = unsupported_reason(cell, inputs.device if isinstance(inputs, Tensor) else None)
    if reason is not None:
        raise StrategyUnsupportedError(f"strategy 'fused' cannot run this cell: {reason}")
    assert cell.fused_kernel is not None  # unsupported_reason checked it
    state, lengths, resets = prepare_with_resets(cell, inputs, state, lengths, resets)
    batch_size, steps, _ = inputs.shape
    cell.begin_sequence(batch_size, device=inputs.device, dtype=inputs.dtype)
    # a cell may hand the kernel its projection before steps the kernel applies per row
    # (the layer-norm LSTM's input layer norm: LSTMCell.fused_projection)
    projection = getattr(cell, "fused_projection", cell.project_inputs)
    projected = projection(inputs)  # (B, T, P)
    longest = steps if lengths is None or compiling() else int(lengths.max())
    if longest < steps:
        projected = projected[:, :longest]
        resets = None if resets is None else resets[:, :longest]
    if lengths is None:
        lengths = torch.full((batch_size,), steps, dtype=torch.int64)
    zoneout = cell.zoneout_masks(longest, batch_size, device=inputs.device, dtype=inputs.dtype)
    weights = cell.fused_weights(batch_size)
    if compiling():
        outputs, final = _call_op(
            cell.fused_kernel, projected, tuple(state), weights, zoneout, lengths, resets
        )
    else:
        kernel = KERNELS[cell.fused_kernel]
        outputs, final = kernel(projected, tuple(state), weights, zoneout, lengths.cpu(), resets)
    if longest < steps:
        outputs = torch.cat(
            [outputs, outputs.new_zeros(batch_size, steps - longest, outputs.shape[2])], 1
        )
    return outputs, cell.state_type(*final)


def _call_op(
    name: str,
    projected: Tensor,
    state: tuple[Tensor, ...],
    weights: dict,
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``KERNELS[name]`` through ``rnnkit::opaque`` (under ``torch.compile``)."""
    weight_tensors, weight_text = custom_ops.encode_options(weights)
    zoneout_count = -1 if zoneout is None else len(zoneout)
    text = f"{name}|{len(state)}|{zoneout_count}|{weight_text}"
    tensors = [projected, lengths, resets, *state, *(zoneout or ()), *weight_tensors]
    results = custom_ops.call("fused", tensors, text)
    return results[0], tuple(results[1:])


def _decode(tensors: list, text: str) -> tuple:
    name, state_count, zoneout_count, weight_text = text.split("|", 3)
    projected, lengths, resets = tensors[:3]
    state_end = 3 + int(state_count)
    zoneout_end = state_end + max(int(zoneout_count), 0)
    zoneout = None if int(zoneout_count) < 0 else tuple(tensors[state_end:zoneout_end])
    weights = custom_ops.decode_options(tensors[zoneout_end:], weight_text)
    return name, projected, tuple(tensors[3:state_end]), weights, zoneout, lengths, resets


def _run_op(tensors: list, text: str) -> list[Tensor]:
    name, projected, state, weights, zoneout, lengths, resets = _decode(tensors, text)
    outputs, final = KERNELS[name](projected, state, weights, zoneout, lengths.cpu(), resets)
    return [outputs, *final]


def _fake_op(tensors: list, text: str) -> list[Tensor]:
    _, projected, state, _, _, _, _ = _decode(tensors, text)
    batch, steps, _ = projected.shape
    outputs = projected.new_empty(batch, steps, state[0].shape[-1])
    return [outputs, *(torch.empty_like(field) for field in state)]


custom_ops.register_target("fused", _run_op, _fake_op)
