"""The shared split machinery: seed streams, the hash partition, drawing one side."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.benchmarks.batches import (
    TEST_BUCKETS,
    TokenBatch,
    draw_split,
    is_test_identity,
    split_generator,
)


def test_split_streams_differ_by_split_and_seed_and_repeat():
    def first_draws(seed: int, split: str) -> list[int]:
        return torch.randint(1000, (8,), generator=split_generator(seed, split)).tolist()

    assert first_draws(0, "train") == first_draws(0, "train")
    assert first_draws(0, "train") != first_draws(0, "test")
    assert first_draws(0, "train") != first_draws(1, "train")
    with pytest.raises(ValueError, match="seed: expected an int >= 0, got -1"):
        split_generator(-1, "train")


def test_hash_partition_is_fixed_and_puts_a_quarter_in_test():
    identities = torch.arange(8000).reshape(4000, 2)
    flags = is_test_identity(identities)
    assert torch.equal(flags, is_test_identity(identities.clone()))
    assert abs(float(flags.double().mean()) - 1 / TEST_BUCKETS) < 0.03


def test_draw_split_keeps_one_side_and_fails_when_that_side_is_empty():
    def draw(count: int) -> TokenBatch:
        inputs = torch.randint(10**6, (count, 3), generator=generator)
        return TokenBatch(inputs, inputs, torch.ones_like(inputs, dtype=torch.bool))

    generator = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        batch = draw_split(draw, lambda b: b.inputs, 50, split)
        assert batch.inputs.shape == (50, 3)
        assert bool((is_test_identity(batch.inputs) == (split == "test")).all())
    train_row = next(
        row for row in torch.arange(100).reshape(50, 2) if not is_test_identity(row[None])
    )

    def constant(count: int) -> TokenBatch:
        inputs = train_row.expand(count, 2).clone()
        return TokenBatch(inputs, inputs, torch.ones_like(inputs, dtype=torch.bool))

    with pytest.raises(RuntimeError, match="found 0 of 4 test sequences"):
        draw_split(constant, lambda b: b.inputs, 4, "test")
