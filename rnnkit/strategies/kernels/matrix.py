"""The gated matrix-state scan of linear attention, as a loop and in chunks.

Per batch element and head, with a state ``S_t (d_k, d_v)``:

    S_t = diag(alpha_t) S_{t-1} + k_t v_t^T,    S_0 = initial
    o_t = S_t^T q_t

``alpha_t = exp(log_decay_t)`` is a per-key-dimension decay (gated linear attention, Yang, Wang,
Shen, Panda, Kim 2023, "Gated Linear Attention Transformers with Hardware-Efficient Training",
https://arxiv.org/abs/2312.06635) or one scalar per head (``log_decay`` of last size 1: mLSTM,
RetNet). All implementations take ``query, key (B, heads, T, d_k)``, ``value (B, heads, T,
d_v)``, ``log_decay (B, heads, T, d_k or 1)`` and ``initial (B, heads, d_k, d_v)`` or None
(zeros), and return ``outputs (B, heads, T, d_v)`` and the final state ``(B, heads, d_k, d_v)``;
gradients come from autograd:

- ``loop``: the reference, one step after another;
- ``chunked``: the chunkwise parallel form of Yang et al. 2023 (Section 4): chunks of C steps,
  attention-like inside a chunk, the state passed from chunk to chunk. With ``b_t`` the
  cumulative sum of ``log_decay`` from the chunk's start and ``S`` the state entering it:

      o_t = S^T (q_t * exp(b_t)) + sum_{s <= t} (q_t . (k_s * exp(b_t - b_s))) v_s
      S'  = diag(exp(b_C)) S + sum_s (k_s * exp(b_C - b_s)) v_s^T

  Every exponent is a difference ``b_t - b_s`` with ``s <= t``, a sum of ``log_decay`` over
  steps in between, so with ``log_decay <= 0`` no factor exceeds 1 (no ``exp(-b_s)`` that
  could overflow). Per-dimension decays make the intra-chunk scores an O(C^2 d_k) product per
  chunk; scalar decays an O(C^2) one.
"""

from __future__ import annotations

import torch
from torch import Tensor

DEFAULT_CHUNK_SIZE = 16


