"""Causal multi-head self-attention with rotary position embeddings, the attention baseline.

For inputs ``x_t`` (``t = 1..T``) and heads of size ``d = D / num_heads``:

    q_t, k_t, v_t = W_q x_t, W_k x_t, W_v x_t               split into heads
    q_t, k_t = R(t) q_t, R(t) k_t                            rotary positions
    y_t = W_o concat_heads(sum_{s in A(t)} softmax_s(q_t . k_s / sqrt(d)) v_s)

over ``A(t) = {s <= t}`` (full causal, ``window=0``) or, with a sliding window of ``w``
positions, ``A(t) = {t - w < s <= t}``: the last ``w`` positions, ``t`` itself included
(sliding-window attention, the short-term memory of Titans' MAG variant, Behrouz et al. 2025,
https://arxiv.org/abs/2501.00663, Section 4.2),

with ``R(t)`` rotating each pair of features ``(2i, 2i + 1)`` of a head by the angle
``t * base^(-2i / d)`` (RoFormer, Su et al. 2021, https://arxiv.org/abs/2104.09864), so
``q_t . k_s`` depends on ``t - s`` only. The weights come from torch's
``scaled_dot_product_attention``.

Padding: right padding is safe without a mask, since a position only attends to itself and earlier
positions, all of which are real tokens for every real position; outputs at padded positions are
not meaningful. Decoding keeps a ``KVCache`` of the rotated keys and the values; with a window
the cache still keeps every position (the window is a mask, and the cache's length gives the
next position), so its memory grows with the sequence as with full attention.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as functional
from torch import Tensor, nn


class KVCache(NamedTuple):
    """Keys (rotated) and values of the positions seen so far, ``(B, heads, S, head_size)``."""

    keys: Tensor
    values: Tensor


def rotary_embedding(features: Tensor, positions: Tensor, base: float = 10000.0) -> Tensor:
    """Rotate each pair ``(2i, 2i + 1)`` of ``features (..., T, d)`` by ``positions (T,) *
    base^(-2i / d)``; ``d`` must be even."""
    size = features.shape[-1]
    exponents = torch.arange(0, size, 2, device=features.device, dtype=features.dtype) / size
    frequencies = base ** (-exponents)  # (d/2,)
    angles = positions.to(features.dtype)[:, None] * frequencies[None, :]  # (T, d/2)
    cosine, sine = angles.cos(), angles.sin()
    even, odd = features[..., 0::2], features[..., 1::2]  # (..., T, d/2)
    rotated = torch.stack((even * cosine - odd * sine, even * sine + odd * cosine), dim=-1)
    return rotated.flatten(-2)  # (..., T, d)


class CausalSelfAttention(nn.Module):
    """Causal multi-head self-attention over ``(B, T, D)`` with rotary positions.

    Args:
        model_size: features D of inputs and outputs.
        num_heads: heads; D must divide by it and the head size must be even (for the rotation).
        rotary_base: the base of the rotation frequencies.
        window: positions each position attends to, itself included (0: all earlier ones).
    """

    def __init__(
        self, model_size: int, num_heads: int, rotary_base: float = 10000.0, window: int = 0
    ) -> None:
        super().__init__()
        if model_size % num_heads or (model_size // num_heads) % 2:
            raise ValueError(
                "model_size must be num_heads times an even head size, got "
                f"model_size={model_size}, num_heads={num_heads}"
            )
        if isinstance(window, bool) or not isinstance(window, int) or window < 0:
            raise ValueError(f"window must be 0 (full causal) or a positive int, got {window!r}")
        self.window = window
        self.model_size = model_size
        self.num_heads = num_heads
        self.head_size = model_size // num_heads
        self.rotary_base = rotary_base
        self.query_key_value = nn.Linear(model_size, 3 * model_size)
        self.output = nn.Linear(model_size, model_size)

    def empty_cache(self, batch_size: int, like: Tensor) -> KVCache:
        """A cache of no positions, ``(B, heads, 0, head_size)``, on ``like``'s device and dtype."""
        empty = like.new_zeros(batch_size, self.num_heads, 0, self.head_size)
        return KVCache(empty, empty)

    def forward(self, inputs: Tensor, cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """``inputs (B, T, D)`` after the cached positions -> ``(B, T, D)`` and the cache
        extended by these T positions."""
        length = inputs.shape[1]
        past = 0 if cache is None else cache.keys.shape[2]
        queries, keys, values, positions = self.rotated_projections(inputs, past)
        if cache is not None:
            keys = torch.cat((cache.keys, keys), dim=2)  # (B, heads, S + T, d)
            values = torch.cat((cache.values, values), dim=2)
        if past == 0 and self.window == 0:
            attended = functional.scaled_dot_product_attention(
                queries, keys, values, is_causal=True
            )
        else:
            # is_causal aligns the mask top-left; with a cache, query t sees keys up to past + t
            key_positions = torch.arange(past + length, device=inputs.device)
            allowed = key_positions[None, :] <= positions[:, None]  # (T, S + T)
            if self.window:
                allowed = allowed & (key_positions[None, :] > positions[:, None] - self.window)
            attended = functional.scaled_dot_product_attention(
                queries, keys, values, attn_mask=allowed
            )
        return self.merge_heads(attended), KVCache(keys, values)

    def rotated_projections(self, inputs: Tensor, past: int) -> tuple[Tensor, ...]:
        """Queries, keys and values ``(B, heads, T, d)`` of ``inputs (B, T, D)`` at positions
        ``past .. past + T - 1`` (queries and keys rotated), and those positions ``(T,)``."""
        batch, length, _ = inputs.shape
        projected = self.query_key_value(inputs).view(batch, length, 3, self.num_heads, -1)
        queries, keys, values = projected.permute(2, 0, 3, 1, 4)  # each (B, heads, T, d)
        positions = torch.arange(past, past + length, device=inputs.device)
        queries = rotary_embedding(queries, positions, self.rotary_base)
        keys = rotary_embedding(keys, positions, self.rotary_base)
        return queries, keys, values, positions

    def merge_heads(self, attended: Tensor) -> Tensor:
        """The heads' outputs ``(B, heads, T, d)`` -> ``(B, T, D)`` through the output map."""
        batch, _, length, _ = attended.shape
        return self.output(attended.transpose(1, 2).reshape(batch, length, self.model_size))

    def step(self, inputs: Tensor, cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """One position: ``x_t (B, D)`` -> ``y_t (B, D)`` and the extended cache."""
        outputs, cache = self.forward(inputs[:, None], cache)
        return outputs[:, 0], cache

    def extra_repr(self) -> str:
        window = f", window={self.window}" if self.window else ""
        return f"model_size={self.model_size}, num_heads={self.num_heads}{window}"
