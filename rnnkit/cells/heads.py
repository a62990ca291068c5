"""Head-wise (block-diagonal) recurrent matrices, as FlashRNN (Poppel et al. 2024).

FlashRNN, https://arxiv.org/abs/2412.07752: the hidden state of H units is split into k heads of
``d = H / k`` units, and each head's gates read only that head's h_{t-1}. The recurrent matrix of
a cell with ``gates`` gates is then stored per head as ``W (k, gates * d, d)``, each head's rows
ordered gate-then-unit, and acts on h like the dense gate-major ``(gates * H, H)`` matrix

    W_dense[g H + k d + a, k d + b] = W[k, g d + a, b]      (zero off the diagonal blocks)

so a cell's recurrent pre-activations keep the dense cell's layout ``(B, gates * H)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def headwise_product(hidden: Tensor, weight: Tensor) -> Tensor:
    """The block-diagonal recurrent product, one small product per head.

    ``hidden (B, H)`` and ``weight (k, gates * d, d)`` -> ``(B, gates * H)`` gate-major:

        out[b, g H + k d + a] = sum_c W[k, g d + a, c] h[b, k d + c]

    which equals ``hidden @ block_diagonal(weight).T``.
    """
    num_heads, rows, size = weight.shape
    heads = hidden.unflatten(-1, (num_heads, size))  # (B, k, d)
    mixed = torch.einsum("krc,bkc->bkr", weight, heads)  # (B, k, gates * d)
    gated = mixed.unflatten(-1, (rows // size, size)).transpose(1, 2)  # (B, gates, k, d)
    return gated.flatten(1)  # (B, gates * H)


def block_diagonal(weight: Tensor) -> Tensor:
    """``weight (k, gates * d, d)`` -> the equivalent dense ``(gates * H, H)`` matrix.

    Built differentiably (gradients reach ``weight``), for kernels that take a dense W_hh.
    """
    num_heads, rows, size = weight.shape
    gates = rows // size
    per_gate = weight.unflatten(1, (gates, size))  # (k, gates, d, d)
    eye = torch.eye(num_heads, dtype=weight.dtype, device=weight.device)
    dense = torch.einsum("kgab,kl->gkalb", per_gate, eye)  # (gates, k, d, k, d)
    return dense.reshape(gates * num_heads * size, num_heads * size)
