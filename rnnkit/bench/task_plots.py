"""The plots of a task sweep, a panel per task: accuracy against width (Zoology's figure),
against test length (extrapolation) and against state size."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rnnkit.bench.task_results import finished, grouped
from rnnkit.train.tasks.benchmark_task import lengths_of

WIDTH_PLOT = "accuracy_vs_width.png"
LENGTH_PLOT = "accuracy_vs_length.png"
STATE_PLOT = "accuracy_vs_state_size.png"


def _panels(tasks: list[str], draw: Callable[[Any, str], None], path: Path, title: str) -> Path:
    """A grid of panels, one per task, each drawn by ``draw(axes, task)``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    columns = min(3, len(tasks))
    rows = math.ceil(len(tasks) / columns)
    legend_inches = 0.5 + 0.25 * 3  # room under the panels for up to three rows of names
    height = 3.6 * rows + legend_inches
    figure, grid = pyplot.subplots(rows, columns, figsize=(5 * columns, height), squeeze=False)
    for axes, task in zip(grid.flat, tasks, strict=False):
        draw(axes, task)
        axes.set_title(task)
        axes.set_ylim(-0.02, 1.02)
        axes.set_ylabel("accuracy")
        axes.grid(alpha=0.3)
    for axes in list(grid.flat)[len(tasks) :]:
        axes.set_visible(False)
    handles, labels = grid.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(6, max(1, len(labels))))
    figure.suptitle(title)
    figure.tight_layout(rect=(0, legend_inches / height, 1, 1))
    figure.savefig(path, dpi=90)
    pyplot.close(figure)
    return path


def _curve_name(label: str, optimizer: str, optimizers: set[str]) -> str:
    return label if len(optimizers) == 1 else f"{label} ({optimizer})"


MARKERS = "osD^v<>pP*Xh"


def mixer_styles(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A colour and marker per mixer, the same in every plot: tab20's dark shades first, then
    its light ones, so up to 20 mixers stay apart (the default cycle repeats after 10)."""
    from matplotlib import colormaps

    tab20 = colormaps["tab20"]
    palette = [tab20(index) for index in range(20)]
    order = [*range(0, 20, 2), *range(1, 20, 2)]
    labels = list(dict.fromkeys(result["label"] for result in results))
    return {
        label: {
            "color": palette[order[index % 20]],
            "marker": MARKERS[index % len(MARKERS)],
        }
        for index, label in enumerate(labels)
    }


def plot_width(results: list[dict[str, Any]], folder: Path) -> Path | None:
    """Accuracy (mean over seeds) against requested width, a line per mixer and optimizer."""
    groups = grouped(results)
    if not groups:
        return None
    optimizers = {key[3] for key in groups}
    styles = mixer_styles(results)

    def draw(axes: Any, task: str) -> None:
        curves: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        for (name, label, width, optimizer), runs in groups.items():
            if name == task:
                accuracy = statistics.fmean(run["metrics"]["accuracy"] for run in runs)
                curves[(label, optimizer)].append((width, accuracy))
        for (label, optimizer), points in curves.items():
            points.sort()
            style = "--" if optimizer == "muon" else "-"
            axes.plot(
                *zip(*points, strict=True),
                style,
                ms=4,
                label=_curve_name(label, optimizer, optimizers),
                **styles[label],
            )
        axes.set_xscale("log", base=2)
        axes.set_xlabel("model width")

    tasks = list(dict.fromkeys(key[0] for key in groups))
    return _panels(tasks, draw, folder / WIDTH_PLOT, "accuracy against model width")


def plot_length(results: list[dict[str, Any]], folder: Path) -> Path | None:
    """Accuracy against test length at each task's widest width (tasks with length metrics)."""
    groups = grouped(results)
    tasks = [
        task
        for task in dict.fromkeys(key[0] for key in groups)
        if any(lengths_of(run["metrics"]) for run in finished(results) if run["task"] == task)
    ]
    if not tasks:
        return None
    optimizers = {key[3] for key in groups}
    styles = mixer_styles(results)

    def draw(axes: Any, task: str) -> None:
        widest = max(key[2] for key in groups if key[0] == task)
        for (name, label, width, optimizer), runs in groups.items():
            if name != task or width != widest:
                continue
            by_length: dict[int, list[float]] = defaultdict(list)
            for run in runs:
                for length, value in lengths_of(run["metrics"]):
                    by_length[length].append(value)
            points = sorted((length, statistics.fmean(v)) for length, v in by_length.items())
            axes.plot(
                *zip(*points, strict=True),
                "--" if optimizer == "muon" else "-",
                ms=3,
                markevery=max(1, len(points) // 8),
                label=_curve_name(label, optimizer, optimizers),
                **styles[label],
            )
        axes.set_xscale("log", base=2)
        axes.set_xlabel(f"test length (width {widest})")

    return _panels(tasks, draw, folder / LENGTH_PLOT, "accuracy against test length")


def plot_state_size(results: list[dict[str, Any]], folder: Path) -> Path | None:
    """Accuracy of every finished run against its state size, a colour per mixer."""
    done = finished(results)
    if not done:
        return None
    styles = mixer_styles(results)

    def draw(axes: Any, task: str) -> None:
        for label, style in styles.items():
            runs = [run for run in done if run["task"] == task and run["label"] == label]
            axes.scatter(
                [max(1.0, run["metrics"]["state_size"]) for run in runs],
                [run["metrics"]["accuracy"] for run in runs],
                s=18,
                label=label,
                **style,
            )
        axes.set_xscale("log")
        axes.set_xlabel("state size (floats; attention: KV cache per token)")

    tasks = list(dict.fromkeys(run["task"] for run in done))
    return _panels(tasks, draw, folder / STATE_PLOT, "accuracy against state size")
