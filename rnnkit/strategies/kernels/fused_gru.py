"""The fused GRU loop (``fused_gru_cpu.py``) as a differentiable function.

``run_gru(projected, state, weights, zoneout, lengths, resets)`` takes what ``GRUCell``
declares: ``projected (B, T, 3H)`` (its ``project_inputs``: W_ih x + b_ih), the state
``(h (B, H),)`` and the tensors of ``fused_weights()`` by role: ``recurrent`` (W_hh after
DropConnect, ``(3H, H)``), ``recurrent_bias`` (b_hh ``(3H)``, inside the recurrent product since
the reset gate multiplies it, or None) and ``hidden_mask (B, H)`` (recurrent-input dropout, or
None). ``zoneout``: ``(h (T, B, H),)`` keep-previous weights drawn up front, ``(1, B, H)`` in
evaluation (the probability itself), or None. ``resets (B, T)``: restart a row from the zero
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
from rnnkit.strategies.kernels.fused_arrays import (
    as_array,
    empty,
    for_each_chunk,
    resets_array,
    row_chunks,
    rows_array,
    zoneout_mode,
)


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
        chunks = row_chunks(batch)
        saved = [
            _saved_buffers(
                steps, rows.stop - rows.start, width, hidden_mask is not None, projected, index
            )
            for index, rows in enumerate(chunks)
        ]
        outputs = empty(batch, steps, hidden, like=projected)
        h_final = torch.empty_like(h0)
        weight_t = as_array(recurrent.t(), 2, dtype)
        outputs_array, h_array = outputs.numpy(), h_final.numpy()

        def work(index: int, rows: slice) -> None:
            fused_gru_cpu.gru_forward(
                rows_array(projected, rows, 3, dtype),
                rows_array(h0, rows, 2, dtype),
                weight_t,
                as_array(recurrent_bias, 1, dtype),
                rows_array(hidden_mask, rows, 2, dtype),
                rows_array(zoneout, rows, 3, dtype, axis=1),
                lengths[rows].numpy(),
                resets_array(None if resets is None else resets[rows]),
                flags,
                outputs_array[rows],
                h_array[rows],
                *(tensor.numpy() for tensor in saved[index].values()),
            )

        for_each_chunk(work, chunks)
        ctx.flags, ctx.chunks, ctx.saved_chunks = flags, chunks, saved
        ctx.save_for_backward(lengths, resets, recurrent, hidden_mask, zoneout)
        return outputs, h_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_h: Tensor):  # type: ignore[override]
        lengths, resets, recurrent, hidden_mask, zoneout = ctx.saved_tensors
        batch, steps, hidden = grad_outputs.shape
        width = recurrent.shape[0]
        dtype = recurrent.dtype
        grad_projected = empty(batch, steps, width, like=recurrent)
        grad_h0 = empty(batch, hidden, like=recurrent)
        # d (W_hh h + b_hh) per chunk, for the products after the loop
        grad_recurrents = [
            empty(
                steps,
                rows.stop - rows.start,
                width,
                like=recurrent,
                role=f"gru grad_recurrent {index}",
            )
            for index, rows in enumerate(ctx.chunks)
        ]
        weight = as_array(recurrent, 2, dtype)
        grad_projected_array, grad_h0_array = grad_projected.numpy(), grad_h0.numpy()

        def work(index: int, rows: slice) -> None:
            saved = ctx.saved_chunks[index]
            fused_gru_cpu.gru_backward(
                rows_array(grad_outputs, rows, 3, dtype),
                rows_array(grad_h, rows, 2, dtype),
                weight,
                rows_array(hidden_mask, rows, 2, dtype),
                rows_array(zoneout, rows, 3, dtype, axis=1),
                lengths[rows].numpy(),
                resets_array(None if resets is None else resets[rows]),
                ctx.flags,
                saved["previous"].numpy(),
                saved["gates"].numpy(),
                saved["recurrent_candidates"].numpy(),
                grad_projected_array[rows],
                grad_recurrents[index].numpy(),
                grad_h0_array[rows],
            )

        for_each_chunk(work, ctx.chunks)
        needs = ctx.needs_input_grad
        grad_weight = grad_bias = None
        for saved, grad_recurrent in zip(ctx.saved_chunks, grad_recurrents, strict=True):
            count = grad_recurrent.shape[0] * grad_recurrent.shape[1]
            if needs[5]:
                term = grad_recurrent.reshape(count, width).t() @ saved["recurrent_inputs"].reshape(
                    count, -1
                )
                grad_weight = term if grad_weight is None else grad_weight + term
            if needs[6]:
                bias_term = grad_recurrent.sum((0, 1))
                grad_bias = bias_term if grad_bias is None else grad_bias + bias_term
        return None, None, None, grad_projected, grad_h0, grad_weight, grad_bias, None, None


def _saved_buffers(
    steps: int, rows: int, width: int, masked: bool, like: Tensor, chunk: int
) -> dict[str, Tensor]:
    """What the forward loop of one chunk of rows saves, time-major, in the kernel's order."""
    hidden = width // 3
    recurrent_inputs = empty(steps, rows, hidden, like=like, role=f"gru recurrent_inputs {chunk}")
    # without a dropout mask the recurrent input is h_{t-1} itself: one array for both
    previous = recurrent_inputs
    if masked:
        previous = empty(steps, rows, hidden, like=like, role=f"gru previous {chunk}")
    return {
        "recurrent_inputs": recurrent_inputs,
        "previous": previous,
        "gates": empty(steps, rows, width, like=like, role=f"gru gates {chunk}"),
        "recurrent_candidates": empty(
            steps, rows, hidden, like=like, role=f"gru recurrent_candidates {chunk}"
        ),
    }


def run_gru(
    projected: Tensor,
    state: tuple[Tensor, ...],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor]]:
    """Outputs ``(B, T, H)`` and the final ``(h,)``; see the module docstring. CUDA tensors
    run the Triton kernels (``triton_fused_gru.py``), which refuse the options they lack."""
    if projected.device.type == "cuda":
        from rnnkit.strategies.kernels import triton_fused_gru  # imports Triton: only when used

        return triton_fused_gru.run_gru_triton(projected, state, weights, zoneout, lengths, resets)
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
