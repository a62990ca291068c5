"""Compiled CPU kernels for the Newton strategy on the built-in diagonal cells.

For ParaGRU (diagonal recurrence) and ParaLSTM one pass over all ``N = B * T`` steps computes
what a Newton iteration needs, ``f(s_{t-1}, p_t)`` and its Jacobian, and one pass computes the
vector-Jacobian product the adjoint needs (gradients of the projected inputs, of the previous
states and of the recurrent weights). The equations are those of ``rnnkit.cells.pararnn``; the
tests compare these kernels with the cells' own torch code. Numba, compiled on first use and
cached on disk; ``lookup`` returns None where they do not apply (another cell, heads, not on the
CPU, Numba missing), and the strategy then uses the cell's torch code. A cell asks for a kernel
by name (``cell.compiled_kernel``) and hands it its weights by role (``cell.compiled_weights()``);
the kernels know no cell class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels import numba_cpu
from rnnkit.strategies.kernels.workspace import Workspace

try:
    import numba
    from numba import prange

    from rnnkit.strategies.kernels.compiled_math import sigmoid as _sigmoid
    from rnnkit.strategies.kernels.compiled_math import tanh as _tanh
except ImportError:  # pragma: no cover - numba_cpu.available() reports it
    numba = None  # type: ignore[assignment]


# outputs reused across calls once nobody holds them (see workspace.py for why and how)
WORKSPACE = Workspace()


def _output(role: str, like: Tensor, width: int | None = None) -> Tensor:
    shape = (like.shape[0], like.shape[1] if width is None else width)
    return WORKSPACE.take(role, shape, like.dtype)


class FusedCell(NamedTuple):
    """``linearize(cell, projected, previous) -> (next, jacobian)``,
    ``vjp(cell, projected, previous, adjoint) -> (d projected, d previous, {name: d weight})``
    and, for diagonal Jacobians, ``iterate(cell, projected, states, initial, steps) -> (next,
    jacobian, offsets, residual)``: one Newton iteration's linearization at ``s_{t-1}`` read off
    ``states`` (``initial`` at each sequence's first step), the offsets ``f - J s_{t-1}`` and
    ``max |s_t - f(s_{t-1})|`` in one pass (compiled with fastmath: a NaN may not show in
    the residual, so the caller checks the solution is finite); None where there is none."""

    linearize: Callable
    vjp: Callable
    iterate: Callable | None = None


def lookup(cell, device: torch.device, dtype: torch.dtype) -> FusedCell | None:
    """The compiled kernels for ``cell``, or None when there are none for it here."""
    if numba is None or numba_cpu.available() is not None or device.type != "cpu":
        return None
    if dtype not in (torch.float32, torch.float64):
        return None
    return KERNELS.get(cell.compiled_kernel) if cell.compiled_kernel is not None else None


def _by_parameter_name(cell, grads: dict[str, Tensor]) -> dict[str, Tensor]:
    """``{role: grad}`` -> ``{parameter name: grad}``, matching the tensors of
    ``compiled_weights()`` with the cell's parameters by identity."""
    weights = cell.compiled_weights()
    names = {id(parameter): name for name, parameter in cell.named_parameters()}
    return {names[id(weights[role])]: grad for role, grad in grads.items()}


def _arrays(*tensors: Tensor) -> list[np.ndarray]:
    return [tensor.detach().contiguous().numpy() for tensor in tensors]


def _gru_linearize(cell, projected: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
    next_states, jacobian = _output("next", previous), _output("jacobian", previous)
    _gru_forward_kernel(  # type: ignore[call-arg]  # numba's Dispatcher stub
        *_arrays(projected, previous, cell.compiled_weights()["recurrent"]),
        next_states.numpy(),
        jacobian.numpy(),
    )
    return next_states, jacobian


def _gru_iterate(cell, projected: Tensor, states: Tensor, initial: Tensor, steps: int):
    next_states, jacobian = _output("next", states), _output("jacobian", states)
    offsets = _output("offsets", states)
    partial = torch.zeros(numba.get_num_threads(), states.shape[1], dtype=states.dtype)
    _gru_iterate_kernel(  # type: ignore[call-arg]  # numba's Dispatcher stub
        *_arrays(projected, states, initial),
        steps,
        *_arrays(cell.compiled_weights()["recurrent"]),
        next_states.numpy(),
        jacobian.numpy(),
        offsets.numpy(),
        partial.numpy(),
    )
    return next_states, jacobian, offsets, float(partial.max())


def _gru_vjp(cell, projected: Tensor, previous: Tensor, adjoint: Tensor):
    grad_projected, grad_previous = _output("d projected", projected), _output("d prev", previous)
    partial = torch.zeros(numba.get_num_threads(), 3, previous.shape[1], dtype=previous.dtype)
    _gru_backward_kernel(  # type: ignore[call-arg]  # numba's Dispatcher stub
        *_arrays(projected, previous, cell.compiled_weights()["recurrent"], adjoint),
        grad_projected.numpy(),
        grad_previous.numpy(),
        partial.numpy(),
    )
    return grad_projected, grad_previous, _by_parameter_name(cell, {"recurrent": partial.sum(0)})


def _lstm_linearize(cell, projected: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
    rows, hidden = previous.shape[0], cell.hidden_size
    next_states = _output("next", previous)
    jacobian = _output("jacobian", previous, 4 * hidden)  # (N, H, 2, 2) flat
    _lstm_forward_kernel(  # type: ignore[call-arg]  # numba's Dispatcher stub
        *_arrays(projected, previous, *_lstm_weights(cell)),
        next_states.numpy(),
        jacobian.numpy(),
    )
    return next_states, jacobian.view(rows, hidden, 2, 2)


def _lstm_vjp(cell, projected: Tensor, previous: Tensor, adjoint: Tensor):
    grad_projected, grad_previous = _output("d projected", projected), _output("d prev", previous)
    hidden = cell.hidden_size
    partial = torch.zeros(numba.get_num_threads(), 5, hidden, dtype=previous.dtype)
    _lstm_backward_kernel(  # type: ignore[call-arg]  # numba's Dispatcher stub
        *_arrays(projected, previous, *_lstm_weights(cell), adjoint),
        grad_projected.numpy(),
        grad_previous.numpy(),
        partial.numpy(),
    )
    total = partial.sum(0)
    grads = {"recurrent": total[:3], "peephole": total[3:]}
    return grad_projected, grad_previous, _by_parameter_name(cell, grads)


def _lstm_weights(cell) -> tuple[Tensor, Tensor]:
    weights = cell.compiled_weights()
    return weights["recurrent"], weights["peephole"]


KERNELS: dict[str, FusedCell] = {
    "paragru": FusedCell(_gru_linearize, _gru_vjp, _gru_iterate),
    "paralstm": FusedCell(_lstm_linearize, _lstm_vjp),
}


if numba is not None:

    @numba.njit(inline="always", error_model="numpy")
    def _gru_point(projected, row, hidden, weight, j, h, one):  # pragma: no cover - compiled
        """``(f(h)_j, df_j/dh_j)`` of the diagonal ParaGRU at one row and channel."""
        update = _sigmoid(projected[row, j] + weight[0, j] * h, one)
        reset = _sigmoid(projected[row, hidden + j] + weight[1, j] * h, one)
        candidate = _tanh(projected[row, 2 * hidden + j] + weight[2, j] * reset * h, one)
        update_slope = update * (one - update) * weight[0, j]
        reset_slope = reset * (one - reset) * weight[1, j]
        candidate_slope = (one - candidate * candidate) * weight[2, j] * (reset + h * reset_slope)
        value = h + update * (candidate - h)
        slope = one - update + (candidate - h) * update_slope + update * candidate_slope
        return value, slope

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _gru_forward_kernel(projected, previous, weight, next_states, jacobian):  # pragma: no cover
        one = previous.dtype.type(1)
        rows, hidden = previous.shape
        for row in prange(rows):
            for j in range(hidden):
                value, slope = _gru_point(projected, row, hidden, weight, j, previous[row, j], one)
                next_states[row, j] = value
                jacobian[row, j] = slope

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _gru_iterate_kernel(
        projected, states, initial, steps, weight, next_states, jacobian, offsets, partial
    ):  # pragma: no cover - compiled
        one = states.dtype.type(1)
        rows, hidden = states.shape
        threads = partial.shape[0]
        per_thread = (rows + threads - 1) // threads
        for thread in prange(threads):
            # a running max per channel: a scalar max reduction here measured 3x slower
            largest = partial[thread]
            for row in range(thread * per_thread, min(rows, (thread + 1) * per_thread)):
                previous = initial[row // steps] if row % steps == 0 else states[row - 1]
                current = states[row]
                for j in range(hidden):
                    h = previous[j]
                    value, slope = _gru_point(projected, row, hidden, weight, j, h, one)
                    next_states[row, j] = value
                    jacobian[row, j] = slope
                    offsets[row, j] = value - slope * h
                    largest[j] = max(largest[j], abs(current[j] - value))

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _gru_backward_kernel(
        projected, previous, weight, adjoint, grad_projected, grad_previous, partial
    ):  # pragma: no cover - compiled
        one = previous.dtype.type(1)
        rows, hidden = previous.shape
        threads = partial.shape[0]
        per_thread = (rows + threads - 1) // threads
        for thread in prange(threads):
            for row in range(thread * per_thread, min(rows, (thread + 1) * per_thread)):
                for j in range(hidden):
                    h, grad = previous[row, j], adjoint[row, j]
                    update = _sigmoid(projected[row, j] + weight[0, j] * h, one)
                    reset = _sigmoid(projected[row, hidden + j] + weight[1, j] * h, one)
                    gated = reset * h
                    candidate = _tanh(projected[row, 2 * hidden + j] + weight[2, j] * gated, one)
                    grad_candidate_pre = grad * update * (one - candidate * candidate)
                    grad_gated = grad_candidate_pre * weight[2, j]
                    grad_update_pre = grad * (candidate - h) * update * (one - update)
                    grad_reset_pre = grad_gated * h * reset * (one - reset)
                    grad_projected[row, j] = grad_update_pre
                    grad_projected[row, hidden + j] = grad_reset_pre
                    grad_projected[row, 2 * hidden + j] = grad_candidate_pre
                    grad_previous[row, j] = (
                        grad * (one - update)
                        + grad_gated * reset
                        + grad_update_pre * weight[0, j]
                        + grad_reset_pre * weight[1, j]
                    )
                    partial[thread, 0, j] += grad_update_pre * h
                    partial[thread, 1, j] += grad_reset_pre * h
                    partial[thread, 2, j] += grad_candidate_pre * gated

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _lstm_forward_kernel(
        projected, previous, weight, peephole, next_states, jacobian
    ):  # pragma: no cover - compiled
        one = previous.dtype.type(1)
        rows = previous.shape[0]
        hidden = weight.shape[1]
        for row in prange(rows):
            for j in range(hidden):
                c, h = previous[row, 2 * j], previous[row, 2 * j + 1]
                forget = _sigmoid(projected[row, j] + weight[0, j] * h + peephole[0, j] * c, one)
                candidate = _tanh(projected[row, 2 * hidden + j] + weight[2, j] * h, one)
                c_new = forget * c + (one - forget) * candidate
                output = _sigmoid(
                    projected[row, hidden + j] + weight[1, j] * h + peephole[1, j] * c_new, one
                )
                tanh_c = _tanh(c_new, one)
                next_states[row, 2 * j] = c_new
                next_states[row, 2 * j + 1] = output * tanh_c
                forget_slope = forget * (one - forget)
                dc_dc = forget + (c - candidate) * forget_slope * peephole[0, j]
                dc_dh = (c - candidate) * forget_slope * weight[0, j] + (one - forget) * (
                    one - candidate * candidate
                ) * weight[2, j]
                output_slope = output * (one - output)
                through_cell = output_slope * peephole[1, j] * tanh_c + output * (
                    one - tanh_c * tanh_c
                )
                jacobian[row, 4 * j] = dc_dc
                jacobian[row, 4 * j + 1] = dc_dh
                jacobian[row, 4 * j + 2] = through_cell * dc_dc
                jacobian[row, 4 * j + 3] = (
                    output_slope * weight[1, j] * tanh_c + through_cell * dc_dh
                )

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _lstm_backward_kernel(
        projected, previous, weight, peephole, adjoint, grad_projected, grad_previous, partial
    ):  # pragma: no cover - compiled
        one = previous.dtype.type(1)
        rows = previous.shape[0]
        hidden = weight.shape[1]
        threads = partial.shape[0]
        per_thread = (rows + threads - 1) // threads
        for thread in prange(threads):
            for row in range(thread * per_thread, min(rows, (thread + 1) * per_thread)):
                for j in range(hidden):
                    c, h = previous[row, 2 * j], previous[row, 2 * j + 1]
                    grad_c_new, grad_h_new = adjoint[row, 2 * j], adjoint[row, 2 * j + 1]
                    forget = _sigmoid(
                        projected[row, j] + weight[0, j] * h + peephole[0, j] * c, one
                    )
                    candidate = _tanh(projected[row, 2 * hidden + j] + weight[2, j] * h, one)
                    c_new = forget * c + (one - forget) * candidate
                    output = _sigmoid(
                        projected[row, hidden + j] + weight[1, j] * h + peephole[1, j] * c_new, one
                    )
                    tanh_c = _tanh(c_new, one)
                    grad_output_pre = grad_h_new * tanh_c * output * (one - output)
                    grad_c_total = (
                        grad_c_new
                        + grad_h_new * output * (one - tanh_c * tanh_c)
                        + grad_output_pre * peephole[1, j]
                    )
                    grad_forget_pre = grad_c_total * (c - candidate) * forget * (one - forget)
                    grad_candidate_pre = (
                        grad_c_total * (one - forget) * (one - candidate * candidate)
                    )
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
