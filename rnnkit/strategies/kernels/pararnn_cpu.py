"""Compiled CPU kernels for the Newton strategy on the built-in diagonal cells.

For ParaGRU (diagonal recurrence) and ParaLSTM one pass over all ``N = B * T`` steps computes
what a Newton iteration needs, ``f(s_{t-1}, p_t)`` and its Jacobian, and one pass computes the
vector-Jacobian product the adjoint needs (gradients of the projected inputs, of the previous
states and of the recurrent weights). The equations are those of ``rnnkit.cells.pararnn``; the
tests compare these kernels with the cells' own torch code. Numba, compiled on first use and
cached on disk; ``lookup`` returns None where they do not apply (another cell, heads, not on the
CPU, Numba missing), and the strategy then uses the cell's torch code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnkit.cells.pararnn import ParaGRUCell, ParaLSTMCell
from rnnkit.strategies.kernels import numba_cpu

try:
    import numba
    from numba import prange
except ImportError:  # pragma: no cover - numba_cpu.available() reports it
    numba = None


class FusedCell(NamedTuple):
    """``linearize(cell, projected, previous) -> (next, jacobian)`` and
    ``vjp(cell, projected, previous, adjoint) -> (d projected, d previous, {name: d weight})``."""

    linearize: Callable
    vjp: Callable


def lookup(cell, device: torch.device, dtype: torch.dtype) -> FusedCell | None:
    """The compiled kernels for ``cell``, or None when there are none for it here."""
    if numba is None or numba_cpu.available() is not None or device.type != "cpu":
        return None
    if dtype not in (torch.float32, torch.float64):
        return None
    if type(cell) is ParaGRUCell and cell.num_heads is None:
        return FusedCell(_gru_linearize, _gru_vjp)
    if type(cell) is ParaLSTMCell:
        return FusedCell(_lstm_linearize, _lstm_vjp)
    return None


def _arrays(*tensors: Tensor) -> list[np.ndarray]:
    return [tensor.detach().contiguous().numpy() for tensor in tensors]


def _gru_linearize(cell, projected: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
    next_states, jacobian = torch.empty_like(previous), torch.empty_like(previous)
    _gru_forward_kernel(
        *_arrays(projected, previous, cell.weight_hh), next_states.numpy(), jacobian.numpy()
    )
    return next_states, jacobian


def _gru_vjp(cell, projected: Tensor, previous: Tensor, adjoint: Tensor):
    grad_projected, grad_previous = torch.empty_like(projected), torch.empty_like(previous)
    partial = torch.zeros(numba.get_num_threads(), 3, previous.shape[1], dtype=previous.dtype)
    _gru_backward_kernel(
        *_arrays(projected, previous, cell.weight_hh, adjoint),
        grad_projected.numpy(),
        grad_previous.numpy(),
        partial.numpy(),
    )
    return grad_projected, grad_previous, {"weight_hh": partial.sum(0)}


def _lstm_linearize(cell, projected: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
    rows, hidden = previous.shape[0], cell.hidden_size
    next_states = torch.empty_like(previous)
    jacobian = torch.empty(rows, hidden, 2, 2, dtype=previous.dtype)
    _lstm_forward_kernel(
        *_arrays(projected, previous, cell.weight_hh, cell.weight_peephole),
        next_states.numpy(),
        jacobian.numpy(),
    )
    return next_states, jacobian


def _lstm_vjp(cell, projected: Tensor, previous: Tensor, adjoint: Tensor):
    grad_projected, grad_previous = torch.empty_like(projected), torch.empty_like(previous)
    hidden = cell.hidden_size
    partial = torch.zeros(numba.get_num_threads(), 5, hidden, dtype=previous.dtype)
    _lstm_backward_kernel(
        *_arrays(projected, previous, cell.weight_hh, cell.weight_peephole, adjoint),
        grad_projected.numpy(),
        grad_previous.numpy(),
        partial.numpy(),
    )
    total = partial.sum(0)
    return grad_projected, grad_previous, {"weight_hh": total[:3], "weight_peephole": total[3:]}


if numba is not None:

    @numba.njit(inline="always")
    def _sigmoid(value):  # pragma: no cover - compiled
        return 1.0 / (1.0 + np.exp(-value))

    @numba.njit(parallel=True, cache=True, boundscheck=False)
    def _gru_forward_kernel(projected, previous, weight, next_states, jacobian):  # pragma: no cover
        rows, hidden = previous.shape
        for row in prange(rows):
            for j in range(hidden):
                h = previous[row, j]
                update = _sigmoid(projected[row, j] + weight[0, j] * h)
                reset = _sigmoid(projected[row, hidden + j] + weight[1, j] * h)
                candidate = np.tanh(projected[row, 2 * hidden + j] + weight[2, j] * reset * h)
                next_states[row, j] = h + update * (candidate - h)
                update_slope = update * (1 - update) * weight[0, j]
                reset_slope = reset * (1 - reset) * weight[1, j]
                candidate_slope = (
                    (1 - candidate * candidate) * weight[2, j] * (reset + h * reset_slope)
                )
                jacobian[row, j] = (
                    1 - update + (candidate - h) * update_slope + update * candidate_slope
                )

    @numba.njit(parallel=True, cache=True, boundscheck=False)
    def _gru_backward_kernel(
        projected, previous, weight, adjoint, grad_projected, grad_previous, partial
    ):  # pragma: no cover - compiled
        rows, hidden = previous.shape
        threads = partial.shape[0]
        per_thread = (rows + threads - 1) // threads
        for thread in prange(threads):
            for row in range(thread * per_thread, min(rows, (thread + 1) * per_thread)):
                for j in range(hidden):
                    h, grad = previous[row, j], adjoint[row, j]
                    update = _sigmoid(projected[row, j] + weight[0, j] * h)
                    reset = _sigmoid(projected[row, hidden + j] + weight[1, j] * h)
                    gated = reset * h
                    candidate = np.tanh(projected[row, 2 * hidden + j] + weight[2, j] * gated)
                    grad_candidate_pre = grad * update * (1 - candidate * candidate)
                    grad_gated = grad_candidate_pre * weight[2, j]
                    grad_update_pre = grad * (candidate - h) * update * (1 - update)
                    grad_reset_pre = grad_gated * h * reset * (1 - reset)
                    grad_projected[row, j] = grad_update_pre
                    grad_projected[row, hidden + j] = grad_reset_pre
                    grad_projected[row, 2 * hidden + j] = grad_candidate_pre
                    grad_previous[row, j] = (
                        grad * (1 - update)
                        + grad_gated * reset
                        + grad_update_pre * weight[0, j]
                        + grad_reset_pre * weight[1, j]
                    )
                    partial[thread, 0, j] += grad_update_pre * h
                    partial[thread, 1, j] += grad_reset_pre * h
                    partial[thread, 2, j] += grad_candidate_pre * gated

    @numba.njit(parallel=True, cache=True, boundscheck=False)
    def _lstm_forward_kernel(
        projected, previous, weight, peephole, next_states, jacobian
    ):  # pragma: no cover - compiled
        rows = previous.shape[0]
        hidden = weight.shape[1]
        for row in prange(rows):
            for j in range(hidden):
                c, h = previous[row, 2 * j], previous[row, 2 * j + 1]
                forget = _sigmoid(projected[row, j] + weight[0, j] * h + peephole[0, j] * c)
                candidate = np.tanh(projected[row, 2 * hidden + j] + weight[2, j] * h)
                c_new = forget * c + (1 - forget) * candidate
                output = _sigmoid(
                    projected[row, hidden + j] + weight[1, j] * h + peephole[1, j] * c_new
                )
                tanh_c = np.tanh(c_new)
                next_states[row, 2 * j] = c_new
                next_states[row, 2 * j + 1] = output * tanh_c
                forget_slope = forget * (1 - forget)
                dc_dc = forget + (c - candidate) * forget_slope * peephole[0, j]
                dc_dh = (c - candidate) * forget_slope * weight[0, j] + (1 - forget) * (
                    1 - candidate * candidate
                ) * weight[2, j]
                output_slope = output * (1 - output)
                through_cell = output_slope * peephole[1, j] * tanh_c + output * (
                    1 - tanh_c * tanh_c
                )
                jacobian[row, j, 0, 0] = dc_dc
                jacobian[row, j, 0, 1] = dc_dh
                jacobian[row, j, 1, 0] = through_cell * dc_dc
                jacobian[row, j, 1, 1] = output_slope * weight[1, j] * tanh_c + through_cell * dc_dh

    @numba.njit(parallel=True, cache=True, boundscheck=False)
    def _lstm_backward_kernel(
        projected, previous, weight, peephole, adjoint, grad_projected, grad_previous, partial
    ):  # pragma: no cover - compiled
        rows = previous.shape[0]
        hidden = weight.shape[1]
        threads = partial.shape[0]
        per_thread = (rows + threads - 1) // threads
        for thread in prange(threads):
            for row in range(thread * per_thread, min(rows, (thread + 1) * per_thread)):
                for j in range(hidden):
                    c, h = previous[row, 2 * j], previous[row, 2 * j + 1]
                    grad_c_new, grad_h_new = adjoint[row, 2 * j], adjoint[row, 2 * j + 1]
                    forget = _sigmoid(projected[row, j] + weight[0, j] * h + peephole[0, j] * c)
                    candidate = np.tanh(projected[row, 2 * hidden + j] + weight[2, j] * h)
                    c_new = forget * c + (1 - forget) * candidate
                    output = _sigmoid(
                        projected[row, hidden + j] + weight[1, j] * h + peephole[1, j] * c_new
                    )
                    tanh_c = np.tanh(c_new)
                    grad_output_pre = grad_h_new * tanh_c * output * (1 - output)
                    grad_c_total = (
                        grad_c_new
                        + grad_h_new * output * (1 - tanh_c * tanh_c)
                        + grad_output_pre * peephole[1, j]
                    )
                    grad_forget_pre = grad_c_total * (c - candidate) * forget * (1 - forget)
                    grad_candidate_pre = grad_c_total * (1 - forget) * (1 - candidate * candidate)
                    grad_projected[row, j] = grad_forget_pre
                    grad_projected[row, hidden + j] = grad_output_pre
                    grad_projected[row, 2 * hidden + j] = grad_candidate_pre
                    grad_previous[row, 2 * j] = (
                        grad_c_total * forget + grad_forget_pre * peephole[0, j]
                    )
                    grad_previous[row, 2 * j + 1] = (
                        grad_forget_pre * weight[0, j]
                        + grad_output_pre * weight[1, j]
                        + grad_candidate_pre * weight[2, j]
                    )
                    partial[thread, 0, j] += grad_forget_pre * h
                    partial[thread, 1, j] += grad_output_pre * h
                    partial[thread, 2, j] += grad_candidate_pre * h
                    partial[thread, 3, j] += grad_forget_pre * c
                    partial[thread, 4, j] += grad_output_pre * c_new
