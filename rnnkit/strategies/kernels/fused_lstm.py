"""The fused LSTM loop (``fused_lstm_cpu.py``) as a differentiable function.

``run_lstm(projected, state, weights, zoneout, lengths)`` takes what ``LSTMCell`` declares:
``projected (B, T, 4H)`` (its ``fused_projection``), the state ``(h (B, R), c (B, H))`` and
the tensors of ``fused_weights()`` by role: ``recurrent`` (W_hh after DropConnect, ``(4H, R)``)
and, where the cell has them, ``hidden_mask (B, R)`` (recurrent-input dropout), ``peephole (3,
H)`` (w_ci, w_cf, w_co), ``norm_hidden (4H)``, ``norm_cell_weight (H)``, ``norm_cell_bias (H)``
with the floats ``norm_hidden_eps`` and ``norm_cell_eps`` (layer norm), ``projection (R, H)``
(W_hr), and ``norm_input (4H)``, ``input_shift (4H)`` with ``norm_input_eps``: with these,
``projected`` is ``W_ih x`` before its layer norm, which the loop applies per row (``LN(W_ih x)
norm_input + input_shift``, the shift being the summed biases), so that the normalization reads
the row the step reads anyway instead of a pass of its own over ``(B, T, 4H)``. ``zoneout``:
per state field the keep-previous weights ``(T, B, size)`` drawn up front,
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
    for_each_chunk,
    numpy_dtype,
    resets_array,
    row_chunks,
    rows_array,
    zoneout_mode,
)

OPTIONAL_ROLES = (
    "peephole",
    "norm_hidden",
    "norm_cell_weight",
    "norm_cell_bias",
    "projection",
    "hidden_mask",
    "norm_input",
    "input_shift",
)


class _FusedLSTM(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        settings: tuple[float, float, int, float],
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
        norm_input: Tensor | None,
        input_shift: Tensor | None,
        zoneout_h: Tensor | None,
        zoneout_c: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        batch, steps, width = projected.shape
        recurrent_size = h0.shape[1]
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
                norm_input is not None,
            ],
            dtype=np.int64,
        )
        chunks = row_chunks(batch)
        saved = [
            _saved_buffers(
                steps,
                rows.stop - rows.start,
                width,
                recurrent_size,
                (use_norm, norm_input is not None),
                projected,
                index,
            )
            for index, rows in enumerate(chunks)
        ]
        outputs = empty(batch, steps, recurrent_size, like=projected, role="lstm outputs")
        h_final, c_final = torch.empty_like(h0), torch.empty_like(c0)
        weight_t = as_array(recurrent.t(), 2, dtype)
        projection_t = as_array(None if projection is None else projection.t(), 2, dtype)
        eps = np.array([settings[0], settings[1], settings[3]], dtype=numpy_dtype(dtype))
        outputs_array, h_array, c_array = outputs.numpy(), h_final.numpy(), c_final.numpy()

        def work(index: int, rows: slice) -> None:
            fused_lstm_cpu.lstm_forward(
                rows_array(projected, rows, 3, dtype),
                rows_array(h0, rows, 2, dtype),
                rows_array(c0, rows, 2, dtype),
                weight_t,
                rows_array(hidden_mask, rows, 2, dtype),
                as_array(peephole, 2, dtype),
                as_array(norm_hidden, 1, dtype),
                as_array(norm_cell_weight, 1, dtype),
                as_array(norm_cell_bias, 1, dtype),
                as_array(norm_input, 1, dtype),
                as_array(input_shift, 1, dtype),
                eps,
                projection_t,
                rows_array(zoneout_h, rows, 3, dtype, axis=1),
                rows_array(zoneout_c, rows, 3, dtype, axis=1),
                lengths[rows].numpy(),
                resets_array(None if resets is None else resets[rows]),
                flags,
                outputs_array[rows],
                h_array[rows],
                c_array[rows],
                *(tensor.numpy() for tensor in saved[index].values()),
            )

        for_each_chunk(work, chunks)
        ctx.settings, ctx.flags, ctx.chunks, ctx.saved_chunks = settings, flags, chunks, saved
        ctx.save_for_backward(
            lengths,
            resets,
            recurrent,
            peephole,
            norm_hidden,
            norm_cell_weight,
            projection,
            hidden_mask,
            norm_input,
            zoneout_h,
            zoneout_c,
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
            norm_input,
            zoneout_h,
            zoneout_c,
        ) = ctx.saved_tensors
        batch, steps, recurrent_size = grad_outputs.shape
        width = recurrent.shape[0]
        dtype = recurrent.dtype
        # from the workspace: a fresh (B, T, 4H) tensor page-faults through all of it (4.3 ms
        # of a 16 MB buffer's 5.2 ms to allocate and fill, one thread)
        grad_projected = empty(batch, steps, width, like=recurrent, role="lstm grad_projected")
        grad_h0 = empty(batch, recurrent_size, like=recurrent)
        grad_c0 = empty(batch, width // 4, like=recurrent)
        gradients = [
            _gradient_buffers(
                steps, rows.stop - rows.start, width, recurrent_size, recurrent, index
            )
            for index, rows in enumerate(ctx.chunks)
        ]
        weight, projection_array = as_array(recurrent, 2, dtype), as_array(projection, 2, dtype)
        # per chunk: the peephole and layer-norm gain gradients, summed in the loop
        sums = [torch.zeros(8, width, dtype=dtype) for _ in ctx.chunks]
        grad_projected_array = grad_projected.numpy()
        grad_h0_array, grad_c0_array = grad_h0.numpy(), grad_c0.numpy()

        def work(index: int, rows: slice) -> None:
            saved = ctx.saved_chunks[index]
            fused_lstm_cpu.lstm_backward(
                rows_array(grad_outputs, rows, 3, dtype),
                rows_array(grad_h, rows, 2, dtype),
                rows_array(grad_c, rows, 2, dtype),
                weight,
                rows_array(hidden_mask, rows, 2, dtype),
                as_array(peephole, 2, dtype),
                as_array(norm_hidden, 1, dtype),
                as_array(norm_cell_weight, 1, dtype),
                as_array(norm_input, 1, dtype),
                projection_array,
                rows_array(zoneout_h, rows, 3, dtype, axis=1),
                rows_array(zoneout_c, rows, 3, dtype, axis=1),
                lengths[rows].numpy(),
                resets_array(None if resets is None else resets[rows]),
                ctx.flags,
                *(saved[name].numpy() for name in BACKWARD_READS),
                sums[index].numpy(),
                grad_projected_array[rows],
                *(tensor.numpy() for tensor in gradients[index].values()),
                grad_h0_array[rows],
                grad_c0_array[rows],
            )

        for_each_chunk(work, ctx.chunks)
        summed = torch.stack(sums).sum(0)
        grads = _parameter_gradients(
            ctx.saved_chunks, gradients, summed, peephole, norm_hidden, projection
        )
        grad_input = (None, None) if norm_input is None else (summed[6], summed[7])
        return (
            *(None, None, None, grad_projected, grad_h0, grad_c0),
            *grads,
            None,  # hidden_mask
            *grad_input,
            None,  # zoneout masks
            None,
        )


BACKWARD_READS = (
    "gates",
    "cells_before",
    "cells",
    "cell_outputs",
    "normalized_recurrent",
    "normalized_cells",
    "inverse_stds",
    "normalized_inputs",
)


def _saved_buffers(
    steps: int,
    rows: int,
    width: int,
    recurrent_size: int,
    norms: tuple[bool, bool],
    like: Tensor,
    chunk: int,
) -> dict[str, Tensor]:
    """What the forward loop of one chunk of rows saves, time-major (module docstring);
    ``norms``: (layer norm of the recurrent pre-activations and cell, of the inputs)."""
    use_norm, use_input_norm = norms
    hidden = width // 4
    norm_shape = (steps, rows) if use_norm else (1, 1)  # placeholders without layer norm
    input_shape = (steps, rows, width) if use_input_norm else (1, 1, 1)
    shapes = {
        "recurrent_inputs": (steps, rows, recurrent_size),
        "gates": (steps, rows, width),
        "cells_before": (steps, rows, hidden),
        "cells": (steps, rows, hidden),
        "cell_outputs": (steps, rows, hidden),
        "hiddens": (steps, rows, hidden),
        "normalized_recurrent": (*norm_shape, width if use_norm else 1),
        "normalized_cells": (*norm_shape, hidden if use_norm else 1),
        "inverse_stds": (*norm_shape, 3 if use_norm else 1),
        "normalized_inputs": input_shape,
    }
    return {
        name: empty(*shape, like=like, role=f"lstm {name} {chunk}")
        for name, shape in shapes.items()
    }


def _gradient_buffers(
    steps: int, rows: int, width: int, recurrent_size: int, like: Tensor, chunk: int
) -> dict[str, Tensor]:
    """The backward loop's per-step gradients of one chunk, for the products after it."""
    shapes = {
        "grad_recurrent": (steps, rows, width),  # d (W_hh r_t), layer norm undone
        "grad_hidden_outputs": (steps, rows, recurrent_size),  # d h_t before zoneout
        "grad_cell_outputs": (steps, rows, width // 4),  # d tanh argument (layer-norm output)
    }
    return {
        name: empty(*shape, like=like, role=f"lstm {name} {chunk}")
        for name, shape in shapes.items()
    }


def _parameter_gradients(
    saved: list[dict[str, Tensor]],
    gradients: list[dict[str, Tensor]],
    sums: Tensor,
    peephole: Tensor | None,
    norm_hidden: Tensor | None,
    projection: Tensor | None,
) -> tuple[Tensor | None, ...]:
    """Gradients of W_hh, the peepholes, the layer-norm gains and W_hr: one product per chunk
    over all its steps summed over the chunks, and the kernel's ``sums (6, 4H)``."""
    hidden = sums.shape[1] // 4  # sums (8, 4H): rows 6 and 7 are the input norm's
    grad_weight = grad_projection = None
    for saved_rows, gradient_rows in zip(saved, gradients, strict=True):
        grad_recurrent = gradient_rows["grad_recurrent"]
        count = grad_recurrent.shape[0] * grad_recurrent.shape[1]
        inputs = saved_rows["recurrent_inputs"].reshape(count, -1)
        grad_weight = _sum(grad_weight, grad_recurrent.reshape(count, -1).t() @ inputs)
        if projection is not None:
            grad_hidden = gradient_rows["grad_hidden_outputs"].reshape(count, -1)
            hiddens = saved_rows["hiddens"].reshape(count, -1)
            grad_projection = _sum(grad_projection, grad_hidden.t() @ hiddens)
    grad_peephole = None if peephole is None else sums[3:6, :hidden]
    grad_norm: list[Tensor | None] = [None] * 3
    if norm_hidden is not None:
        grad_norm = [sums[0], sums[1, :hidden], sums[2, :hidden]]
    return (grad_weight, grad_peephole, *grad_norm, grad_projection)


def _sum(total: Tensor | None, term: Tensor | None) -> Tensor | None:
    if total is None:
        return term
    return total if term is None else total + term


def run_lstm(
    projected: Tensor,
    state: tuple[Tensor, Tensor],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Outputs ``(B, T, R)`` and the final ``(h, c)``; see the module docstring. CUDA tensors
    run the Triton kernels (``triton_fused_lstm.py``), which refuse the options they lack."""
    if projected.device.type == "cuda":
        from rnnkit.strategies.kernels import triton_fused_lstm  # imports Triton: only when used

        return triton_fused_lstm.run_lstm_triton(
            projected, state, weights, zoneout, lengths, resets
        )
    settings = (
        float(weights.get("norm_hidden_eps", 0.0)),
        float(weights.get("norm_cell_eps", 0.0)),
        zoneout_mode(zoneout),
        float(weights.get("norm_input_eps", 0.0)),
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
