"""The delta rule's matrix-state scan (DeltaNet, Gated DeltaNet), as a loop and in chunks.

Schlag, Irie, Schmidhuber 2021, "Linear Transformers Are Secretly Fast Weight Programmers",
https://arxiv.org/abs/2102.11174; Yang, Wang, Zhang, Shen, Kim 2024, "Parallelizing Linear
Transformers with the Delta Rule over Sequence Length", https://arxiv.org/abs/2406.06484.

The papers write the state as ``(d_v, d_k)``: ``S_t = S_{t-1} (I - beta_t k_t k_t^T) +
beta_t v_t k_t^T`` and ``o_t = S_t q_t``. Here, as in ``kernels/matrix.py``, the state is its
transpose ``(d_k, d_v)``, per batch element and head:

    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,    S_0 = initial
    o_t = S_t^T q_t

that is, ``S_t = S_{t-1} + beta_t k_t (v_t - S_{t-1}^T k_t)^T``: the value stored under key
``k_t`` moves a fraction ``beta_t`` towards ``v_t``. With ``log_decay`` (Gated DeltaNet, Yang,
Kautz, Hatamizadeh 2024, https://arxiv.org/abs/2412.06464, eq. 10) the memory first decays by
``alpha_t = exp(log_decay_t)``: ``S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t
v_t^T``. All implementations take ``query, key (B, heads, T, d_k)``, ``value (B, heads, T,
d_v)``, ``beta (B, heads, T)``, ``initial (B, heads, d_k, d_v)`` or None (zeros) and
``log_decay (B, heads, T) <= 0`` or None (no decay), and return ``outputs (B, heads, T, d_v)``
and the final state:

- ``loop``: the reference, one step after another;
- ``chunked``: the chunkwise form of Yang et al. 2024 (Sections 3.2 and 3.3). Inside a chunk
  of C steps entered with state ``S``, the product of the ``I - beta_i k_i k_i^T`` is
  ``I - sum_i k_i w_i^T`` (the WY representation) and the state is ``S + sum_i k_i (u_i -
  S^T w_i)^T``, with ``W = T (beta * K)``, ``U = T (beta * V)`` and the UT transform ``T = (I +
  tril(diag(beta) K K^T, -1))^{-1}`` (a triangular solve). Then

      U~ = U - W S,    O = Q S + tril(Q K^T) U~,    S' = S + K^T U~

  Only the last three products run chunk after chunk; the solve runs for all chunks at once.
  With decay, ``gamma_t`` the product of ``alpha`` over the chunk up to ``t`` and ``Gamma_ts =
  gamma_t / gamma_s`` (s <= t, at most 1, from differences of cumulative log decays), the
  rescaled state ``S_t / gamma_t`` follows the plain rule with values ``v_t / gamma_t``;
  multiplying each row back by ``gamma_t`` keeps every factor at most 1:

      (I + tril(diag(beta) K K^T, -1) * Gamma) [W | U] = [diag(beta gamma) K | diag(beta) V]
      U~ = U - W S,   O = diag(gamma) Q S + (tril(Q K^T) * Gamma) U~,
      S' = gamma_C S + K^T diag(gamma_C / gamma) U~

Nothing here assumes ``beta <= 1``: with negative eigenvalues allowed (``beta`` in ``(0, 2)``,
Grazzi et al. 2025, https://arxiv.org/abs/2411.12537) the UT transform is still unitriangular.
DeltaProduct's several writes per token arrive as a longer sequence (``virtual_steps`` in
``rnnkit/cells/base.py``). Gradients come from autograd (the triangular solve is differentiable).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.strategies.kernels.matrix import initial_or_zeros, split_chunks

DEFAULT_CHUNK_SIZE = 16


def delta_scan_loop(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    beta: Tensor,
    initial: Tensor | None = None,
    log_decay: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The reference loop over time; see the module docstring."""
    state = initial_or_zeros(key, value, initial)
    outputs = []
    decays = [None] * query.shape[2] if log_decay is None else log_decay.exp().unbind(2)
    steps = zip(
        query.unbind(2), key.unbind(2), value.unbind(2), beta.unbind(2), decays, strict=True
    )
    for q, k, v, rate, decay in steps:
        if decay is not None:
            state = decay[..., None, None] * state  # alpha_t S_{t-1}
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
    log_decay: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """The chunkwise (WY / UT transform) form of ``delta_scan_loop``; see the module docstring."""
    steps = query.shape[2]
    q, k, v = (split_chunks(tensor, chunk_size) for tensor in (query, key, value))
    rate = split_chunks(beta.unsqueeze(-1), chunk_size)  # (B, heads, K, C, 1); padding: beta = 0
    size = q.shape[3]
    strictly_lower = torch.ones(size, size, dtype=torch.bool, device=q.device).tril(-1)
    gram = (rate * k) @ k.transpose(-1, -2)  # beta_t k_t . k_s: (B, heads, K, C, C)
    causal_scores = (q @ k.transpose(-1, -2)).masked_fill(strictly_lower.T, 0)  # s <= t
    gamma = last_gamma = remaining = None
    key_rate = rate * k
    if log_decay is not None:  # padding: log_decay = 0, the memory kept
        cumulative = split_chunks(log_decay.unsqueeze(-1), chunk_size).squeeze(-1).cumsum(-1)
        # Gamma_ts = gamma_t / gamma_s for s <= t; 0 above the diagonal (never used there)
        ratios = (
            (cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2))
            .masked_fill(strictly_lower.T, float("-inf"))
            .exp()
        )
        gamma = cumulative.exp().unsqueeze(-1)  # (B, heads, K, C, 1)
        last_gamma = gamma[..., -1:, :]  # (B, heads, K, 1, 1)
        # gamma_C / gamma_s as one exponential: the quotient of two underflowed products is 0/0
        remaining = (cumulative[..., -1:] - cumulative).exp().unsqueeze(-1)
        gram = gram * ratios
        causal_scores = causal_scores * ratios
        key_rate = key_rate * gamma
    # (I + strictly lower part of the gram matrix)^{-1}: unitriangular ignores the diagonal
    transformed = torch.linalg.solve_triangular(
        gram.masked_fill(~strictly_lower, 0),
        torch.cat([key_rate, rate * v], -1),
        upper=False,
        unitriangular=True,
    )
    w, u = transformed.split([k.shape[-1], v.shape[-1]], -1)  # (B, heads, K, C, d_k / d_v)
    state = initial_or_zeros(key, value, initial)
    outputs = []
    if gamma is None:
        chunks = (tensor.unbind(2) for tensor in (q, k, w, u, causal_scores))
        for q_chunk, k_chunk, w_chunk, u_chunk, scores in zip(*chunks, strict=True):
            new_values = u_chunk - w_chunk @ state  # (B, heads, C, d_v)
            outputs.append(q_chunk @ state + scores @ new_values)
            state = state + k_chunk.transpose(-1, -2) @ new_values
        return torch.cat(outputs, 2)[:, :, :steps], state
    assert last_gamma is not None and remaining is not None
    tensors = (q, k, w, u, causal_scores, gamma, last_gamma, remaining)
    for q_chunk, k_chunk, w_chunk, u_chunk, scores, g, g_last, rest in zip(
        *(tensor.unbind(2) for tensor in tensors), strict=True
    ):
        new_values = u_chunk - w_chunk @ state
        outputs.append(g * (q_chunk @ state) + scores @ new_values)
        state = g_last * state + k_chunk.transpose(-1, -2) @ (rest * new_values)
    return torch.cat(outputs, 2)[:, :, :steps], state


DELTA_SCAN_IMPLEMENTATIONS = {"loop": delta_scan_loop, "chunked": delta_scan_chunked}


def delta_scan(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    beta: Tensor,
    initial: Tensor | None = None,
    implementation: str = "chunked",
    log_decay: Tensor | None = None,
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
    if log_decay is not None and log_decay.shape != key.shape[:3]:
        raise ValueError(
            f"log_decay must have shape {tuple(key.shape[:3])}, got {tuple(log_decay.shape)}"
        )
    expected = (*key.shape[:2], key.shape[-1], value.shape[-1])
    if initial is not None and tuple(initial.shape) != expected:
        raise ValueError(f"initial must have shape {expected}, got {tuple(initial.shape)}")
    return DELTA_SCAN_IMPLEMENTATIONS[implementation](query, key, value, beta, initial, log_decay)
