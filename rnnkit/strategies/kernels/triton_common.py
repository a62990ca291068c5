"""What the Triton fused kernels (``triton_fused_lstm.py``, ``triton_fused_gru.py``) share:
the Triton import, the head-size limit, the batch block, the pointwise functions, a program's
rows and units, and the split of a block-diagonal ``W_hh`` into per-head blocks.

A program keeps one head's recurrent blocks on chip: heads of at most ``MAX_HEAD_SIZE`` units
(several gate tiles of 64 x 64 already fill a program's registers). ``tl.dot`` needs at least
16 rows: programs take ``BLOCK_B = 16`` batch rows, the rows past the batch masked.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"Triton, which could not be imported ({error})"

MAX_HEAD_SIZE = 64
BLOCK_B = 16


def available() -> str | None:
    """None when the Triton kernels can run, else the reason they cannot."""
    return IMPORT_ERROR


if IMPORT_ERROR is None:

    @triton.jit
    def sigmoid(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def tanh(x):
        decay = tl.exp(-2.0 * tl.abs(x))
        magnitude = (1.0 - decay) / (1.0 + decay)
        return tl.where(x >= 0, magnitude, -magnitude)

    @triton.jit
    def program_rows(batch, hidden, size, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
        """This program's rows and its head's units: the rows, their mask, the (rows, units)
        mask, the index of each (row, unit) in a ``(B, H)`` tensor and the head's units in H."""
        rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
        units = tl.arange(0, BLOCK_D)
        ok = (rows < batch)[:, None] & (units < size)[None, :]
        columns = tl.program_id(1) * size + units
        return rows, rows < batch, ok, rows[:, None] * hidden + columns[None, :], columns


def block_size(size: int) -> int:
    """The ``BLOCK_D`` tile width for heads of ``size`` units (a power of two, at least 16)."""
    return max(16, triton.next_power_of_2(size))


def head_blocks(dense: Tensor, num_heads: int, gates: int) -> Tensor:
    """The diagonal blocks of a head-wise ``W_hh (gates H, H)`` as ``(k, gates d, d)``,
    differentiably (the inverse of ``rnnkit.cells.heads.block_diagonal``)."""
    width, hidden = dense.shape
    size = hidden // num_heads
    blocks = dense.view(gates, num_heads, size, num_heads, size)
    per_head = torch.diagonal(blocks, dim1=1, dim2=3)  # (gates, d, d, k)
    return per_head.permute(3, 0, 1, 2).reshape(num_heads, width // num_heads, size)


def head_size_reason(weights: dict[str, Any], device: torch.device, kernel: str) -> str | None:
    """Why ``kernel`` cannot keep a head of these weights on chip, or None."""
    hidden = weights["recurrent"].shape[1]
    size = hidden // int(weights.get("num_heads", 1))
    if size <= MAX_HEAD_SIZE:
        return None
    return (
        f"the fused Triton {kernel} kernel on {device} keeps a head's W_hh on chip and takes "
        f"heads of at most {MAX_HEAD_SIZE} units, got {size} (choose num_heads so that "
        f"hidden_size / num_heads <= {MAX_HEAD_SIZE})"
    )
