"""The fused LSTM loop (``fused_lstm_cpu.py``) as a differentiable function.

``run_lstm(projected, state, weights, zoneout, lengths)`` takes what ``LSTMCell`` declares:
``projected (B, T, 4H)`` (its ``project_inputs``), the state ``(h (B, R), c (B, H))`` and the
tensors of ``fused_weights()`` by role: ``recurrent`` (W_hh after DropConnect, ``(4H, R)``) and,
where the cell has them, ``hidden_mask (B, R)`` (recurrent-input dropout), ``peephole (3, H)``
(w_ci, w_cf, w_co), ``norm_hidden (4H)``, ``norm_cell_weight (H)``, ``norm_cell_bias (H)`` with
the floats ``norm_hidden_eps`` and ``norm_cell_eps`` (layer norm), ``projection (R, H)``
(W_hr). ``zoneout``: per state field the keep-previous weights ``(T, B, size)`` drawn up front,
or ``(1, B, size)`` (evaluation: the probability itself), or None.

The backward pass runs the loop in reverse in one compiled call; the gradients of W_hh, W_hr,
the peepholes and the layer-norm gains are then one large product or reduction each over all
steps, not one per step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels import fused_lstm_cpu
from rnnkit.strategies.kernels.fused_arrays import (
    as_array,
    empty,
    numpy_dtype,
    resets_array,
    zoneout_mode,
)

OPTIONAL_ROLES = (
    "peephole",
    "norm_hidden",
    "norm_cell_weight",
    "norm_cell_bias",
    "projection",
    "hidden_mask",
)


class _FusedLSTM(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        settings: tuple[float, float, int],
        lengths: Tensor,
        resets: Tensor | None,
        projected: Tensor,
        h0: Tensor,
        c0: Tensor,
        recurrent: Tensor,
        peephole: Tensor | None,
        norm_hidden: Tensor | None,
        norm_cell_weight: Tensor | None,
        norm_cell_bias: Tensor | None,
        projection: Tensor | None,
        hidden_mask: Tensor | None,
        zoneout_h: Tensor | None,
        zoneout_c: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        batch, steps, width = projected.shape
        hidden, recurrent_size = width // 4, h0.shape[1]
        use_norm = norm_hidden is not None
        dtype = projected.dtype
        flags = np.array(
            [
                hidden_mask is not None,
                peephole is not None,
                use_norm,
                projection is not None,
                settings[2],
                resets is not None,
            ],
            dtype=np.int64,
        )
        norm_shape = (steps, batch) if use_norm else (1, 1)  # placeholders without layer norm
        shapes = {
            "recurrent_inputs": (steps, batch, recurrent_size),
            "gates": (steps, batch, width),
            "cells_before": (steps, batch, hidden),
            "cells": (steps, batch, hidden),
            "cell_outputs": (steps, batch, hidden),
            "hiddens": (steps, batch, hidden),
            "normalized_recurrent": (*norm_shape, width if use_norm else 1),
            "normalized_cells": (*norm_shape, hidden if use_norm else 1),
            "inverse_stds": (*norm_shape, 2 if use_norm else 1),
        }
        saved = {
            name: empty(*shape, like=projected, role=f"lstm {name}")
            for name, shape in shapes.items()
        }
        outputs = empty(batch, steps, recurrent_size, like=projected)
        h_final, c_final = torch.empty_like(h0), torch.empty_like(c0)
        fused_lstm_cpu.lstm_forward(
            as_array(projected, 3, dtype),
            as_array(h0, 2, dtype),
            as_array(c0, 2, dtype),
            as_array(recurrent.t(), 2, dtype),
            as_array(hidden_mask, 2, dtype),
            as_array(peephole, 2, dtype),
            as_array(norm_hidden, 1, dtype),
            as_array(norm_cell_weight, 1, dtype),
            as_array(norm_cell_bias, 1, dtype),
            np.array(settings[:2], dtype=numpy_dtype(dtype)),
            as_array(None if projection is None else projection.t(), 2, dtype),
            as_array(zoneout_h, 3, dtype),
            as_array(zoneout_c, 3, dtype),
            lengths.numpy(),
            resets_array(resets),
            flags,
            outputs.numpy(),
            h_final.numpy(),
            c_final.numpy(),
            *(tensor.numpy() for tensor in saved.values()),
        )
        ctx.settings, ctx.flags = settings, flags
        ctx.save_for_backward(
            lengths,
            resets,
            recurrent,
            peephole,
            norm_hidden,
            norm_cell_weight,
            projection,
            hidden_mask,
            zoneout_h,
            zoneout_c,
            *saved.values(),
        )
        return outputs, h_final, c_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_h: Tensor, grad_c: Tensor):  # type: ignore[override]
        (
            lengths,
            resets,
            recurrent,
            peephole,
            norm_hidden,
            norm_cell_weight,
            projection,
            hidden_mask,
            zoneout_h,
            zoneout_c,
            recurrent_inputs,
            gates,
            cells_before,
            cells,
            cell_outputs,
            hiddens,
            normalized_recurrent,
            normalized_cells,
            inverse_stds,
        ) = ctx.saved_tensors
        steps, batch, width = gates.shape
        hidden, recurrent_size = width // 4, recurrent_inputs.shape[2]
        dtype = gates.dtype
        grad_projected = empty(batch, steps, width, like=gates)
        grad_recurrent = empty(steps, batch, width, like=gates, role="lstm grad_recurrent")
        grad_hidden_outputs = empty(
            steps, batch, recurrent_size, like=gates, role="lstm grad_hidden_outputs"
        )
        grad_cell_outputs = empty(steps, batch, hidden, like=gates, role="lstm grad_cell_outputs")
        grad_h0 = empty(batch, recurrent_size, like=gates)
        grad_c0 = empty(batch, hidden, like=gates)
        fused_lstm_cpu.lstm_backward(
            as_array(grad_outputs, 3, dtype),
            as_array(grad_h, 2, dtype),
            as_array(grad_c, 2, dtype),
            as_array(recurrent, 2, dtype),
            as_array(hidden_mask, 2, dtype),
            as_array(peephole, 2, dtype),
            as_array(norm_hidden, 1, dtype),
            as_array(norm_cell_weight, 1, dtype),
            as_array(projection, 2, dtype),
            as_array(zoneout_h, 3, dtype),
            as_array(zoneout_c, 3, dtype),
            lengths.numpy(),
            resets_array(resets),
            ctx.flags,
            gates.numpy(),
            cells_before.numpy(),
            cell_outputs.numpy(),
            normalized_recurrent.numpy(),
            normalized_cells.numpy(),
            inverse_stds.numpy(),
            grad_projected.numpy(),
            grad_recurrent.numpy(),
            grad_hidden_outputs.numpy(),
            grad_cell_outputs.numpy(),
            grad_h0.numpy(),
            grad_c0.numpy(),
        )
        needs = ctx.needs_input_grad
        rows = steps * batch
        grad_weight = grad_recurrent.reshape(rows, width).t() @ recurrent_inputs.reshape(rows, -1)
        grad_peephole = grad_norm_hidden = grad_norm_weight = grad_norm_bias = None
        grad_projection = None
        if peephole is not None and needs[6]:
            by_time = grad_projected.transpose(0, 1)  # (T, B, 4H)
            grad_peephole = torch.stack(
                [
                    (by_time[..., :hidden] * cells_before).sum((0, 1)),
                    (by_time[..., hidden : 2 * hidden] * cells_before).sum((0, 1)),
                    (by_time[..., 3 * hidden :] * cells).sum((0, 1)),
                ]
            )
        if norm_hidden is not None:
            by_time = grad_projected.transpose(0, 1)
            grad_norm_hidden = (by_time * normalized_recurrent).sum((0, 1))
            grad_norm_weight = (grad_cell_outputs * normalized_cells).sum((0, 1))
            grad_norm_bias = grad_cell_outputs.sum((0, 1))
        if projection is not None:
            grad_projection = grad_hidden_outputs.reshape(rows, -1).t() @ hiddens.reshape(rows, -1)
        return (
            None,
            None,
            None,
            grad_projected,
            grad_h0,
            grad_c0,
            grad_weight,
            grad_peephole,
            grad_norm_hidden,
            grad_norm_weight,
            grad_norm_bias,
            grad_projection,
            None,
            None,
            None,
        )


def run_lstm(
    projected: Tensor,
    state: tuple[Tensor, Tensor],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Outputs ``(B, T, R)`` and the final ``(h, c)``; see the module docstring."""
    settings = (
        float(weights.get("norm_hidden_eps", 0.0)),
        float(weights.get("norm_cell_eps", 0.0)),
        zoneout_mode(zoneout),
    )
    zoneout_h, zoneout_c = zoneout if zoneout is not None else (None, None)
    outputs, h, c = _FusedLSTM.apply(
        settings,
        lengths,
        resets,
        projected,
        state[0],
        state[1],
        weights["recurrent"],
        *(weights.get(role) for role in OPTIONAL_ROLES),
        zoneout_h,
        zoneout_c,
    )
    return outputs, (h, c)
