"""The fused Elman and Jordan loop (``fused_elman_cpu.py``) as a differentiable function.

``run_elman(projected, state, weights, zoneout, lengths, resets)`` takes what ``ElmanCell`` and
``JordanCell`` declare: ``projected (B, T, H)`` (their ``project_inputs``: W_ih x + b_ih + b_hh),
the state ``(s (B, S),)`` (Elman's h, S = H; Jordan's y, S = O) and the tensors of
``fused_weights()`` by role: ``recurrent`` (W_hh after DropConnect, ``(H, S)``),
``hidden_mask (B, S)`` (recurrent-input dropout, or None), ``nonlinearity`` (``"tanh"``, the
default, or ``"relu"``) and, for Jordan, ``output_weight`` (W_ho ``(O, H)``) and ``output_bias``
(b_ho ``(O)`` or None). ``zoneout``: ``(s (T, B, S),)`` keep-previous weights drawn up front,
``(1, B, S)`` in evaluation (the probability itself), or None. ``resets (B, T)``: restart a row
from the zero state before a flagged step.

The backward pass runs the loop in reverse in one compiled call; the gradients of W_hh, W_ho and
b_ho are then one product or sum each over all steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels import fused_elman_cpu
from rnnkit.strategies.kernels.fused_arrays import as_array, empty, resets_array, zoneout_mode

NONLINEARITIES = {"tanh": fused_elman_cpu.TANH, "relu": fused_elman_cpu.RELU}


class _FusedElman(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        settings: tuple[int, int],
        lengths: Tensor,
        resets: Tensor | None,
        projected: Tensor,
        state0: Tensor,
        recurrent: Tensor,
        output_weight: Tensor | None,
        output_bias: Tensor | None,
        hidden_mask: Tensor | None,
        zoneout: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        batch, steps, hidden = projected.shape
        state_size = state0.shape[1]
        dtype = projected.dtype
        nonlinearity, mode = settings
        use_output = output_weight is not None
        flags = np.array(
            [
                hidden_mask is not None,
                use_output,
                output_bias is not None,
                nonlinearity,
                mode,
                resets is not None,
            ],
            dtype=np.int64,
        )
        output_shape = (steps, batch, state_size) if use_output else (1, 1, 1)  # else unread
        recurrent_inputs = empty(
            steps, batch, state_size, like=projected, role="elman recurrent_inputs"
        )
        hiddens = empty(steps, batch, hidden, like=projected, role="elman hiddens")
        candidates = empty(*output_shape, like=projected, role="elman candidates")
        outputs = empty(batch, steps, state_size, like=projected)
        state_final = torch.empty_like(state0)
        fused_elman_cpu.elman_forward(
            as_array(projected, 3, dtype),
            as_array(state0, 2, dtype),
            as_array(recurrent.t(), 2, dtype),
            as_array(None if output_weight is None else output_weight.t(), 2, dtype),
            as_array(output_bias, 1, dtype),
            as_array(hidden_mask, 2, dtype),
            as_array(zoneout, 3, dtype),
            lengths.numpy(),
            resets_array(resets),
            flags,
            outputs.numpy(),
            state_final.numpy(),
            recurrent_inputs.numpy(),
            hiddens.numpy(),
            candidates.numpy(),
        )
        ctx.flags = flags
        ctx.save_for_backward(
            lengths,
            resets,
            recurrent,
            output_weight,
            hidden_mask,
            zoneout,
            recurrent_inputs,
            hiddens,
            candidates,
        )
        return outputs, state_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_state: Tensor):  # type: ignore[override]
        (
            lengths,
            resets,
            recurrent,
            output_weight,
            hidden_mask,
            zoneout,
            recurrent_inputs,
            hiddens,
            candidates,
        ) = ctx.saved_tensors
        steps, batch, hidden = hiddens.shape
        state_size = recurrent_inputs.shape[2]
        dtype = hiddens.dtype
        use_output = output_weight is not None
        grad_projected = empty(batch, steps, hidden, like=hiddens)
        output_shape = (steps, batch, state_size) if use_output else (1, 1, 1)  # else unread
        # of the pre-activations of u_t and of c_t
        grad_recurrent = empty(steps, batch, hidden, like=hiddens, role="elman grad_recurrent")
        grad_output_pre = empty(*output_shape, like=hiddens, role="elman grad_output_pre")
        grad_state0 = empty(batch, state_size, like=hiddens)
        fused_elman_cpu.elman_backward(
            as_array(grad_outputs, 3, dtype),
            as_array(grad_state, 2, dtype),
            as_array(recurrent, 2, dtype),
            as_array(output_weight, 2, dtype),
            as_array(hidden_mask, 2, dtype),
            as_array(zoneout, 3, dtype),
            lengths.numpy(),
            resets_array(resets),
            ctx.flags,
            hiddens.numpy(),
            candidates.numpy(),
            grad_projected.numpy(),
            grad_recurrent.numpy(),
            grad_output_pre.numpy(),
            grad_state0.numpy(),
        )
        needs = ctx.needs_input_grad
        rows = steps * batch
        grad_weight = grad_output_weight = grad_output_bias = None
        if needs[5]:
            grad_weight = grad_recurrent.reshape(rows, hidden).t() @ recurrent_inputs.reshape(
                rows, state_size
            )
        if use_output and needs[6]:
            grad_output_weight = grad_output_pre.reshape(rows, state_size).t() @ hiddens.reshape(
                rows, hidden
            )
        if use_output and needs[7]:
            grad_output_bias = grad_output_pre.sum((0, 1))
        return (
            None,
            None,
            None,
            grad_projected,
            grad_state0,
            grad_weight,
            grad_output_weight,
            grad_output_bias,
            None,
            None,
        )


def run_elman(
    projected: Tensor,
    state: tuple[Tensor, ...],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor]]:
    """Outputs ``(B, T, S)`` and the final ``(s,)``; see the module docstring."""
    settings = (NONLINEARITIES[weights.get("nonlinearity", "tanh")], zoneout_mode(zoneout))
    outputs, final = _FusedElman.apply(
        settings,
        lengths,
        resets,
        projected,
        state[0],
        weights["recurrent"],
        weights.get("output_weight"),
        weights.get("output_bias"),
        weights.get("hidden_mask"),
        None if zoneout is None else zoneout[0],
    )
    return outputs, (final,)
