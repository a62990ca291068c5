"""The picture of one pointer-network prediction: a predicted hull or tour beside the true one
over the points, or for sorting the numbers in predicted and in sorted order."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnkit.data.geometry import canonical_tour, is_simple_polygon, polygon_area, tour_length

PREDICTION_FILE = "prediction.png"


def plot_prediction(
    problem: str, elements: np.ndarray, prediction: list[int], target: list[int], path: Path
) -> Path:
    """Draw ``prediction`` and ``target`` (element indices) of one problem of ``elements (n, F)``
    to ``path``: a hull (``convex-hull``), a tour (``tsp``) or sorted numbers (``sort``)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    if problem == "sort":
        figure, axes = pyplot.subplots(figsize=(6, 4))
        _plot_order(axes, elements[:, 0], prediction, target)
    else:
        figure, panels = pyplot.subplots(1, 2, figsize=(10, 5), sharex=True, sharey=True)
        for axes, order, label in (
            (panels[0], prediction, "predicted"),
            (panels[1], target, "true"),
        ):
            _plot_polygon(axes, elements, order)
            axes.set_title(f"{label} {_measure(problem, elements, order)}")
        verdict = _verdict(prediction, target, tour=problem == "tsp")
        figure.suptitle(f"{problem}, n = {len(elements)}: {verdict}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def _plot_polygon(axes, points: np.ndarray, order: list[int]) -> None:
    """The points, their indices, and the closed polygon through ``order`` (first vertex red)."""
    axes.scatter(points[:, 0], points[:, 1], s=18, color="black", zorder=3)
    for index, (x, y) in enumerate(points):
        axes.annotate(str(index), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=7)
    valid = [index for index in order if 0 <= index < len(points)]
    if valid:
        path = points[valid + valid[:1]]
        axes.plot(path[:, 0], path[:, 1], "-", color="tab:blue", linewidth=1.5)
        axes.scatter(*points[valid[0]], s=60, color="tab:red", zorder=4, label="first")
        axes.legend(loc="upper right", fontsize=8)
    axes.set_aspect("equal")
    axes.set_xlim(-0.05, 1.05)
    axes.set_ylim(-0.05, 1.05)
    axes.grid(alpha=0.3)


def _plot_order(axes, numbers: np.ndarray, prediction: list[int], target: list[int]) -> None:
    """The number pointed at in each output step: predicted against sorted."""
    axes.plot(range(len(target)), numbers[target], "o-", label="sorted", color="tab:green")
    valid = [index for index in prediction if 0 <= index < len(numbers)]
    axes.plot(range(len(valid)), numbers[valid], "x--", label="predicted", color="tab:blue")
    axes.set_xlabel("output step")
    axes.set_ylabel("number pointed at")
    axes.set_title(f"sort, n = {len(numbers)}: {_verdict(prediction, target)}")
    axes.legend()
    axes.grid(alpha=0.3)


def _measure(problem: str, points: np.ndarray, order: list[int]) -> str:
    """``hull, area 0.61`` or ``tour, length 2.93`` (without a value when ``order`` is not a
    polygon or tour of the points)."""
    if problem == "tsp":
        valid = sorted(order) == list(range(len(points)))
        return f"tour, length {tour_length(points, order):.3f}" if valid else "tour (invalid)"
    valid = all(0 <= index < len(points) for index in order) and is_simple_polygon(points, order)
    return f"hull, area {abs(polygon_area(points, order)):.3f}" if valid else "hull (not simple)"


def _verdict(prediction: list[int], target: list[int], tour: bool = False) -> str:
    """Whether ``prediction`` is the target (for a tour: the same cycle, either direction)."""
    if tour and sorted(prediction) == sorted(target):
        return "optimal" if canonical_tour(prediction) == list(target) else "not optimal"
    return "exactly right" if list(prediction) == list(target) else "differs from the target"
