"""The fused sLSTM loop (``fused_slstm_cpu.py``) as a differentiable function.

``run_slstm(projected, state, weights, zoneout, lengths, resets)`` takes what ``SLSTMCell``
declares: ``projected (B, T, 4H)`` (its ``project_inputs``: W x + b for i, f, z, o), the state
``(h, c, n, m)`` each ``(B, H)`` and the entries of ``fused_weights()`` by role: ``recurrent``
(``weight_hh (k, 4d, d)``, block-diagonal over k heads of d units) and ``sigmoid_forget``
(True for the sigmoid forget gate, False for the exponential one). The cell has no recurrent
regularization, so ``zoneout`` must be None. ``resets (B, T)``: restart a row from the zero
state before a flagged step.

The batch is split into one block of rows per thread torch may use (``row_chunks``), each
running the whole loop on its own thread. The backward pass runs the
loop in reverse in one compiled call per block; the gradient of the recurrent weights is then
one batched product per block over all its steps, one matrix per head.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels import fused_slstm_cpu
from rnnkit.strategies.kernels.fused_arrays import (
    as_array,
    empty,
    for_each_chunk,
    resets_array,
    row_chunks,
    rows_array,
)

SAVED_PER_HIDDEN = {  # saved (T, b, multiple * H) per chunk of b rows, read by the backward loop
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
        dtype = projected.dtype
        flags = np.array([resets is not None, sigmoid_forget], dtype=np.int64)
        chunks = row_chunks(batch)
        saved = [
            _saved_buffers(steps, rows.stop - rows.start, recurrent.shape, projected, index)
            for index, rows in enumerate(chunks)
        ]
        outputs = empty(batch, steps, width // 4, like=projected)
        finals = [torch.empty_like(h0) for _ in range(4)]
        final_arrays = [final.numpy() for final in finals]
        outputs_array = outputs.numpy()
        weight_t = as_array(recurrent.transpose(1, 2), 3, dtype)  # (k, d, 4d)

        def work(index: int, rows: slice) -> None:
            fused_slstm_cpu.slstm_forward(
                rows_array(projected, rows, 3, dtype),
                *(rows_array(field, rows, 2, dtype) for field in (h0, c0, n0, m0)),
                weight_t,
                lengths[rows].numpy(),
                resets_array(None if resets is None else resets[rows]),
                flags,
                outputs_array[rows],
                *(final[rows] for final in final_arrays),
                *(tensor.numpy() for tensor in saved[index].values()),
            )

        for_each_chunk(work, chunks)
        ctx.flags, ctx.chunks, ctx.saved_chunks = flags, chunks, saved
        ctx.save_for_backward(lengths, resets, recurrent)
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
        lengths, resets, recurrent = ctx.saved_tensors
        batch, steps, hidden = grad_outputs.shape
        heads, head_size = recurrent.shape[0], recurrent.shape[2]
        dtype = recurrent.dtype
        grad_projected = empty(batch, steps, 4 * hidden, like=recurrent)
        grad_initial = [empty(batch, hidden, like=recurrent) for _ in range(4)]
        grad_recurrent = [
            empty(
                heads,
                steps,
                rows.stop - rows.start,
                4 * head_size,
                like=recurrent,
                role=f"slstm grad_recurrent {index}",
            )
            for index, rows in enumerate(ctx.chunks)
        ]
        weight = as_array(recurrent, 3, dtype)
        grad_projected_array = grad_projected.numpy()
        grad_initial_arrays = [grad.numpy() for grad in grad_initial]

        def work(index: int, rows: slice) -> None:
            saved = ctx.saved_chunks[index]
            fused_slstm_cpu.slstm_backward(
                rows_array(grad_outputs, rows, 3, dtype),
                *(rows_array(grad, rows, 2, dtype) for grad in (grad_h, grad_c, grad_n, grad_m)),
                weight,
                lengths[rows].numpy(),
                resets_array(None if resets is None else resets[rows]),
                ctx.flags,
                *(saved[name].numpy() for name in SAVED_PER_HIDDEN),
                grad_projected_array[rows],
                grad_recurrent[index].numpy(),
                *(grad[rows] for grad in grad_initial_arrays),
            )

        for_each_chunk(work, ctx.chunks)
        grad_weight = sum(  # (k, 4d, d): one batched product per chunk over all its steps
            torch.bmm(
                gradient.flatten(1, 2).transpose(1, 2),
                saved["recurrent_inputs"].flatten(1, 2),
            )
            for gradient, saved in zip(grad_recurrent, ctx.saved_chunks, strict=True)
        )
        return None, None, None, grad_projected, *grad_initial, grad_weight


def _saved_buffers(
    steps: int, rows: int, weight_shape: torch.Size, like: Tensor, chunk: int
) -> dict[str, Tensor]:
    """What the forward loop of one chunk of rows saves, time-major (``fused_slstm_cpu.py``):
    the head-major ``recurrent_inputs (k, T, b, d)``, then ``SAVED_PER_HIDDEN``."""
    heads, head_size = weight_shape[0], weight_shape[2]
    hidden = heads * head_size
    shapes: dict[str, tuple[int, ...]] = {"recurrent_inputs": (heads, steps, rows, head_size)}
    shapes.update(
        {name: (steps, rows, multiple * hidden) for name, multiple in SAVED_PER_HIDDEN.items()}
    )
    return {
        name: empty(*shape, like=like, role=f"slstm {name} {chunk}")
        for name, shape in shapes.items()
    }


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
