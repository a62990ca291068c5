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
from rnnkit.strategies.kernels.fused_arrays import (
    as_array,
    empty,
    for_each_chunk,
    resets_array,
    row_chunks,
    rows_array,
    zoneout_mode,
)

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
        chunks = row_chunks(batch)
        saved = [
            _saved_buffers(
                steps, rows.stop - rows.start, hidden, state_size, use_output, projected, index
            )
            for index, rows in enumerate(chunks)
        ]
        outputs = empty(batch, steps, state_size, like=projected)
        state_final = torch.empty_like(state0)
        weight_t = as_array(recurrent.t(), 2, dtype)
        output_weight_t = as_array(None if output_weight is None else output_weight.t(), 2, dtype)
        outputs_array, final_array = outputs.numpy(), state_final.numpy()

        def work(index: int, rows: slice) -> None:
            fused_elman_cpu.elman_forward(
                rows_array(projected, rows, 3, dtype),
                rows_array(state0, rows, 2, dtype),
                weight_t,
                output_weight_t,
                as_array(output_bias, 1, dtype),
                rows_array(hidden_mask, rows, 2, dtype),
                rows_array(zoneout, rows, 3, dtype, axis=1),
                lengths[rows].numpy(),
                resets_array(None if resets is None else resets[rows]),
                flags,
                outputs_array[rows],
                final_array[rows],
                *(tensor.numpy() for tensor in saved[index].values()),
            )

        for_each_chunk(work, chunks)
        ctx.flags, ctx.chunks, ctx.saved_chunks = flags, chunks, saved
        ctx.save_for_backward(lengths, resets, recurrent, output_weight, hidden_mask, zoneout)
        return outputs, state_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_state: Tensor):  # type: ignore[override]
        lengths, resets, recurrent, output_weight, hidden_mask, zoneout = ctx.saved_tensors
        batch, steps, state_size = grad_outputs.shape
        hidden = recurrent.shape[0]
        dtype = recurrent.dtype
        use_output = output_weight is not None
        grad_projected = empty(batch, steps, hidden, like=recurrent)
        grad_state0 = empty(batch, state_size, like=recurrent)
        # per chunk: d pre-activations of u_t and of c_t, for the products after the loop
        gradients = []
        for index, rows in enumerate(ctx.chunks):
            count = rows.stop - rows.start
            output_shape = (steps, count, state_size) if use_output else (1, 1, 1)  # else unread
            gradients.append(
                {
                    "grad_recurrent": empty(
                        steps, count, hidden, like=recurrent, role=f"elman grad_recurrent {index}"
                    ),
                    "grad_output_pre": empty(
                        *output_shape, like=recurrent, role=f"elman grad_output_pre {index}"
                    ),
                }
            )
        weight, output_weight_array = (
            as_array(recurrent, 2, dtype),
            as_array(output_weight, 2, dtype),
        )
        grad_projected_array, grad_state0_array = grad_projected.numpy(), grad_state0.numpy()

        def work(index: int, rows: slice) -> None:
            saved = ctx.saved_chunks[index]
            fused_elman_cpu.elman_backward(
                rows_array(grad_outputs, rows, 3, dtype),
                rows_array(grad_state, rows, 2, dtype),
                weight,
                output_weight_array,
                rows_array(hidden_mask, rows, 2, dtype),
                rows_array(zoneout, rows, 3, dtype, axis=1),
                lengths[rows].numpy(),
                resets_array(None if resets is None else resets[rows]),
                ctx.flags,
                saved["hiddens"].numpy(),
                saved["candidates"].numpy(),
                grad_projected_array[rows],
                gradients[index]["grad_recurrent"].numpy(),
                gradients[index]["grad_output_pre"].numpy(),
                grad_state0_array[rows],
            )

        for_each_chunk(work, ctx.chunks)
        needs = ctx.needs_input_grad
        grad_weight = grad_output_weight = grad_output_bias = None
        for saved, gradient in zip(ctx.saved_chunks, gradients, strict=True):
            grad_recurrent = gradient["grad_recurrent"]
            count = grad_recurrent.shape[0] * grad_recurrent.shape[1]
            hiddens = saved["hiddens"].reshape(count, hidden)
            if needs[5]:
                term = grad_recurrent.reshape(count, hidden).t() @ saved[
                    "recurrent_inputs"
                ].reshape(count, state_size)
                grad_weight = term if grad_weight is None else grad_weight + term
            if use_output and needs[6]:
                grad_output_pre = gradient["grad_output_pre"].reshape(count, state_size)
                term = grad_output_pre.t() @ hiddens
                grad_output_weight = (
                    term if grad_output_weight is None else grad_output_weight + term
                )
            if use_output and needs[7]:
                bias_term = gradient["grad_output_pre"].sum((0, 1))
                grad_output_bias = (
                    bias_term if grad_output_bias is None else grad_output_bias + bias_term
                )
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


def _saved_buffers(
    steps: int,
    rows: int,
    hidden: int,
    state_size: int,
    use_output: bool,
    like: Tensor,
    chunk: int,
) -> dict[str, Tensor]:
    """What the forward loop of one chunk of rows saves, time-major, in the kernel's order."""
    output_shape = (steps, rows, state_size) if use_output else (1, 1, 1)  # else unread
    return {
        "recurrent_inputs": empty(
            steps, rows, state_size, like=like, role=f"elman recurrent_inputs {chunk}"
        ),
        "hiddens": empty(steps, rows, hidden, like=like, role=f"elman hiddens {chunk}"),
        "candidates": empty(*output_shape, like=like, role=f"elman candidates {chunk}"),
    }


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
