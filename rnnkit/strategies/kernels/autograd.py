"""Autograd for scan kernels that do not record a graph (compiled CPU, Triton).

For ``h_t = a_t h_{t-1} + b_t`` (forward) with loss gradient ``G_t = dL/dh_t``, the total
gradient reaching h_t obeys the same recurrence in reverse,

    g_t = G_t + conj(a_{t+1}) g_{t+1},        g_{T+1} = 0,

and then ``dL/db_t = g_t``, ``dL/da_t = g_t conj(h_{t-1})`` and ``dL/dh_0 = conj(a_1) g_1``
(PyTorch's convention for complex gradients). A reverse scan mirrors this with time flipped.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

RawScan = Callable[[Tensor, Tensor, "Tensor | None", bool], Tensor]


class ScanFunction(torch.autograd.Function):
    """Differentiable wrapper of a raw scan ``raw(a, b, initial, reverse) -> h``."""

    @staticmethod
    def forward(
        ctx, raw: RawScan, fused_backward, a: Tensor, b: Tensor, initial: Tensor, reverse: bool
    ):
        a = a.expand_as(b)
        h = raw(a, b, initial, reverse)
        ctx.save_for_backward(a, initial, h)
        ctx.raw, ctx.fused_backward, ctx.reverse = raw, fused_backward, reverse
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, initial, h = ctx.saved_tensors
        reverse = ctx.reverse
        if ctx.fused_backward is not None:
            grad_a, grad_b, grad_initial = ctx.fused_backward(a, h, initial, grad_h, reverse)
            if not a.is_complex() and grad_a.is_complex():
                grad_a = grad_a.real
            return None, None, grad_a, grad_b, grad_initial, None
        conj_a = a.conj()
        # coefficient multiplying g_{t+1} (forward) or g_{t-1} (reverse) at step t
        shifted = torch.zeros_like(conj_a)
        if reverse:
            shifted[:, 1:] = conj_a[:, :-1]
        else:
            shifted[:, :-1] = conj_a[:, 1:]
        g = ctx.raw(shifted, grad_h.contiguous(), None, not reverse)
        previous = torch.empty_like(h)  # h_{t-1} (forward) or h_{t+1} (reverse)
        if reverse:
            previous[:, :-1] = h[:, 1:]
            previous[:, -1] = initial
            grad_initial = conj_a[:, -1] * g[:, -1]
        else:
            previous[:, 1:] = h[:, :-1]
            previous[:, 0] = initial
            grad_initial = conj_a[:, 0] * g[:, 0]
        grad_a = g * previous.conj()
        if not a.is_complex() and grad_a.is_complex():
            grad_a = grad_a.real
        return None, None, grad_a, g, grad_initial, None


def differentiable(raw: RawScan, fused_backward: Callable | None = None) -> Callable[..., Tensor]:
    """Turn a raw scan into ``scan(a, b, initial=None, reverse=False)`` with gradients;
    ``fused_backward(a, h, initial, grad_h, reverse) -> (grad_a, grad_b, grad_initial)`` replaces
    the reverse scan and its separate passes when a kernel provides it."""

    def scan(a: Tensor, b: Tensor, initial: Tensor | None = None, reverse: bool = False) -> Tensor:
        if initial is None:
            initial = torch.zeros_like(b[:, 0])
        return ScanFunction.apply(raw, fused_backward, a, b, initial.to(b.dtype), reverse)

    return scan
