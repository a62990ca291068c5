"""The diagonal linear scan in chunks, in plain PyTorch (any device, autograd throughout).

With the sequence cut into K chunks of C steps (C about sqrt(T)):

1. within every chunk at once, scan from a zero state: ``l_c = a_c * l_{c-1} + b_c`` and the
   running products ``P_c = a_1 ... a_c`` (C steps over ``(B, K, N)`` tensors);
2. across chunks, carry the state: ``H_k = P_C^k * H_{k-1} + l_C^k`` (K steps over ``(B, N)``);
3. everywhere at once: ``h = l + P * H_{k-1}``.

About 2 sqrt(T) small steps instead of T, with O(B T N) memory.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def scan_chunked(
    a: Tensor,
    b: Tensor,
    initial: Tensor | None = None,
    reverse: bool = False,
    chunk_size: int | None = None,
) -> Tensor:
    """Chunked parallel form of ``rnnkit.strategies.kernels.reference.scan_loop``."""
    if reverse:
        return scan_chunked(a.flip(1), b.flip(1), initial, False, chunk_size).flip(1)
    batch, steps, width = b.shape
    size = chunk_size or max(1, math.isqrt(steps))
    chunks = -(-steps // size)
    padding = chunks * size - steps
    a = a.expand_as(b)
    if padding:  # a = 1, b = 0 leaves the state unchanged
        a = torch.cat([a, a.new_ones(batch, padding, width)], 1)
        b = torch.cat([b, b.new_zeros(batch, padding, width)], 1)
    a_chunks = a.reshape(batch, chunks, size, width)
    b_chunks = b.reshape(batch, chunks, size, width)
    local, products = [], []
    state = torch.zeros_like(b_chunks[:, :, 0])  # (B, K, N)
    product = torch.ones_like(a_chunks[:, :, 0])
    for a_c, b_c in zip(a_chunks.unbind(2), b_chunks.unbind(2), strict=True):
        state = a_c * state + b_c
        product = product * a_c
        local.append(state)
        products.append(product)
    carry = torch.zeros_like(b[:, 0]) if initial is None else initial.to(b.dtype)  # (B, N)
    carries = []
    for product_k, local_k in zip(product.unbind(1), state.unbind(1), strict=True):
        carries.append(carry)
        carry = product_k * carry + local_k
    starts = torch.stack(carries, 1).unsqueeze(2)  # (B, K, 1, N): state entering each chunk
    h = torch.stack(local, 2) + torch.stack(products, 2) * starts  # (B, K, C, N)
    return h.reshape(batch, chunks * size, width)[:, :steps]
