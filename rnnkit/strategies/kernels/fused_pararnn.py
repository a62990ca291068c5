"""The fused ParaGRU and ParaLSTM loops (``fused_pararnn_cpu.py``) as differentiable functions.

``run_paragru(projected, state, weights, zoneout, lengths, resets)`` takes what
``ParaGRUCell`` declares: ``projected (B, T, 3H)`` (its ``project_inputs``: W x + b for z, r,
n), the state ``(h (B, H),)`` and the tensors of ``fused_weights()`` by role: ``recurrent``
(the diagonal weights ``(3, H)``) or, with heads, ``recurrent_blocks`` (``(3, k, H/k, H/k)``).
``run_paralstm`` likewise for ``ParaLSTMCell``: ``projected (B, T, 3H)`` (f, o, c~), the state
``(h, c)`` each ``(B, H)``, ``recurrent (3, H)`` (a_f, a_o, a_c) and ``peephole (2, H)`` (p_f,
p_o). These cells take no recurrent regularization: ``zoneout`` is None. ``resets (B, T)``:
restart a row from the zero state before a flagged step.

The backward pass runs the loop in reverse in one compiled call, which also accumulates the
weight gradients per row; they are summed over the rows here. Rows are independent (no product
across the batch), so both passes split the batch into one block of rows per thread torch may
use (``row_chunks``), each block's whole loop on its own thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels import fused_pararnn_cpu
from rnnkit.strategies.kernels.fused_arrays import (
    as_array,
    empty,
    for_each_chunk,
    numpy_dtype,
    resets_array,
    row_chunks,
)


class ByRows:
    """A kernel argument split by batch rows (first axis): one array or a tuple of them."""

    def __init__(self, *arrays: np.ndarray) -> None:
        self.arrays = arrays

    def rows(self, rows: slice) -> Any:
        parts = tuple(array[rows] for array in self.arrays)
        return parts[0] if len(parts) == 1 else parts


def run_by_rows(kernel: Callable[..., None], batch_size: int, *arguments: Any) -> None:
    """``kernel(*arguments)`` once per block of rows (``row_chunks``), on parallel threads:
    rows are independent, and every per-row array is batch-major, so a block is a contiguous
    view. ``ByRows`` arguments are sliced, the others passed whole."""

    def work(index: int, rows: slice) -> None:
        kernel(*(arg.rows(rows) if isinstance(arg, ByRows) else arg for arg in arguments))

    for_each_chunk(work, row_chunks(batch_size))


def _resets(resets: Tensor | None) -> Any:
    """``resets (B, T)`` split by rows, or the placeholder the kernel never reads."""
    return resets_array(None) if resets is None else ByRows(resets_array(resets))


def _no_zoneout(zoneout: tuple[Tensor, ...] | None) -> None:
    if zoneout is not None:
        raise ValueError("the ParaRNN cells take no zoneout, the fused kernel got masks")


def _flags(use_heads: bool, resets: Tensor | None) -> np.ndarray:
    return np.array([use_heads, resets is not None], dtype=np.int64)


def _weight_arrays(
    diagonal: Tensor | None, blocks: Tensor | None, dtype: torch.dtype
) -> tuple[np.ndarray, np.ndarray]:
    """The diagonal ``(3, H)`` and block ``(3, k, d, d)`` weights as arrays; the kernel reads
    one of the two (its flag says which), the other is a placeholder of its dimensions."""
    placeholder = numpy_dtype(dtype)
    diagonal_array = (
        np.zeros((3, 1), dtype=placeholder) if diagonal is None else as_array(diagonal, 2, dtype)
    )
    blocks_array = (
        np.zeros((3, 1, 1, 1), dtype=placeholder) if blocks is None else as_array(blocks, 4, dtype)
    )
    return diagonal_array, blocks_array


class _FusedParaGRU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lengths: Tensor,
        resets: Tensor | None,
        projected: Tensor,
        h0: Tensor,
        diagonal: Tensor | None,
        blocks: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        batch, steps, width = projected.shape
        hidden, dtype = width // 3, projected.dtype
        flags = _flags(blocks is not None, resets)
        previous = empty(batch, steps, hidden, like=projected, role="paragru previous")
        gates = empty(batch, steps, width, like=projected, role="paragru gates")
        outputs = empty(batch, steps, hidden, like=projected)
        h_final = torch.empty_like(h0)
        run_by_rows(
            fused_pararnn_cpu.paragru_forward,
            batch,
            ByRows(as_array(projected, 3, dtype)),
            ByRows(as_array(h0, 2, dtype)),
            *_weight_arrays(diagonal, blocks, dtype),
            ByRows(lengths.numpy()),
            _resets(resets),
            flags,
            ByRows(outputs.numpy()),
            ByRows(h_final.numpy()),
            ByRows(previous.numpy()),
            ByRows(gates.numpy()),
        )
        ctx.flags = flags
        ctx.save_for_backward(lengths, resets, diagonal, blocks, previous, gates)
        return outputs, h_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_h: Tensor):  # type: ignore[override]
        lengths, resets, diagonal, blocks, previous, gates = ctx.saved_tensors
        batch, steps, width = gates.shape
        dtype = gates.dtype
        grad_projected = empty(batch, steps, width, like=gates)
        grad_h0 = empty(batch, width // 3, like=gates)
        diagonal_shape = (1,) if diagonal is None else tuple(diagonal.shape[1:])
        blocks_shape = (1, 1, 1) if blocks is None else tuple(blocks.shape[1:])
        grad_diagonal = empty(batch, 3, *diagonal_shape, like=gates)
        grad_blocks = empty(batch, 3, *blocks_shape, like=gates)
        run_by_rows(
            fused_pararnn_cpu.paragru_backward,
            batch,
            ByRows(as_array(grad_outputs, 3, dtype)),
            ByRows(as_array(grad_h, 2, dtype)),
            *_weight_arrays(diagonal, blocks, dtype),
            ByRows(lengths.numpy()),
            _resets(resets),
            ctx.flags,
            ByRows(previous.numpy()),
            ByRows(gates.numpy()),
            ByRows(grad_projected.numpy()),
            ByRows(grad_h0.numpy()),
            ByRows(grad_diagonal.numpy()),
            ByRows(grad_blocks.numpy()),
        )
        grad_diagonal_sum = None if diagonal is None else grad_diagonal.sum(0)
        grad_blocks_sum = None if blocks is None else grad_blocks.sum(0)
        return None, None, grad_projected, grad_h0, grad_diagonal_sum, grad_blocks_sum


class _FusedParaLSTM(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lengths: Tensor,
        resets: Tensor | None,
        projected: Tensor,
        h0: Tensor,
        c0: Tensor,
        recurrent: Tensor,
        peephole: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        batch, steps, width = projected.shape
        hidden, dtype = width // 3, projected.dtype
        flags = _flags(False, resets)
        saved = {
            "previous_h": empty(batch, steps, hidden, like=projected, role="paralstm previous_h"),
            "previous_c": empty(batch, steps, hidden, like=projected, role="paralstm previous_c"),
            "gates": empty(batch, steps, width, like=projected, role="paralstm gates"),
            "cells": empty(batch, steps, hidden, like=projected, role="paralstm cells"),
        }
        outputs = empty(batch, steps, hidden, like=projected)
        h_final, c_final = torch.empty_like(h0), torch.empty_like(c0)
        run_by_rows(
            fused_pararnn_cpu.paralstm_forward,
            batch,
            ByRows(as_array(projected, 3, dtype)),
            ByRows(as_array(h0, 2, dtype), as_array(c0, 2, dtype)),
            as_array(recurrent, 2, dtype),
            as_array(peephole, 2, dtype),
            ByRows(lengths.numpy()),
            _resets(resets),
            flags,
            ByRows(outputs.numpy()),
            ByRows(h_final.numpy(), c_final.numpy()),
            ByRows(*(tensor.numpy() for tensor in saved.values())),
        )
        ctx.flags = flags
        ctx.save_for_backward(lengths, resets, recurrent, peephole, *saved.values())
        return outputs, h_final, c_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_h: Tensor, grad_c: Tensor):  # type: ignore[override]
        lengths, resets, recurrent, peephole, previous_h, previous_c, gates, cells = (
            ctx.saved_tensors
        )
        batch, steps, width = gates.shape
        hidden, dtype = width // 3, gates.dtype
        grad_projected = empty(batch, steps, width, like=gates)
        grad_h0, grad_c0 = empty(batch, hidden, like=gates), empty(batch, hidden, like=gates)
        grad_recurrent = empty(batch, 3, hidden, like=gates)
        grad_peephole = empty(batch, 2, hidden, like=gates)
        run_by_rows(
            fused_pararnn_cpu.paralstm_backward,
            batch,
            ByRows(as_array(grad_outputs, 3, dtype)),
            ByRows(as_array(grad_h, 2, dtype), as_array(grad_c, 2, dtype)),
            (as_array(recurrent, 2, dtype), as_array(peephole, 2, dtype)),
            ByRows(lengths.numpy()),
            _resets(resets),
            ctx.flags,
            ByRows(previous_h.numpy(), previous_c.numpy(), gates.numpy(), cells.numpy()),
            ByRows(grad_projected.numpy()),
            ByRows(grad_h0.numpy(), grad_c0.numpy()),
            ByRows(grad_recurrent.numpy(), grad_peephole.numpy()),
        )
        return (
            None,
            None,
            grad_projected,
            grad_h0,
            grad_c0,
            grad_recurrent.sum(0),
            grad_peephole.sum(0),
        )


def run_paragru(
    projected: Tensor,
    state: tuple[Tensor, ...],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor]]:
    """Outputs ``(B, T, H)`` and the final ``(h,)``; see the module docstring."""
    _no_zoneout(zoneout)
    outputs, h = _FusedParaGRU.apply(
        lengths,
        resets,
        projected,
        state[0],
        weights.get("recurrent"),
        weights.get("recurrent_blocks"),
    )
    return outputs, (h,)


def run_paralstm(
    projected: Tensor,
    state: tuple[Tensor, ...],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """Outputs ``(B, T, H)`` and the final ``(h, c)``; see the module docstring."""
    _no_zoneout(zoneout)
    outputs, h, c = _FusedParaLSTM.apply(
        lengths, resets, projected, state[0], state[1], weights["recurrent"], weights["peephole"]
    )
    return outputs, (h, c)
