"""Causal self-attention with a sliding window: against an explicit masked softmax written one
query at a time (values and gradients, float64), through the KV cache in pieces, and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rnnkit.models.causal_attention import CausalSelfAttention, rotary_embedding

EXACT = {"rtol": 1e-10, "atol": 1e-10}


def masked_softmax_reference(attention: CausalSelfAttention, inputs: torch.Tensor) -> torch.Tensor:
    """``y_t`` from the scores of the keys ``t - window < s <= t`` (``s <= t`` for window 0),
    each query on its own: ``inputs (B, T, D) -> (B, T, D)``."""
    batch, length, size = inputs.shape
    heads, head_size = attention.num_heads, attention.head_size
    projected = attention.query_key_value(inputs).view(batch, length, 3, heads, head_size)
    queries, keys, values = projected.permute(2, 0, 3, 1, 4)  # (B, heads, T, d)
    positions = torch.arange(length)
    queries = rotary_embedding(queries, positions, attention.rotary_base)
    keys = rotary_embedding(keys, positions, attention.rotary_base)
    outputs = []
    for t in range(length):
        first = 0 if attention.window == 0 else max(0, t - attention.window + 1)
        scores = torch.einsum("bhd,bhsd->bhs", queries[:, :, t], keys[:, :, first : t + 1])
        weights = torch.softmax(scores / math.sqrt(head_size), dim=-1)
        mixed = torch.einsum("bhs,bhsd->bhd", weights, values[:, :, first : t + 1])
        outputs.append(mixed.reshape(batch, size))
    return attention.output(torch.stack(outputs, 1))


def make_attention(window: int) -> CausalSelfAttention:
    torch.manual_seed(window)
    return CausalSelfAttention(8, 2, window=window).double()


@pytest.mark.parametrize("window", [0, 1, 3, 9, 20])
def test_window_equals_the_masked_softmax_values_and_gradients(window):
    attention = make_attention(window)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 9, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    weights = torch.randn(2, 9, 8, dtype=torch.float64, generator=generator)
    actual, cache = attention(inputs)
    expected = masked_softmax_reference(attention, inputs)
    assert_close(actual, expected, **EXACT)
    assert cache.keys.shape == (2, 2, 9, 4)
    wrt = [inputs, *attention.parameters()]
    for got, want in zip(
        torch.autograd.grad((actual * weights).sum(), wrt),
        torch.autograd.grad((expected * weights).sum(), wrt),
        strict=True,
    ):
        assert_close(got, want, **EXACT)


def test_a_window_ignores_positions_before_it():
    """Changing inputs at or before t - window leaves y_t; changing t - window + 1 does not."""
    attention = make_attention(3)
    inputs = torch.randn(1, 8, 8, dtype=torch.float64)
    changed = inputs.clone()
    changed[:, 2] += 1.0
    with torch.no_grad():
        before, _ = attention(inputs)
        after, _ = attention(changed)
    assert_close(after[:, :2], before[:, :2], **EXACT)  # earlier: causal
    assert not torch.allclose(after[:, 2:5], before[:, 2:5])  # 2 is in the windows of 2, 3, 4
    assert_close(after[:, 5:], before[:, 5:], **EXACT)  # out of the windows of 5, 6, 7


@pytest.mark.parametrize("window", [0, 2, 5])
@pytest.mark.parametrize("pieces", [(4, 1, 1, 3), (1,) * 9, (2, 7)])
def test_decoding_through_the_cache_equals_one_forward(window, pieces):
    attention = make_attention(window)
    inputs = torch.randn(2, 9, 8, dtype=torch.float64)
    with torch.no_grad():
        expected, _ = attention(inputs)
        outputs, cache = [], None
        for piece in inputs.split(list(pieces), 1):
            if piece.shape[1] == 1 and cache is not None:
                output, cache = attention.step(piece[:, 0], cache)
                outputs.append(output[:, None])
            else:
                output, cache = attention(piece, cache)
                outputs.append(output)
    assert_close(torch.cat(outputs, 1), expected, **EXACT)
    assert cache is not None and cache.keys.shape[2] == 9


@pytest.mark.parametrize("window", [-1, 1.5, True])
def test_a_bad_window_names_itself(window):
    with pytest.raises(ValueError, match="window"):
        CausalSelfAttention(8, 2, window=window)
