"""Generated problems for pointer networks: sorting numbers, planar convex hulls, planar
travelling-salesman tours (Vinyals, Fortunato & Jaitly 2015, https://arxiv.org/abs/1506.03134),
with exact targets and the metrics of predicted outputs.

Every example draws its size n uniformly from ``min_size..max_size``; a batch is padded to its
largest n and carries ``lengths``. Numbers and points are uniform in [0, 1) and [0, 1)^2. All
draws come from the ``torch.Generator`` given, so a batch depends only on it.

Targets are element indices (0-based), padded with -1:

    sort:         the indices of the numbers in ascending order (a permutation)
    convex-hull:  the hull vertices (collinear points excluded), counter-clockwise from the
                  leftmost one (smallest x, then smallest y); a model adds its own end symbol
    tsp:          the optimal tour by Held-Karp, from city 0, counter-clockwise (a permutation)

Hulls and tours are compared in their canonical forms (``geometry.convex_hull``: from the
smallest index; ``geometry.canonical_tour``: from city 0, the second city the smaller of the
two neighbours), but trained towards the leftmost vertex first and the counter-clockwise
direction: a network sees which point is leftmost and which way a tour turns, not which
point has the smallest index. Measured with batches of 128, hidden and attention sizes 128:
hull validation loss after 600 steps at lr 1e-2, 0.15 against 0.22 nats per pointer with
canonical targets (accuracy 72% against 58%, area coverage 99.4% against 98.0%); tsp at lr
2e-3, 0.22 after 600 steps against 0.37 after 562 (0.62 against 1.05 at its first free choice).

Metrics of predictions (lists of element indices, end symbol excluded):

    accuracy        the prediction equals the target (hull, tsp: in canonical form: the same
                    vertices in the same cyclic order; for tsp either direction)
    area_coverage   (hull) area of the predicted polygon / area of the true hull, counted as 0
                    unless the prediction is a simple polygon (at least 3 distinct real points,
                    no touching or crossing edges, nonzero area); a simple polygon on the points
                    lies inside their hull, so coverage is at most 1
    valid           (hull) the fraction of predictions that are simple polygons
    tour_ratio      (tsp) mean of predicted length / optimal length over the valid tours
    invalid_tours   (tsp) the fraction of predictions that are not permutations of the cities
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from rnnkit.data.geometry import (
    HELD_KARP_MAX_CITIES,
    canonical_tour,
    convex_hull,
    counterclockwise_tour,
    held_karp,
    is_simple_polygon,
    leftmost_first,
    polygon_area,
    smallest_index_first,
    tour_length,
)
from rnnkit.strategies.validation import length_mask


class PointerBatch(NamedTuple):
    """A padded batch of problems and their exact targets."""

    inputs: Tensor
    """``(B, N, F)`` float32: numbers (F = 1) or points (F = 2), zero beyond each length."""
    lengths: Tensor
    """``(B,)`` int64: elements per example."""
    targets: Tensor
    """``(B, L)`` int64: element indices of the target output, -1 beyond its length."""


@dataclass(frozen=True)
class PointerProblem:
    """How to draw one kind of problem and score predictions of it."""

    name: str
    features: int
    """Features per element: 1 for numbers, 2 for points."""
    targets: Callable[[np.ndarray, np.ndarray], list[list[int]]]
    """Padded elements ``(B, N, F)`` and lengths ``(B,)`` -> each example's target indices."""
    metrics: Callable[[PointerBatch, list[list[int]]], dict[str, float]]
    """``metrics(batch, predictions)``: the problem's metrics (see the module docstring)."""
    min_size: int = 1
    """The smallest n the problem and its metrics are defined for."""
    max_size: int | None = None
    """The largest n the exact targets can be computed for (None: any)."""


def draw_batch(
    problem: PointerProblem,
    generator: torch.Generator,
    batch_size: int,
    min_size: int,
    max_size: int,
) -> PointerBatch:
    """``batch_size`` problems of ``min_size..max_size`` elements each, with their targets."""
    check_sizes(problem, min_size, max_size)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive number of examples, got {batch_size}")
    lengths = torch.randint(min_size, max_size + 1, (batch_size,), generator=generator)
    inputs = torch.rand(batch_size, max_size, problem.features, generator=generator)
    inputs = inputs[:, : int(lengths.max())]
    real = length_mask(lengths, inputs.shape[1])  # (B, N)
    assert real is not None  # lengths is a tensor
    inputs *= real.unsqueeze(-1)  # padding elements are zeros
    targets = problem.targets(inputs.double().numpy(), lengths.numpy())
    return PointerBatch(inputs, lengths, pad_indices(targets))


def check_sizes(problem: PointerProblem, min_size: int, max_size: int) -> None:
    """Refuse a size range the problem cannot be drawn (or solved exactly) for."""
    if not problem.min_size <= min_size <= max_size:
        raise ValueError(
            f"sizes: expected {problem.min_size} <= min_size <= max_size for {problem.name}, "
            f"got min_size={min_size}, max_size={max_size}"
        )
    if problem.max_size is not None and max_size > problem.max_size:
        raise ValueError(
            f"max_size: {problem.name} targets are exact up to {problem.max_size} elements, "
            f"got {max_size}"
        )


