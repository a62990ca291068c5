"""Digit strings: disjoint image pools, shapes, lengths, determinism."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.digit_strings import (
    IMAGE_SIZE,
    DigitStringsConfig,
    draw_batch,
    draw_set,
    load_pools,
)


@pytest.fixture(scope="module")
def pools():
    return load_pools(DigitStringsConfig())


def test_pools_are_disjoint_stratified_and_cover_every_image(pools):
    indices = {split: set(pool.source_indices.tolist()) for split, pool in pools.items()}
    assert not indices["train"] & indices["validation"]
    assert not indices["train"] & indices["test"]
    assert not indices["validation"] & indices["test"]
    assert sum(len(chosen) for chosen in indices.values()) == 1797
    for split, fraction in (("validation", 0.15), ("test", 0.15), ("train", 0.7)):
        counts = torch.bincount(pools[split].digits, minlength=10)
        assert (counts > 0).all()
        assert abs(len(pools[split].digits) / 1797 - fraction) < 0.01
    for pool in pools.values():
        assert pool.images.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)
        assert float(pool.images.min()) >= 0.0 and float(pool.images.max()) <= 1.0


def test_pools_depend_on_the_split_seed_only(pools):
    again = load_pools(DigitStringsConfig())
    other = load_pools(DigitStringsConfig(split_seed=1))
    assert torch.equal(again["test"].source_indices, pools["test"].source_indices)
    assert not torch.equal(other["test"].source_indices, pools["test"].source_indices)


def test_batch_shapes_lengths_and_padding(pools):
    config = DigitStringsConfig()
    batch = draw_batch(pools["train"], 64, config, torch.Generator().manual_seed(0))
    assert batch.images.shape[:2] == (64, config.height)
    assert batch.images.shape[2] == int(batch.widths.max()) <= config.max_width()
    counts = batch.digit_counts
    assert int(counts.min()) >= 1 and int(counts.max()) <= 8
    assert len(set(counts.tolist())) > 3, "lengths 1 to 8 should all turn up in 64 strings"
    assert batch.digits.shape == (64, int(counts.max()))
    for index in range(64):
        width, count = int(batch.widths[index]), int(counts[index])
        assert count * IMAGE_SIZE <= width <= count * IMAGE_SIZE + (count + 1) * config.max_gap
        assert float(batch.images[index, :, width:].abs().sum()) == 0.0
        assert float(batch.images[index, :, :width].sum()) > 0.0
        assert int(batch.digits[index, count:].abs().sum()) == 0
    assert all(len(text) == int(count) for text, count in zip(batch.strings(), counts, strict=True))


def test_a_one_digit_string_is_its_pool_image_in_a_taller_canvas(pools):
    config = DigitStringsConfig(min_digits=1, max_digits=1, max_gap=0, max_jitter=0)
    batch = draw_batch(pools["test"], 5, config, torch.Generator().manual_seed(3))
    for image, digit in zip(batch.images, batch.digits[:, 0], strict=True):
        matches = (pools["test"].images == image).flatten(1).all(dim=1)
        assert matches.any(), "the string should be one of the test pool's images"
        assert int(pools["test"].digits[matches.nonzero()[0, 0]]) == int(digit)


def test_batches_are_deterministic_given_the_generator(pools):
    config = DigitStringsConfig()
    first = draw_batch(pools["train"], 8, config, torch.Generator().manual_seed(5))
    second = draw_batch(pools["train"], 8, config, torch.Generator().manual_seed(5))
    third = draw_batch(pools["train"], 8, config, torch.Generator().manual_seed(6))
    assert torch.equal(first.images, second.images) and torch.equal(first.digits, second.digits)
    assert first.strings() != third.strings()


def test_fixed_sets_have_the_asked_size(pools):
    batches = draw_set(pools["validation"], 25, 10, DigitStringsConfig(), torch.Generator())
    assert [len(batch) for batch in batches] == [10, 10, 5]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_digits": 0}, "data.min_digits"),
        ({"min_digits": 5, "max_digits": 4}, "data.min_digits"),
        ({"max_gap": -1}, "data.max_gap"),
        ({"test_fraction": 0.9}, "data.validation_fraction"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        load_pools(DigitStringsConfig(**settings))
