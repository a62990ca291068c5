"""Exact planar geometry for the pointer-network tasks: convex hulls, polygons and tours.

Convex hull by Andrew's monotone chain (Andrew 1979, "Another efficient algorithm for convex
hulls in two dimensions"): sort the points by (x, y), build the lower and the upper chain,
popping the last point while the turn ``cross(o, a, b) = (a - o) x (b - o)`` is not strictly
counter-clockwise, so collinear points are not vertices. O(n log n).

Polygon area by the shoelace formula, ``A = 1/2 sum_i (x_i y_{i+1} - x_{i+1} y_i)`` (positive
for counter-clockwise vertices).

Optimal tours by Held-Karp dynamic programming (Held & Karp 1962; Bellman 1962), with city 0
as the start and ``C(S, j)`` the shortest path from city 0 through every city of the set S,
ending at ``j`` in S:

    C({j}, j) = d(0, j)
    C(S, j) = min_{i in S \\ {j}} C(S \\ {j}, i) + d(i, j)
    optimal length = min_j C({1..n-1}, j) + d(j, 0)

O(2^n n^2) time, vectorized here with numpy over a batch of same-size problems and over all
sets of one size at a time. Tours are canonical: they start at city 0 and, of the two
directions, go the one whose second city has the smaller index.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HELD_KARP_MAX_CITIES = 13
"""The largest problem ``held_karp`` accepts (2^12 sets, ~0.3 GB per chunk of 256)."""
_HELD_KARP_CHUNK = 256


def cross(origin: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """``(first - origin) x (second - origin)``: > 0 for a counter-clockwise turn."""
    return (first[..., 0] - origin[..., 0]) * (second[..., 1] - origin[..., 1]) - (
        first[..., 1] - origin[..., 1]
    ) * (second[..., 0] - origin[..., 0])


def convex_hull(points: np.ndarray) -> list[int]:
    """Indices of the hull vertices of ``points (n, 2)``, counter-clockwise from the vertex
    with the smallest index; collinear points on an edge are not vertices."""
    points = _check_points("points", points)
    order = np.lexsort((points[:, 1], points[:, 0]))
    chains = []
    for sequence in (order, order[::-1]):
        chain: list[int] = []
        for index in sequence:
            while len(chain) >= 2 and cross(*points[[chain[-2], chain[-1], index]]) <= 0:
                chain.pop()
            chain.append(int(index))
        chains.append(chain[:-1])
    hull = chains[0] + chains[1]
    if not hull:  # a single point, or all points equal
        return [int(order[0])]
    return smallest_index_first(hull)


def smallest_index_first(order: Sequence[int]) -> list[int]:
    """The cyclic ``order`` rotated to start at its smallest index."""
    order = [int(index) for index in order]
    if not order:
        return order
    start = order.index(min(order))
    return order[start:] + order[:start]


def leftmost_first(points: np.ndarray, order: Sequence[int]) -> list[int]:
    """The cyclic ``order`` rotated to start at its leftmost point (smallest x, then y)."""
    order = [int(index) for index in order]
    vertices = np.asarray(points, dtype=np.float64)[order]
    start = int(np.lexsort((vertices[:, 1], vertices[:, 0]))[0])
    return order[start:] + order[:start]


def polygon_area(points: np.ndarray, order: Sequence[int]) -> float:
    """Signed shoelace area of the polygon visiting ``points (n, 2)`` in ``order`` (> 0 when
    counter-clockwise)."""
    vertices = np.asarray(points, dtype=np.float64)[list(order)]
    if len(vertices) < 3:
        return 0.0
    following = np.roll(vertices, -1, axis=0)
    return float(0.5 * np.sum(vertices[:, 0] * following[:, 1] - following[:, 0] * vertices[:, 1]))


def is_simple_polygon(points: np.ndarray, order: Sequence[int]) -> bool:
    """Whether visiting ``points`` in ``order`` draws a simple polygon: at least three distinct
    vertices, nonzero area, and no two non-adjacent edges that touch or cross."""
    order = list(order)
    if len(order) < 3 or len(set(order)) != len(order):
        return False
    vertices = np.asarray(points, dtype=np.float64)[order]
    if polygon_area(vertices, range(len(order))) == 0.0:
        return False
    count = len(order)
    starts, ends = vertices, np.roll(vertices, -1, axis=0)
    first, second = np.triu_indices(count, k=2)
    keep = ~((first == 0) & (second == count - 1))  # the last edge is adjacent to the first
    first, second = first[keep], second[keep]
    return not bool(
        segments_intersect(starts[first], ends[first], starts[second], ends[second]).any()
    )


def segments_intersect(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Whether segments ``ab`` and ``cd`` share a point (touching counts); ``(..., 2)`` each."""
    turn_c, turn_d = np.sign(cross(a, b, c)), np.sign(cross(a, b, d))
    turn_a, turn_b = np.sign(cross(c, d, a)), np.sign(cross(c, d, b))
    crossing = (turn_c * turn_d <= 0) & (turn_a * turn_b <= 0)
    collinear = (turn_c == 0) & (turn_d == 0)
    overlap = np.all(
        (np.minimum(a, b) <= np.maximum(c, d)) & (np.minimum(c, d) <= np.maximum(a, b)), axis=-1
    )
    return np.where(collinear, overlap, crossing)


