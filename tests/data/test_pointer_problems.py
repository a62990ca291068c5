"""Generated pointer-network problems: repeatable batches, exact targets, metrics by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit.data.geometry import (
    convex_hull,
    counterclockwise_tour,
    held_karp,
    polygon_area,
    smallest_index_first,
)
from rnnkit.data.pointer_problems import (
    CONVEX_HULL,
    PROBLEMS,
    SORT,
    TSP,
    PointerBatch,
    draw_batch,
    hull_metrics,
    sort_metrics,
    target_lists,
    tsp_metrics,
)


def batch_of(elements: list[list[list[float]]], targets: list[list[int]]) -> PointerBatch:
    """A batch of hand-made problems (all the same size)."""
    inputs = torch.tensor(elements, dtype=torch.float32)
    lengths = torch.full((len(elements),), inputs.shape[1], dtype=torch.long)
    longest = max(len(target) for target in targets)
    padded = torch.tensor([target + [-1] * (longest - len(target)) for target in targets])
    return PointerBatch(inputs, lengths, padded)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_batches_depend_only_on_the_generator(name):
    problem = PROBLEMS[name]
    first = draw_batch(problem, torch.Generator().manual_seed(3), 40, 5, 9)
    again = draw_batch(problem, torch.Generator().manual_seed(3), 40, 5, 9)
    other = draw_batch(problem, torch.Generator().manual_seed(4), 40, 5, 9)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.inputs, other.inputs)
    assert first.inputs.shape == (40, int(first.lengths.max()), problem.features)
    assert int(first.lengths.min()) >= 5 and int(first.lengths.max()) <= 9
    assert len(set(first.lengths.tolist())) > 1  # sizes drawn per example
    padding = torch.arange(first.inputs.shape[1]) >= first.lengths.unsqueeze(1)
    assert bool((first.inputs[padding] == 0).all())


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_targets_are_exact(name):
    problem = PROBLEMS[name]
    batch = draw_batch(problem, torch.Generator().manual_seed(0), 30, 4, 8)
    elements = batch.inputs.double().numpy()
    for row, target in enumerate(target_lists(batch)):
        example = elements[row, : int(batch.lengths[row])]
        if problem is SORT:
            assert sorted(target) == list(range(len(example)))
            assert bool(np.all(np.diff(example[target, 0]) >= 0))
        elif problem is CONVEX_HULL:
            assert smallest_index_first(target) == convex_hull(example)
            assert example[target[0], 0] == example[:, 0].min()
        else:
            optimal = held_karp(example[None])[1][0].tolist()
            assert target == counterclockwise_tour(example, optimal)
            assert polygon_area(example, target) > 0 and target[0] == 0
    assert problem.metrics(batch, target_lists(batch))["accuracy"] == 1.0


def test_sizes_are_checked():
    generator = torch.Generator()
    with pytest.raises(ValueError, match="min_size <= max_size"):
        draw_batch(SORT, generator, 4, 6, 5)
    with pytest.raises(ValueError, match="3 <= min_size"):
        draw_batch(CONVEX_HULL, generator, 4, 2, 5)
    with pytest.raises(ValueError, match="exact up to 13"):
        draw_batch(TSP, generator, 4, 5, 14)
    with pytest.raises(ValueError, match="batch_size"):
        draw_batch(SORT, generator, 0, 5, 5)


def test_sort_metrics():
    batch = batch_of([[[0.3], [0.1], [0.2]], [[0.9], [0.8], [0.7]]], [[1, 2, 0], [2, 1, 0]])
    metrics = sort_metrics(batch, [[1, 2, 0], [2, 0, 1]])
    assert metrics == {"accuracy": 0.5, "position_accuracy": pytest.approx(4 / 6)}


def test_hull_metrics():
    square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.25]]
    batch = batch_of([square] * 5, [[0, 1, 2, 3]] * 5)
    predictions = [
        [2, 3, 0, 1],  # exact, started elsewhere
        [0, 1, 2],  # a simple triangle: half the area
        [0, 4, 1, 2, 3],  # simple but concave, through the inner point: 1 - 0.125
        [0, 2, 1, 3],  # a bow tie: not simple, coverage 0
        [0, 1, 7],  # points at an element that does not exist: coverage 0
    ]
    metrics = hull_metrics(batch, predictions)
    assert metrics["accuracy"] == pytest.approx(0.2)
    assert metrics["valid"] == pytest.approx(0.6)
    assert metrics["area_coverage"] == pytest.approx((1.0 + 0.5 + 0.875) / 5)


def test_tsp_metrics():
    square = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
    batch = batch_of([square] * 4, [[0, 1, 2, 3]] * 4)
    predictions = [
        [2, 1, 0, 3],  # the optimal cycle, started elsewhere and reversed
        [0, 2, 1, 3],  # crossing: length 2 + 2 sqrt 2
        [0, 1, 1, 3],  # not a permutation
        [0, 1, 2],  # misses a city
    ]
    metrics = tsp_metrics(batch, predictions)
    assert metrics["accuracy"] == pytest.approx(0.25)
    assert metrics["invalid_tours"] == pytest.approx(0.5)
    assert metrics["tour_ratio"] == pytest.approx((1.0 + (2.0 + 2.0 * np.sqrt(2.0)) / 4.0) / 2)
    assert np.isnan(tsp_metrics(batch_of([square], [[0, 1, 2, 3]]), [[0, 0, 1, 2]])["tour_ratio"])
