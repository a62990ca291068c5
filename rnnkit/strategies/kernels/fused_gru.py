"""The fused GRU loop (``fused_gru_cpu.py``) as a differentiable function.

``run_gru(projected, state, weights, zoneout, lengths, resets)`` takes what ``GRUCell``
declares: ``projected (B, T, 3H)`` (its ``project_inputs``: W_ih x + b_ih), the state
``(h (B, H),)`` and the tensors of ``fused_weights()`` by role: ``recurrent`` (W_hh after
DropConnect, ``(3H, H)``), ``recurrent_bias`` (b_hh ``(3H)``, inside the recurrent product since
the reset gate multiplies it, or None) and ``hidden_mask (B, H)`` (recurrent-input dropout, or
None). ``zoneout``: ``(h (T, B, H),)`` keep-previous weights drawn up front, ``(1, B, H)`` in
evaluation (the probability itself), or None. ``resets (B, T)``: restart a row from the initial
state before a flagged step.

The backward pass runs the loop in reverse in one compiled call; the gradients of W_hh and b_hh
are then one product and one sum over all steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels import fused_gru_cpu
from rnnkit.strategies.kernels.fused_arrays import as_array, empty, resets_array, zoneout_mode


class _FusedGRU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        mode: int,
        lengths: Tensor,
        resets: Tensor | None,
        projected: Tensor,
        h0: Tensor,
        recurrent: Tensor,
        recurrent_bias: Tensor | None,
        hidden_mask: Tensor | None,
        zoneout: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        batch, steps, width = projected.shape
        hidden = width // 3
        dtype = projected.dtype
        flags = np.array(
            [hidden_mask is not None, recurrent_bias is not None, mode, resets is not None],
            dtype=np.int64,
        )
        recurrent_inputs = empty(steps, batch, hidden, like=projected, role="gru recurrent_inputs")
        # without a dropout mask the recurrent input is h_{t-1} itself: one array for both
        previous = recurrent_inputs
        if hidden_mask is not None:
            previous = empty(steps, batch, hidden, like=projected, role="gru previous")
        gates = empty(steps, batch, width, like=projected, role="gru gates")
        recurrent_candidates = empty(
            steps, batch, hidden, like=projected, role="gru recurrent_candidates"
        )
        outputs = empty(batch, steps, hidden, like=projected)
        h_final = torch.empty_like(h0)
        fused_gru_cpu.gru_forward(
            as_array(projected, 3, dtype),
            as_array(h0, 2, dtype),
            as_array(recurrent.t(), 2, dtype),
            as_array(recurrent_bias, 1, dtype),
            as_array(hidden_mask, 2, dtype),
            as_array(zoneout, 3, dtype),
            lengths.numpy(),
            resets_array(resets),
            flags,
            outputs.numpy(),
            h_final.numpy(),
            recurrent_inputs.numpy(),
            previous.numpy(),
            gates.numpy(),
            recurrent_candidates.numpy(),
        )
        ctx.flags = flags
        ctx.save_for_backward(
            lengths,
            resets,
            recurrent,
            hidden_mask,
            zoneout,
            recurrent_inputs,
            previous,
            gates,
            recurrent_candidates,
        )
        return outputs, h_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_h: Tensor):  # type: ignore[override]
        (
            lengths,
            resets,
            recurrent,
            hidden_mask,
            zoneout,
            recurrent_inputs,
            previous,
            gates,
            recurrent_candidates,
        ) = ctx.saved_tensors
        steps, batch, width = gates.shape
        dtype = gates.dtype
        grad_projected = empty(batch, steps, width, like=gates)
        # of W_hh h + b_hh
        grad_recurrent = empty(steps, batch, width, like=gates, role="gru grad_recurrent")
        grad_h0 = empty(batch, width // 3, like=gates)
        fused_gru_cpu.gru_backward(
            as_array(grad_outputs, 3, dtype),
            as_array(grad_h, 2, dtype),
            as_array(recurrent, 2, dtype),
            as_array(hidden_mask, 2, dtype),
            as_array(zoneout, 3, dtype),
            lengths.numpy(),
            resets_array(resets),
            ctx.flags,
            previous.numpy(),
            gates.numpy(),
            recurrent_candidates.numpy(),
            grad_projected.numpy(),
            grad_recurrent.numpy(),
            grad_h0.numpy(),
        )
        needs = ctx.needs_input_grad
        rows = steps * batch
        grad_weight = grad_bias = None
        if needs[5]:
            grad_weight = grad_recurrent.reshape(rows, width).t() @ recurrent_inputs.reshape(
                rows, -1
            )
        if needs[6]:
            grad_bias = grad_recurrent.sum((0, 1))
        return None, None, None, grad_projected, grad_h0, grad_weight, grad_bias, None, None


def run_gru(
    projected: Tensor,
    state: tuple[Tensor, ...],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor]]:
    """Outputs ``(B, T, H)`` and the final ``(h,)``; see the module docstring."""
    outputs, h = _FusedGRU.apply(
        zoneout_mode(zoneout),
        lengths,
        resets,
        projected,
        state[0],
        weights["recurrent"],
        weights.get("recurrent_bias"),
        weights.get("hidden_mask"),
        None if zoneout is None else zoneout[0],
    )
    return outputs, (h,)
