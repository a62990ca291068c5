"""Exact geometry against brute force (hulls, Held-Karp), and hand-made areas, polygons, tours."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

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

SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def brute_force_hull(points: np.ndarray) -> list[int]:
    """Edges i -> j with every other point strictly to their left, chained from the smallest
    vertex index."""
    following = {}
    for i, j in itertools.permutations(range(len(points)), 2):
        others = [k for k in range(len(points)) if k not in (i, j)]
        a, b = points[i], points[j]
        turns = [
            (b[0] - a[0]) * (points[k][1] - a[1]) - (b[1] - a[1]) * (points[k][0] - a[0])
            for k in others
        ]
        if all(turn > 0 for turn in turns):
            following[i] = j
    hull = [min(following)]
    while following[hull[-1]] != hull[0]:
        hull.append(following[hull[-1]])
    return hull


@pytest.mark.parametrize("size", [3, 4, 5, 8, 12])
def test_convex_hull_equals_brute_force(size):
    generator = np.random.default_rng(size)
    for _ in range(20):
        points = generator.random((size, 2))
        assert convex_hull(points) == brute_force_hull(points)


def test_convex_hull_is_counter_clockwise_from_the_smallest_index_without_collinear_points():
    points = np.array(
        [[0.5, 0.5], [1.0, 1.0], [0.5, 0.0], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.5]]
    )  # the centre, and midpoints of two edges, are not vertices
    hull = convex_hull(points)
    assert hull == [1, 5, 3, 4]
    assert polygon_area(points, hull) == pytest.approx(1.0)
    assert convex_hull(points[:1]) == [0]
    assert convex_hull(np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0]])) == [0, 1]
    with pytest.raises(ValueError, match="points: expected"):
        convex_hull(np.zeros((3, 3)))


def brute_force_tour(points: np.ndarray) -> tuple[float, list[int]]:
    best = (np.inf, [])
    for rest in itertools.permutations(range(1, len(points))):
        tour = [0, *rest]
        length = tour_length(points, tour)
        if length < best[0]:
            best = (length, tour)
    return best


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7])
def test_held_karp_equals_brute_force(size):
    points = np.random.default_rng(size).random((6, size, 2))
    lengths, tours = held_karp(points)
    assert tours.shape == (6, size)
    for problem, length, tour in zip(points, lengths, tours, strict=True):
        best_length, best_tour = brute_force_tour(problem)
        assert length == pytest.approx(best_length, abs=1e-12)
        assert tour.tolist() == canonical_tour(best_tour)
        assert tour_length(problem, tour) == pytest.approx(length, abs=1e-12)


def test_held_karp_chunks_and_limits():
    points = np.random.default_rng(0).random((300, 6, 2))  # more than one chunk
    lengths, tours = held_karp(points)
    assert lengths[299] == pytest.approx(brute_force_tour(points[299])[0])
    assert tours[299, 0] == 0 and tours[299, 1] < tours[299, -1]
    too_many = np.zeros((1, HELD_KARP_MAX_CITIES + 1, 2))
    with pytest.raises(ValueError, match="at most 13 cities"):
        held_karp(too_many)
    with pytest.raises(ValueError, match="points: expected"):
        held_karp(np.zeros((4, 2)))


def test_canonical_tour():
    assert canonical_tour([2, 3, 0, 1]) == [0, 1, 2, 3]
    assert canonical_tour([2, 0, 3, 1]) == [0, 2, 1, 3]
    assert canonical_tour([0, 1, 2, 3]) == [0, 1, 2, 3]
    assert canonical_tour([3, 2, 1, 0]) == [0, 1, 2, 3]
    assert canonical_tour([1, 0]) == [0, 1]
    with pytest.raises(ValueError, match="city 0"):
        canonical_tour([1, 2, 3])


def test_rotations_of_a_cycle():
    points = np.array([[0.5, 0.0], [1.0, 0.5], [0.0, 0.5], [0.0, 0.2]])
    assert smallest_index_first([2, 3, 0, 1]) == [0, 1, 2, 3] and smallest_index_first([]) == []
    assert leftmost_first(points, [0, 1, 2, 3]) == [3, 0, 1, 2]  # x ties: the lower point


def test_counterclockwise_tour():
    assert counterclockwise_tour(SQUARE, [0, 3, 2, 1]) == [0, 1, 2, 3]
    assert counterclockwise_tour(SQUARE, [2, 3, 0, 1]) == [2, 3, 0, 1]
    assert counterclockwise_tour(SQUARE, [1, 0, 3, 2]) == [1, 2, 3, 0]


def test_polygon_area_and_tour_length():
    assert polygon_area(SQUARE, [0, 1, 2, 3]) == pytest.approx(1.0)
    assert polygon_area(SQUARE, [3, 2, 1, 0]) == pytest.approx(-1.0)
    assert polygon_area(SQUARE, [0, 1, 2]) == pytest.approx(0.5)
    assert polygon_area(SQUARE, [0, 1]) == 0.0
    assert tour_length(SQUARE, [0, 1, 2, 3]) == pytest.approx(4.0)
    assert tour_length(SQUARE, [0, 2, 1, 3]) == pytest.approx(2.0 + 2.0 * np.sqrt(2.0))
    assert tour_length(SQUARE, [2]) == 0.0


def test_simple_polygons():
    assert is_simple_polygon(SQUARE, [0, 1, 2, 3])
    assert is_simple_polygon(SQUARE, [3, 2, 1, 0])  # clockwise is still simple
    assert is_simple_polygon(SQUARE, [0, 1, 2])
    assert not is_simple_polygon(SQUARE, [0, 2, 1, 3])  # a bow tie
    assert not is_simple_polygon(SQUARE, [0, 1, 2, 1])  # a repeated vertex
    assert not is_simple_polygon(SQUARE, [0, 1])
    line = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    assert not is_simple_polygon(line, [0, 1, 2])  # no area
    dart = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.2], [1.0, 1.0], [0.0, 1.0]])
    assert is_simple_polygon(dart, [0, 1, 2, 3, 4])  # concave but simple
    touching = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 0.0], [2.0, 1.0], [0.0, 1.0]])
    assert not is_simple_polygon(touching, [0, 1, 3, 2, 4])  # vertex 2 lies on edge 0-1
