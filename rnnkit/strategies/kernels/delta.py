"""The delta rule's matrix-state scan (DeltaNet), as a loop and in chunks.

Schlag, Irie, Schmidhuber 2021, "Linear Transformers Are Secretly Fast Weight Programmers",
https://arxiv.org/abs/2102.11174; Yang, Wang, Zhang, Shen, Kim 2024, "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", https://arxiv.org/abs/2406.06484.

The papers write the state as ``(d_v, d_k)``: ``S_t = S_{t-1} (I - beta_t k_t k_t^T) +
beta_t v_t k_t^T`` and ``o_t = S_t q_t``. Here, as in ``kernels/matrix.py``, the state is its
transpose ``(d_k, d_v)``, per batch element and head:

    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    S_0 = initial
    o_t = S_t^T q_t

that is, ``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T``: the value stored under key
``k_t`` moves a fraction ``beta_t`` towards ``v_t``. All implementations take ``query, key (B,
heads, T, d_k)``, ``value (B, heads, T, d_v)``, ``beta (B, heads, T)`` and ``initial (B, heads,
d_k, d_v)`` or None (zeros), and return ``outputs (B, heads, T, d_v)`` and the final state:

- ``loop``: the reference, one step after another;
- ``chunked``: the chunkwise form of Yang et al. 2024 (Sections 3.2 and 3.3). Inside a chunk
  of C steps entered with state ``S``, the product of the ``I - beta_i k_i k_i^T`` is
  ``I - sum_i k_i w_i^T`` (the WY representation) and the state is ``S + sum_i k_i (u_i -
  S^T w_i)^T``, with ``W = T (beta * K)``, ``U = T (beta * V)`` and the UT transform ``T = (I +
  tril(diag(beta) K K^T, -1))^{-1}`` (a triangular solve). Then

      U~ = U - W S,    O = Q S + tril(Q K^T) U~,    S' = S + K^T U~

  Only the last three products run chunk after chunk; the solve runs for all chunks at once.

Gradients come from autograd (the triangular solve is differentiable).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.strategies.kernels.matrix import initial_or_zeros, split_chunks

DEFAULT_CHUNK_SIZE = 16


def delta_scan_loop(
    query: Tensor, key: Tensor, value: Tensor, beta: Tensor, initial: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The reference loop over time; see the module docstring."""
    state = initial_or_zeros(key, value, initial)
    outputs = []
    steps = zip(query.unbind(2), key.unbind(2), value.unbind(2), beta.unbind(2), strict=True)
    for q, k, v, rate in steps:
        retrieved = torch.einsum("bhkv,bhk->bhv", state, k)  # S_{t-1}^T k_t
        correction = rate.unsqueeze(-1) * (v - retrieved)  # (B, heads, d_v)
        state = state + k.unsqueeze(-1) * correction.unsqueeze(-2)
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q))
    return torch.stack(outputs, 2), state


def delta_scan_chunked(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    beta: Tensor,
    initial: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """The chunkwise (WY / UT transform) form of ``delta_scan_loop``; see the module docstring."""
    steps = query.shape[2]
    q, k, v = (split_chunks(tensor, chunk_size) for tensor in (query, key, value))
    rate = split_chunks(beta.unsqueeze(-1), chunk_size)  # (B, heads, K, C, 1); padding: beta = 0
    size = q.shape[3]
    strictly_lower = torch.ones(size, size, dtype=torch.bool, device=q.device).tril(-1)
    gram = (rate * k) @ k.transpose(-1, -2)  # beta_t k_t . k_s: (B, heads, K, C, C)
    # (I + strictly lower part of the gram matrix)^{-1}: unitriangular ignores the diagonal
    transformed = torch.linalg.solve_triangular(
        gram.masked_fill(~strictly_lower, 0),
        torch.cat([rate * k, rate * v], -1),
        upper=False,
        unitriangular=True,
    )
    w, u = transformed.split([k.shape[-1], v.shape[-1]], -1)  # (B, heads, K, C, d_k / d_v)
    causal_scores = (q @ k.transpose(-1, -2)).masked_fill(strictly_lower.T, 0)  # s <= t
    state = initial_or_zeros(key, value, initial)
    outputs = []
    chunks = (tensor.unbind(2) for tensor in (q, k, w, u, causal_scores))
    for q_chunk, k_chunk, w_chunk, u_chunk, scores in zip(*chunks, strict=True):
        new_values = u_chunk - w_chunk @ state  # (B, heads, C, d_v)
        outputs.append(q_chunk @ state + scores @ new_values)
        state = state + k_chunk.transpose(-1, -2) @ new_values
    return torch.cat(outputs, 2)[:, :, :steps], state


DELTA_SCAN_IMPLEMENTATIONS = {"loop": delta_scan_loop, "chunked": delta_scan_chunked}


def delta_scan(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    beta: Tensor,
    initial: Tensor | None = None,
    implementation: str = "chunked",
) -> tuple[Tensor, Tensor]:
    """The delta rule with checked shapes; see the module docstring."""
    if implementation not in DELTA_SCAN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown delta scan implementation {implementation!r}; "
            f"known: {', '.join(DELTA_SCAN_IMPLEMENTATIONS)}"
        )
    if query.dim() != 4 or key.shape != query.shape:
        raise ValueError(
            f"query and key must have one shape (batch, heads, time, key_size), got "
            f"{tuple(query.shape)} and {tuple(key.shape)}"
        )
    if value.dim() != 4 or value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"value must have shape {(*key.shape[:3], 'value_size')}, got {tuple(value.shape)}"
        )
    if beta.shape != key.shape[:3]:
        raise ValueError(f"beta must have shape {tuple(key.shape[:3])}, got {tuple(beta.shape)}")
    expected = (*key.shape[:2], key.shape[-1], value.shape[-1])
    if initial is not None and tuple(initial.shape) != expected:
        raise ValueError(f"initial must have shape {expected}, got {tuple(initial.shape)}")
    return DELTA_SCAN_IMPLEMENTATIONS[implementation](query, key, value, beta, initial)