def pad_indices(sequences: list[list[int]]) -> Tensor:
    """Lists of indices -> ``(B, L)`` int64 padded with -1."""
    longest = max(1, max(len(sequence) for sequence in sequences))
    padded = torch.full((len(sequences), longest), -1, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded


def target_lists(batch: PointerBatch) -> list[list[int]]:
    """The targets of a batch as lists of indices (padding dropped)."""
    return [[index for index in row if index >= 0] for row in batch.targets.tolist()]


def examples(batch: PointerBatch) -> list[np.ndarray]:
    """Each example's elements ``(n, F)`` as float64 numpy arrays."""
    elements = batch.inputs.double().numpy()
    return [elements[row, :size] for row, size in enumerate(batch.lengths.tolist())]


def sequence_accuracy(predictions: list[list[int]], targets: list[list[int]]) -> float:
    """The fraction of predictions that equal their target exactly."""
    return float(np.mean([list(p) == list(t) for p, t in zip(predictions, targets, strict=True)]))


def sort_targets(numbers: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Indices of each example's numbers ``(B, N, 1)`` in ascending order (stable)."""
    return [
        [int(index) for index in np.argsort(numbers[row, :size, 0], kind="stable")]
        for row, size in enumerate(lengths)
    ]


def hull_targets(points: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Each example's convex hull of ``points (B, N, 2)``, from its leftmost vertex."""
    return [
        leftmost_first(points[row, :size], convex_hull(points[row, :size]))
        for row, size in enumerate(lengths)
    ]


def tsp_targets(points: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Each example's optimal tour from city 0, counter-clockwise: Held-Karp on each group of
    examples of the same size."""
    tours: list[list[int]] = [[] for _ in lengths]
    for size in np.unique(lengths):
        rows = np.flatnonzero(lengths == size)
        _, group_tours = held_karp(points[rows, :size])
        for row, tour in zip(rows, group_tours, strict=True):
            tours[row] = counterclockwise_tour(points[row, :size], tour)
    return tours


def sort_metrics(batch: PointerBatch, predictions: list[list[int]]) -> dict[str, float]:
    """``accuracy``: exact sequences; ``position_accuracy``: positions right, over all targets."""
    targets = target_lists(batch)
    right = sum(
        sum(a == b for a, b in zip(prediction, target, strict=False))
        for prediction, target in zip(predictions, targets, strict=True)
    )
    total = sum(len(target) for target in targets)
    return {
        "accuracy": sequence_accuracy(predictions, targets),
        "position_accuracy": right / total,
    }


def hull_metrics(batch: PointerBatch, predictions: list[list[int]]) -> dict[str, float]:
    """``accuracy``, ``area_coverage`` and ``valid`` (see the module docstring)."""
    targets = target_lists(batch)
    coverages, valid = [], []
    for points, prediction, target in zip(examples(batch), predictions, targets, strict=True):
        simple = all(0 <= index < len(points) for index in prediction) and is_simple_polygon(
            points, prediction
        )
        true_area = polygon_area(points, target)
        coverage = abs(polygon_area(points, prediction)) / true_area if simple else 0.0
        coverages.append(coverage)
        valid.append(simple)
    return {
        "accuracy": sequence_accuracy(
            [smallest_index_first(prediction) for prediction in predictions],
            [smallest_index_first(target) for target in targets],
        ),
        "area_coverage": float(np.mean(coverages)),
        "valid": float(np.mean(valid)),
    }


def tsp_metrics(batch: PointerBatch, predictions: list[list[int]]) -> dict[str, float]:
    """``accuracy`` (optimal tours), ``tour_ratio`` and ``invalid_tours`` (see the module
    docstring); ``tour_ratio`` is NaN when no tour is valid."""
    optimal, ratios, invalid = [], [], 0
    for points, prediction, target in zip(
        examples(batch), predictions, target_lists(batch), strict=True
    ):
        if sorted(prediction) != list(range(len(points))):
            invalid += 1
            optimal.append(False)
            continue
        optimal.append(canonical_tour(prediction) == canonical_tour(target))
        ratios.append(tour_length(points, prediction) / tour_length(points, target))
    return {
        "accuracy": float(np.mean(optimal)),
        "tour_ratio": float(np.mean(ratios)) if ratios else float("nan"),
        "invalid_tours": invalid / len(predictions),
    }


SORT = PointerProblem("sort", 1, sort_targets, sort_metrics)
CONVEX_HULL = PointerProblem("convex-hull", 2, hull_targets, hull_metrics, min_size=3)
TSP = PointerProblem("tsp", 2, tsp_targets, tsp_metrics, min_size=3, max_size=HELD_KARP_MAX_CITIES)
PROBLEMS = {problem.name: problem for problem in (SORT, CONVEX_HULL, TSP)}