def matrix_scan_loop(
    query: Tensor, key: Tensor, value: Tensor, log_decay: Tensor, initial: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The reference loop over time; see the module docstring."""
    state = initial_or_zeros(key, value, initial)
    decays = log_decay.exp().unbind(2)
    outputs = []
    for q, k, v, decay in zip(query.unbind(2), key.unbind(2), value.unbind(2), decays, strict=True):
        state = decay.unsqueeze(-1) * state + k.unsqueeze(-1) * v.unsqueeze(-2)
        outputs.append(torch.einsum("bhkv,bhk->bhv", state, q))
    return torch.stack(outputs, 2), state


def matrix_scan_chunked(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_decay: Tensor,
    initial: Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor]:
    """The chunkwise parallel form of ``matrix_scan_loop``; see the module docstring."""
    steps = query.shape[2]
    log_decay = log_decay.expand(*key.shape[:3], log_decay.shape[-1])
    q, k, v, g = (
        split_chunks(tensor, chunk_size) for tensor in (query, key, value, log_decay)
    )  # (B, heads, K, C, d): padding steps have decay 1 and k = v = q = 0
    b = g.cumsum(3)  # (B, heads, K, C, d or 1)
    last = b[:, :, :, -1:]  # (B, heads, K, 1, d or 1)
    # what each chunk adds to the state it receives, and how much of that state it keeps
    added = (k * (last - b).exp()).transpose(-1, -2) @ v  # (B, heads, K, d_k, d_v)
    kept = last.squeeze(3).exp().unsqueeze(-1)  # (B, heads, K, d_k or 1, 1)
    state = initial_or_zeros(key, value, initial)
    entering = []
    for kept_chunk, added_chunk in zip(kept.unbind(2), added.unbind(2), strict=True):
        entering.append(state)
        state = kept_chunk * state + added_chunk
    starts = torch.stack(entering, 2)  # (B, heads, K, d_k, d_v)
    outputs = (q * b.exp()) @ starts + _intra_chunk_scores(q, k, b) @ v
    return outputs.flatten(2, 3)[:, :, :steps], state


def _intra_chunk_scores(q: Tensor, k: Tensor, b: Tensor) -> Tensor:
    """``A[t, s] = q_t . (k_s * exp(b_t - b_s))`` for ``s <= t``, else 0; ``(B, heads, K, C,
    C)``."""
    size = q.shape[3]
    future = torch.ones(size, size, dtype=torch.bool, device=q.device).triu(1)  # s > t
    difference = b.unsqueeze(4) - b.unsqueeze(3)  # (B, heads, K, C_t, C_s, d or 1)
    decay = difference.masked_fill(future.unsqueeze(-1), float("-inf")).exp()
    if b.shape[-1] == 1:  # one decay per head: a plain matrix product, then scaled
        return (q @ k.transpose(-1, -2)) * decay.squeeze(-1)
    return torch.einsum("bhntd,bhnsd,bhntsd->bhnts", q, k, decay)


def split_chunks(tensor: Tensor, chunk_size: int) -> Tensor:
    """``(B, heads, T, d) -> (B, heads, K, C, d)``, zero-padded to K * C steps."""
    batch, heads, steps, width = tensor.shape
    chunks = -(-steps // chunk_size)
    padding = chunks * chunk_size - steps
    if padding:
        tensor = torch.cat([tensor, tensor.new_zeros(batch, heads, padding, width)], 2)
    return tensor.reshape(batch, heads, chunks, chunk_size, width)


def initial_or_zeros(key: Tensor, value: Tensor, initial: Tensor | None) -> Tensor:
    """``initial`` in the dtype of ``value``, or the zero state ``(B, heads, d_k, d_v)``."""
    if initial is not None:
        return initial.to(value.dtype)
    batch, heads, _, key_size = key.shape
    return value.new_zeros(batch, heads, key_size, value.shape[-1])


MATRIX_SCAN_IMPLEMENTATIONS = {"loop": matrix_scan_loop, "chunked": matrix_scan_chunked}


def matrix_scan(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    log_decay: Tensor,
    initial: Tensor | None = None,
    implementation: str = "chunked",
) -> tuple[Tensor, Tensor]:
    """``S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t`` with checked
    shapes; see the module docstring."""
    if implementation not in MATRIX_SCAN_IMPLEMENTATIONS:
        raise ValueError(
            f"unknown matrix scan implementation {implementation!r}; "
            f"known: {', '.join(MATRIX_SCAN_IMPLEMENTATIONS)}"
        )
    if query.dim() != 4 or key.shape != query.shape:
        raise ValueError(
            f"query and key must have one shape (batch, heads, time, key_size), got "
            f"{tuple(query.shape)} and {tuple(key.shape)}"
        )
    if value.shape[:3] != key.shape[:3] or value.dim() != 4:
        raise ValueError(
            f"value must have shape {(*key.shape[:3], 'value_size')}, got {tuple(value.shape)}"
        )
    if log_decay.shape[:3] != key.shape[:3] or log_decay.shape[-1] not in (1, key.shape[-1]):
        raise ValueError(
            f"log_decay must have shape {tuple(key.shape)} or {(*key.shape[:3], 1)}, got "
            f"{tuple(log_decay.shape)}"
        )
    expected = (*key.shape[:2], key.shape[-1], value.shape[-1])
    if initial is not None and tuple(initial.shape) != expected:
        raise ValueError(f"initial must have shape {expected}, got {tuple(initial.shape)}")
    return MATRIX_SCAN_IMPLEMENTATIONS[implementation](query, key, value, log_decay, initial)
