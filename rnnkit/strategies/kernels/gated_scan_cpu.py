"""Compiled CPU scans that compute their own coefficients: minGRU and minLSTM in one pass.

The diagonal scan of ``scan.py`` for minGRU runs ``a, b = scan_terms(projected)`` (a sigmoid, the
candidate activation, two products), the length padding and the scan as separate tensor
operations, and autograd adds as many again plus a zero-filled full-size gradient for every slice
of ``projected``. These kernels read ``projected (B, T, P)`` and do all of it in one pass over
time forward and one backward, writing ``dL/dprojected`` straight into one buffer. They compute
exactly the recurrence of ``rnnkit.cells.mingru`` (the tests hold them to the sequential
reference), with the scan strategy's padding: at steps ``t >= lengths[b]``, ``a = 1, b = 0``.

``projected`` holds the gate pre-activations then the candidate's, ``H`` channels each:

- ``mingru_g`` / ``mingru_identity``: ``(z, h~)``, ``h_t = (1 - z) h_{t-1} + z g(h~)``;
- ``minlstm_g`` / ``minlstm_identity``: ``(f, i, h~)``,
  ``h_t = f / (f + i) h_{t-1} + i / (f + i) g(h~)`` with ``f, i`` after the sigmoid;

``g`` is the paper's ``v + 0.5 (v >= 0), sigmoid(v) (v < 0)`` or the identity. A cell asks for
one by name (``cell.compiled_kernel``); ``lookup`` returns None where none applies (another
cell, not on the CPU, a dtype other than float32 or float64, Numba missing), and the scan
strategy then runs the cell's ``scan_terms`` and the diagonal scan.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels import numba_cpu
from rnnkit.strategies.kernels.workspace import Workspace

try:
    import numba
    from numba import prange

    from rnnkit.strategies.kernels.compiled_math import sigmoid as _sigmoid
except ImportError:  # pragma: no cover - numba_cpu.available() reports it
    numba = None  # type: ignore[assignment]

# outputs reused across calls once nobody holds them (see workspace.py for why and how)
WORKSPACE = Workspace()

# kernel name: (gates before the candidate, candidate activation is the identity)
KERNELS: dict[str, tuple[int, bool]] = {
    "mingru_g": (1, False),
    "mingru_identity": (1, True),
    "minlstm_g": (2, False),
    "minlstm_identity": (2, True),
}

GatedScan = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def lookup(name: str | None, device: torch.device, dtype: torch.dtype) -> GatedScan | None:
    """``scan(projected (B, T, P), initial (B, H), lengths (B,) or None) -> h (B, T, H)`` with
    gradients for ``projected`` and ``initial``, or None when no kernel applies here."""
    if name not in KERNELS or numba is None or numba_cpu.available() is not None:
        return None
    if device.type != "cpu" or dtype not in (torch.float32, torch.float64):
        return None
    gates, identity = KERNELS[name]

    def scan(projected: Tensor, initial: Tensor, lengths: Tensor | None) -> Tensor:
        steps = projected.shape[1]
        if lengths is None:
            lengths = torch.full((projected.shape[0],), steps, dtype=torch.int64)
        return GatedScanFunction.apply(
            projected, initial.to(projected.dtype), lengths.to(torch.int64), gates, identity
        )

    return scan


class GatedScanFunction(torch.autograd.Function):
    """``h = scan(projected, initial, lengths)``; the backward recomputes the gates."""

    @staticmethod
    def forward(ctx, projected, initial, lengths, gates, identity):
        projected = projected.detach().contiguous()
        initial = initial.detach().contiguous()
        batch, steps, width = projected.shape
        hidden = WORKSPACE.take("states", (batch, steps, width // (gates + 1)), projected.dtype)
        kernel = _mingru_forward if gates == 1 else _minlstm_forward
        kernel(
            projected.numpy(),
            initial.numpy(),
            lengths.contiguous().numpy(),
            hidden.numpy(),
            identity,
        )
        ctx.save_for_backward(projected, initial, lengths, hidden)
        ctx.gates, ctx.identity = gates, identity
        return hidden

    @staticmethod
    def backward(ctx, grad_hidden):
        projected, initial, lengths, hidden = ctx.saved_tensors
        grad_projected = WORKSPACE.take("d projected", tuple(projected.shape), projected.dtype)
        grad_initial = torch.empty_like(initial)
        kernel = _mingru_backward if ctx.gates == 1 else _minlstm_backward
        kernel(  # type: ignore[call-arg]  # numba's Dispatcher stub
            projected.numpy(),
            initial.numpy(),
            lengths.numpy(),
            hidden.numpy(),
            grad_hidden.detach().to(projected.dtype).contiguous().numpy(),
            grad_projected.numpy(),
            grad_initial.numpy(),
            ctx.identity,
        )
        return grad_projected, grad_initial, None, None, None


if numba is not None:

    @numba.njit(inline="always", error_model="numpy")
    def _candidate(value, one, identity):  # pragma: no cover - compiled
        """``(g(value), g'(value))``."""
        if identity:
            return value, one
        logistic = _sigmoid(value, one)
        if value >= 0:
            return value + one / (one + one), one
        return logistic, logistic * (one - logistic)

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _mingru_forward(projected, initial, lengths, hidden, identity):  # pragma: no cover
        one = projected.dtype.type(1)
        batch, steps, width = hidden.shape
        for row in prange(batch):
            state = initial[row].copy()
            length = lengths[row]
            projected_row, hidden_row = projected[row], hidden[row]
            for t in range(steps):
                hidden_t = hidden_row[t]
                if t >= length:  # padding: a = 1, b = 0
                    for n in range(width):
                        hidden_t[n] = state[n]
                    continue
                projected_t = projected_row[t]
                for n in range(width):
                    update = _sigmoid(projected_t[n], one)
                    candidate, _ = _candidate(projected_t[width + n], one, identity)
                    value = (one - update) * state[n] + update * candidate
                    state[n] = value
                    hidden_t[n] = value

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _mingru_backward(
        projected, initial, lengths, hidden, grad_hidden, grad_projected, grad_initial, identity
    ):  # pragma: no cover - compiled
        one = projected.dtype.type(1)
        batch, steps, width = hidden.shape
        for row in prange(batch):
            carry = np.zeros(width, dtype=hidden.dtype)  # dL/dh_t from the steps after t
            length = lengths[row]
            for t in range(steps - 1, -1, -1):
                grad_t, grad_projected_t = grad_hidden[row, t], grad_projected[row, t]
                if t >= length:
                    for n in range(width):
                        carry[n] += grad_t[n]
                    for n in range(2 * width):
                        grad_projected_t[n] = 0
                    continue
                previous = initial[row] if t == 0 else hidden[row, t - 1]
                projected_t = projected[row, t]
                for n in range(width):
                    grad = grad_t[n] + carry[n]
                    update = _sigmoid(projected_t[n], one)
                    candidate, slope = _candidate(projected_t[width + n], one, identity)
                    grad_projected_t[n] = grad * (candidate - previous[n]) * update * (one - update)
                    grad_projected_t[width + n] = grad * update * slope
                    carry[n] = (one - update) * grad
            for n in range(width):
                grad_initial[row, n] = carry[n]

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _minlstm_forward(projected, initial, lengths, hidden, identity):  # pragma: no cover
        one = projected.dtype.type(1)
        batch, steps, width = hidden.shape
        for row in prange(batch):
            state = initial[row].copy()
            length = lengths[row]
            projected_row, hidden_row = projected[row], hidden[row]
            for t in range(steps):
                hidden_t = hidden_row[t]
                if t >= length:
                    for n in range(width):
                        hidden_t[n] = state[n]
                    continue
                projected_t = projected_row[t]
                for n in range(width):
                    forget = _sigmoid(projected_t[n], one)
                    input_gate = _sigmoid(projected_t[width + n], one)
                    candidate, _ = _candidate(projected_t[2 * width + n], one, identity)
                    total = forget + input_gate
                    value = forget / total * state[n] + input_gate / total * candidate
                    state[n] = value
                    hidden_t[n] = value

    @numba.njit(parallel=True, cache=True, boundscheck=False, fastmath=True, error_model="numpy")
    def _minlstm_backward(
        projected, initial, lengths, hidden, grad_hidden, grad_projected, grad_initial, identity
    ):  # pragma: no cover - compiled
        one = projected.dtype.type(1)
        batch, steps, width = hidden.shape
        for row in prange(batch):
            carry = np.zeros(width, dtype=hidden.dtype)
            length = lengths[row]
            for t in range(steps - 1, -1, -1):
                grad_t, grad_projected_t = grad_hidden[row, t], grad_projected[row, t]
                if t >= length:
                    for n in range(width):
                        carry[n] += grad_t[n]
                    for n in range(3 * width):
                        grad_projected_t[n] = 0
                    continue
                previous = initial[row] if t == 0 else hidden[row, t - 1]
                projected_t = projected[row, t]
                for n in range(width):
                    grad = grad_t[n] + carry[n]
                    forget = _sigmoid(projected_t[n], one)
                    input_gate = _sigmoid(projected_t[width + n], one)
                    candidate, slope = _candidate(projected_t[2 * width + n], one, identity)
                    total = forget + input_gate
                    kept = forget / total  # f' ; i' = 1 - f'
                    # h = f' prev + (1 - f') c: dL/df' = grad (prev - c)
                    grad_kept = grad * (previous[n] - candidate)
                    squared = total * total
                    grad_forget = grad_kept * input_gate / squared
                    grad_input = -grad_kept * forget / squared
                    grad_projected_t[n] = grad_forget * forget * (one - forget)
                    grad_projected_t[width + n] = grad_input * input_gate * (one - input_gate)
                    grad_projected_t[2 * width + n] = grad * (one - kept) * slope
                    carry[n] = kept * grad
            for n in range(width):
                grad_initial[row, n] = carry[n]