def tour_length(points: np.ndarray, tour: Sequence[int]) -> float:
    """Length of the closed tour visiting ``points (n, 2)`` in ``tour`` and back to the start."""
    vertices = np.asarray(points, dtype=np.float64)[list(tour)]
    return float(np.linalg.norm(vertices - np.roll(vertices, -1, axis=0), axis=1).sum())


def canonical_tour(tour: Sequence[int] | np.ndarray) -> list[int]:
    """The same cycle starting at city 0, in the direction whose second city is smaller."""
    tour = [int(city) for city in tour]
    if 0 not in tour:
        raise ValueError(f"tour: expected a cycle through city 0, got {tour}")
    start = tour.index(0)
    tour = tour[start:] + tour[:start]
    if len(tour) > 2 and tour[1] > tour[-1]:
        tour = [0] + tour[1:][::-1]
    return tour


def counterclockwise_tour(points: np.ndarray, tour: Sequence[int]) -> list[int]:
    """The same cycle from the same first city, in the direction of positive shoelace area."""
    tour = [int(city) for city in tour]
    if polygon_area(points, tour) < 0:
        tour = tour[:1] + tour[1:][::-1]
    return tour


def held_karp(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Optimal tours of ``points (B, n, 2)`` (n cities each, n <= ``HELD_KARP_MAX_CITIES``):
    lengths ``(B,)`` and canonical tours ``(B, n)``."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[2] != 2 or points.shape[1] < 1:
        raise ValueError(f"points: expected (batch, cities, 2), got {points.shape}")
    cities = points.shape[1]
    if cities > HELD_KARP_MAX_CITIES:
        raise ValueError(
            f"points: Held-Karp takes at most {HELD_KARP_MAX_CITIES} cities, got {cities}"
        )
    if cities <= 3:
        tours = np.broadcast_to(np.arange(cities), points.shape[:2]).copy()
        return np.array([tour_length(problem, range(cities)) for problem in points]), tours
    parts = [
        _held_karp_chunk(points[start : start + _HELD_KARP_CHUNK])
        for start in range(0, len(points), _HELD_KARP_CHUNK)
    ]
    return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])


def _held_karp_chunk(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    batch, cities = points.shape[:2]
    distance = np.linalg.norm(points[:, :, None] - points[:, None], axis=-1)  # (B, n, n)
    others = cities - 1  # cities 1..n-1 are bits 0..n-2 of a set
    bits = 1 << np.arange(others)
    sets = np.arange(1 << others)
    sizes = (sets[:, None] & bits).astype(bool).sum(1)
    cost = np.full((batch, len(sets), others), np.inf)
    parent = np.zeros((batch, len(sets), others), dtype=np.int8)
    cost[:, bits, np.arange(others)] = distance[:, 0, 1:]
    step = distance[:, 1:, 1:].transpose(0, 2, 1)[:, None]  # (B, 1, j, i) = d(i, j)
    for size in range(2, others + 1):
        chosen = sets[sizes == size]  # (K,)
        # C(S \ {j}, i) + d(i, j); for j outside S, S ^ {j} has not been computed yet: inf
        candidates = cost[:, chosen[:, None] ^ bits] + step  # (B, K, j, i)
        parent[:, chosen] = candidates.argmin(-1)
        cost[:, chosen] = candidates.min(-1)
    closing = cost[:, -1] + distance[:, 1:, 0]  # (B, j)
    last = closing.argmin(1)
    lengths = closing[np.arange(batch), last]
    tours = np.zeros((batch, cities), dtype=np.int64)
    current, remaining, rows = last, np.full(batch, len(sets) - 1), np.arange(batch)
    for position in range(cities - 1, 0, -1):
        tours[:, position] = current + 1
        previous = parent[rows, remaining, current].astype(np.int64)
        remaining = remaining ^ bits[current]
        current = previous
    return lengths, np.array([canonical_tour(tour) for tour in tours])


def _check_points(name: str, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1:
        raise ValueError(
            f"{name}: expected (points, 2) with at least one point, got {points.shape}"
        )
    return points
