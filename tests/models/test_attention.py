"""Attention: the four scores against their equations, masking, shapes and errors."""

from __future__ import annotations

import pytest
import torch

from rnnkit.models.attention import ATTENTION_KINDS, Attention


def _inputs(batch: int = 3, source: int = 5, size: int = 4):
    generator = torch.Generator().manual_seed(0)
    keys = torch.randn(batch, source, size, generator=generator, dtype=torch.float64)
    query = torch.randn(batch, size, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    return query, keys, mask


def _equation_scores(attention: Attention, query, keys):
    """The score of every (query, key) pair written as in the papers, one pair at a time."""
    batch, source, _ = keys.shape
    scores = torch.empty(batch, source, dtype=keys.dtype)
    for b in range(batch):
        for s in range(source):
            q, k = query[b], keys[b, s]
            if attention.kind == "dot":
                scores[b, s] = q @ k
            elif attention.kind == "general":
                scores[b, s] = q @ (attention.key_projection.weight @ k)
            else:  # additive W_q q + W_k k, concat W [q; k]: the same form with one bias
                inner = attention.query_projection(q) + attention.key_projection(k)
                scores[b, s] = attention.vector.weight[0] @ torch.tanh(inner)
    return scores


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_scores_follow_the_equations(kind):
    query, keys, mask = _inputs()
    attention = Attention(kind, 4, 4, attention_size=6).double()
    expected = _equation_scores(attention, query, keys)
    scores = attention.scores(query, attention.prepare(keys))
    torch.testing.assert_close(scores, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_padded_positions_get_zero_weight_and_context_ignores_them(kind):
    query, keys, mask = _inputs()
    attention = Attention(kind, 4, 4).double()
    context, weights = attention(query, keys, mask)
    assert torch.all(weights[~mask] == 0)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, dtype=torch.float64))
    garbage = keys.clone()
    garbage[~mask] = 1e6  # what sits in padded positions must not matter
    context_garbage, weights_garbage = attention(query, garbage, mask)
    torch.testing.assert_close(context_garbage, context)
    torch.testing.assert_close(weights_garbage, weights)
    torch.testing.assert_close(context, (weights.unsqueeze(-1) * keys).sum(1))


@pytest.mark.parametrize("kind", ATTENTION_KINDS)
def test_many_queries_equal_one_at_a_time(kind):
    query, keys, mask = _inputs()
    queries = torch.randn(3, 7, 4, dtype=torch.float64)
    attention = Attention(kind, 4, 4).double()
    context, weights = attention(queries, keys, mask)
    assert context.shape == (3, 7, 4) and weights.shape == (3, 7, 5)
    for step in range(7):
        context_step, weights_step = attention(queries[:, step], keys, mask)
        torch.testing.assert_close(context[:, step], context_step)
        torch.testing.assert_close(weights[:, step], weights_step)


def test_values_different_from_keys():
    query, keys, mask = _inputs()
    values = torch.randn(3, 5, 9, dtype=torch.float64)
    attention = Attention("general", 4, 4).double()
    context, weights = attention(query, keys, mask, values=values)
    assert context.shape == (3, 9)
    torch.testing.assert_close(context, (weights.unsqueeze(-1) * values).sum(1))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="attention kind"):
        Attention("cosine", 4, 4)
    with pytest.raises(ValueError, match="query_size == key_size"):
        Attention("dot", 4, 6)
    attention = Attention("additive", 4, 6)
    with pytest.raises(ValueError, match="keys: expected"):
        attention.prepare(torch.randn(2, 3, 4))
    prepared = attention.prepare(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match="query: expected"):
        attention.scores(torch.randn(2, 5), prepared)
    with pytest.raises(ValueError, match="mask: expected"):
        attention.scores(torch.randn(2, 4), prepared, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one unmasked"):
        attention.scores(torch.randn(2, 4), prepared, torch.zeros(2, 3, dtype=torch.bool))
