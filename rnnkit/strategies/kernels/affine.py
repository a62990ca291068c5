"""Linear recurrences with a matrix per step: ``s_t = J_t s_{t-1} + c_t``.

``J (B, T, S, S)``, ``c (B, T, S)``, ``initial (B, S)``; returns ``s (B, T, S)``. Used by the
Newton strategy for dense Jacobians (small S) and, with the units folded into the batch, for
block-diagonal ones (S = 2 for an LSTM with diagonal recurrence over (c, h)).

``affine_scan_loop`` is the reference; ``affine_scan_blocks`` runs many small independent
systems (``S <= 4``, the block-diagonal case) with a compiled loop on the CPU, where batched
2x2 matrix products in PyTorch cost far more than their arithmetic; ``affine_scan_chunked``
cuts time into K chunks of C steps and runs 2 sqrt(T) batched matrix steps instead of T, as
``chunked.py`` does for the diagonal scan: local solutions from zero and running products within
all chunks at once, the carry across
chunks, then ``s = l + P s_in``. ``reverse=True`` runs ``s_t = J_t s_{t+1} + c_t`` from the end.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

try:
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None  # type: ignore[assignment]


def affine_scan_loop(
    jacobians: Tensor, offsets: Tensor, initial: Tensor | None = None, reverse: bool = False
) -> Tensor:
    """The reference loop: one matrix-vector product per step."""
    steps = offsets.shape[1]
    state = torch.zeros_like(offsets[:, 0]) if initial is None else initial
    outputs: list[Tensor] = [state] * steps
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    jacobian_steps, offset_steps = jacobians.unbind(1), offsets.unbind(1)
    for t in order:
        state = torch.matmul(jacobian_steps[t], state.unsqueeze(-1)).squeeze(-1) + offset_steps[t]
        outputs[t] = state
    return torch.stack(outputs, 1)


def affine_scan_chunked(
    jacobians: Tensor,
    offsets: Tensor,
    initial: Tensor | None = None,
    reverse: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """Chunked parallel form of ``affine_scan_loop``."""
    if reverse:
        flipped = affine_scan_chunked(
            jacobians.flip(1), offsets.flip(1), initial, False, chunk_size
        )
        return flipped.flip(1)
    batch, steps, size = offsets.shape
    chunk = chunk_size or max(1, math.isqrt(steps))
    chunks = -(-steps // chunk)
    padding = chunks * chunk - steps
    if padding:  # identity steps leave the state unchanged
        eye = torch.eye(size, dtype=jacobians.dtype, device=jacobians.device)
        jacobians = torch.cat([jacobians, eye.expand(batch, padding, size, size)], 1)
        offsets = torch.cat([offsets, offsets.new_zeros(batch, padding, size)], 1)
    jacobian_chunks = jacobians.reshape(batch, chunks, chunk, size, size)
    offset_chunks = offsets.reshape(batch, chunks, chunk, size)
    local = torch.zeros_like(offset_chunks[:, :, 0])  # (B, K, S)
    product: Tensor | None = None
    locals_, products = [], []
    for jacobian_c, offset_c in zip(
        jacobian_chunks.unbind(2), offset_chunks.unbind(2), strict=True
    ):
        local = torch.matmul(jacobian_c, local.unsqueeze(-1)).squeeze(-1) + offset_c
        product = jacobian_c if product is None else torch.matmul(jacobian_c, product)
        locals_.append(local)
        products.append(product)
    carry = torch.zeros_like(offsets[:, 0]) if initial is None else initial  # (B, S)
    carries = []
    assert product is not None  # the chunk loop ran at least once (chunk >= 1)
    for product_k, local_k in zip(product.unbind(1), local.unbind(1), strict=True):
        carries.append(carry)
        carry = torch.matmul(product_k, carry.unsqueeze(-1)).squeeze(-1) + local_k
    starts = torch.stack(carries, 1).unsqueeze(2).unsqueeze(-1)  # (B, K, 1, S, 1)
    states = torch.stack(locals_, 2) + torch.matmul(torch.stack(products, 2), starts).squeeze(-1)
    return states.reshape(batch, chunks * chunk, size)[:, :steps]


def affine_scan_blocks(
    jacobians: Tensor, offsets: Tensor, initial: Tensor | None = None, reverse: bool = False
) -> Tensor:
    """``affine_scan_loop`` for small S on the CPU, compiled; no autograd (Newton needs none).

    Falls back to ``affine_scan_chunked`` off the CPU or without Numba (same numbers).
    """
    if numba is None or offsets.device.type != "cpu" or offsets.shape[-1] > 4:
        return affine_scan_chunked(jacobians, offsets, initial, reverse)
    initial = torch.zeros_like(offsets[:, 0]) if initial is None else initial
    output = torch.empty_like(offsets)
    arrays = (t.detach().contiguous().numpy() for t in (jacobians, offsets, initial))
    _blocks_kernel(*arrays, output.numpy(), reverse)  # type: ignore[call-arg]  # numba's stub
    return output


if numba is not None:

    @numba.njit(parallel=True, cache=True, boundscheck=False)
    def _blocks_kernel(jacobians, offsets, initial, output, reverse):  # pragma: no cover
        systems, steps, size = offsets.shape
        for system in numba.prange(systems):
            state = initial[system].copy()
            new = np.empty_like(state)
            for index in range(steps):
                t = steps - 1 - index if reverse else index
                for row in range(size):
                    total = offsets[system, t, row]
                    for column in range(size):
                        total += jacobians[system, t, row, column] * state[column]
                    new[row] = total
                for row in range(size):
                    state[row] = new[row]
                    output[system, t, row] = new[row]
