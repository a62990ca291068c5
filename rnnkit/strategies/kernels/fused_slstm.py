"""The fused sLSTM loop (``fused_slstm_cpu.py``) as a differentiable function.

``run_slstm(projected, state, weights, zoneout, lengths, resets)`` takes what ``SLSTMCell``
declares: ``projected (B, T, 4H)`` (its ``project_inputs``: W x + b for i, f, z, o), the state
``(h, c, n, m)`` each ``(B, H)`` and the entries of ``fused_weights()`` by role: ``recurrent``
(``weight_hh (k, 4d, d)``, block-diagonal over k heads of d units) and ``sigmoid_forget``
(True for the sigmoid forget gate, False for the exponential one). The cell has no recurrent
regularization, so ``zoneout`` must be None. ``resets (B, T)``: restart a row from the initial
state before a flagged step.

The backward pass runs the loop in reverse in one compiled call; the gradient of the recurrent
weights is then one batched product over all steps, one matrix per head.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels import fused_slstm_cpu
from rnnkit.strategies.kernels.fused_arrays import as_array, empty, resets_array

SAVED_PER_HIDDEN = {  # saved arrays (T, B, multiple * H) besides the head-major inputs
    "gates": 4,
    "slopes": 3,
    "cells_before": 1,
    "normalizers_before": 1,
    "cells": 1,
    "normalizers": 1,
}


class _FusedSLSTM(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        sigmoid_forget: bool,
        lengths: Tensor,
        resets: Tensor | None,
        projected: Tensor,
        h0: Tensor,
        c0: Tensor,
        n0: Tensor,
        m0: Tensor,
        recurrent: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        batch, steps, width = projected.shape
        heads, head_size = recurrent.shape[0], recurrent.shape[2]
        hidden, dtype = width // 4, projected.dtype
        flags = np.array([resets is not None, sigmoid_forget], dtype=np.int64)
        recurrent_inputs = empty(
            heads, steps, batch, head_size, like=projected, role="slstm recurrent_inputs"
        )
        saved = {
            name: empty(steps, batch, multiple * hidden, like=projected, role=f"slstm {name}")
            for name, multiple in SAVED_PER_HIDDEN.items()
        }
        outputs = empty(batch, steps, hidden, like=projected)
        finals = [torch.empty_like(h0) for _ in range(4)]
        fused_slstm_cpu.slstm_forward(
            as_array(projected, 3, dtype),
            *(as_array(field, 2, dtype) for field in (h0, c0, n0, m0)),
            as_array(recurrent.transpose(1, 2), 3, dtype),  # (k, d, 4d)
            lengths.numpy(),
            resets_array(resets),
            flags,
            outputs.numpy(),
            *(final.numpy() for final in finals),
            recurrent_inputs.numpy(),
            *(tensor.numpy() for tensor in saved.values()),
        )
        ctx.flags = flags
        ctx.save_for_backward(lengths, resets, recurrent, recurrent_inputs, *saved.values())
        h, c, n, m = finals
        return outputs, h, c, n, m

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any,
        grad_outputs: Tensor,
        grad_h: Tensor,
        grad_c: Tensor,
        grad_n: Tensor,
        grad_m: Tensor,
    ):
        lengths, resets, recurrent, recurrent_inputs, *saved = ctx.saved_tensors
        heads, steps, batch, head_size = recurrent_inputs.shape
        width = 4 * heads * head_size
        dtype = recurrent_inputs.dtype
        grad_projected = empty(batch, steps, width, like=recurrent_inputs)
        grad_recurrent = empty(
            heads, steps, batch, 4 * head_size, like=recurrent_inputs, role="slstm grad_recurrent"
        )
        grad_initial = [empty(batch, width // 4, like=recurrent_inputs) for _ in range(4)]
        fused_slstm_cpu.slstm_backward(
            as_array(grad_outputs, 3, dtype),
            *(as_array(grad, 2, dtype) for grad in (grad_h, grad_c, grad_n, grad_m)),
            as_array(recurrent, 3, dtype),
            lengths.numpy(),
            resets_array(resets),
            ctx.flags,
            *(tensor.numpy() for tensor in saved),
            grad_projected.numpy(),
            grad_recurrent.numpy(),
            *(grad.numpy() for grad in grad_initial),
        )
        rows = steps * batch
        grad_weight = torch.bmm(  # (k, 4d, d)
            grad_recurrent.reshape(heads, rows, 4 * head_size).transpose(1, 2),
            recurrent_inputs.reshape(heads, rows, head_size),
        )
        return None, None, None, grad_projected, *grad_initial, grad_weight


def run_slstm(
    projected: Tensor,
    state: tuple[Tensor, Tensor, Tensor, Tensor],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
    """Outputs ``(B, T, H)`` and the final ``(h, c, n, m)``; see the module docstring."""
    if zoneout is not None:
        raise ValueError("the fused sLSTM kernel has no zoneout: the cell has no regularization")
    outputs, h, c, n, m = _FusedSLSTM.apply(
        bool(weights["sigmoid_forget"]),
        lengths,
        resets,
        projected,
        *state,
        weights["recurrent"],
    )
    return outputs, (h, c, n, m)
