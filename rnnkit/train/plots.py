"""The loss curve of a run: training and validation loss against steps and against time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

PLOT_FILE = "loss.png"


def plot_losses(records: list[dict[str, Any]], path: Path, title: str = "") -> Path | None:
    """Draw the ``train`` and ``validation`` losses of ``records`` (metrics.jsonl) to ``path``.

    Returns the path, or None when there is nothing to draw.
    """
    train = [record for record in records if record.get("kind") == "train"]
    validation = [record for record in records if record.get("kind") == "validation"]
    if not train and not validation:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, (by_step, by_time) = pyplot.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axes, key, label in ((by_step, "step", "step"), (by_time, "train_seconds", "seconds")):
        if train:
            axes.plot(
                [record[key] for record in train],
                [record["loss"] for record in train],
                label="train",
                alpha=0.7,
            )
        if validation:
            axes.plot(
                [record[key] for record in validation],
                [record["loss"] for record in validation],
                "o-",
                label="validation",
            )
        axes.set_xlabel(f"training {label}")
        axes.grid(alpha=0.3)
    by_step.set_ylabel("loss (nats per token)")
    by_step.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def plot_ponder_by_difficulty(
    panels: list[tuple[str, dict[str, list[tuple[int, float]]]]], path: Path, title: str = ""
) -> Path | None:
    """Mean ponder steps (ACT) against input difficulty, one panel per difficulty measure.

    ``panels``: ``(x label, {series label: [(difficulty, mean steps), ...]})``. Returns the
    path, or None when there is nothing to draw.
    """
    panels = [(label, series) for label, series in panels if any(series.values())]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes_list = pyplot.subplots(
        1, len(panels), figsize=(5.5 * len(panels), 4), sharey=True, squeeze=False
    )
    for axes, (label, series) in zip(axes_list[0], panels, strict=True):
        for name, points in series.items():
            if points:
                axes.plot([x for x, _ in points], [y for _, y in points], "o-", ms=3, label=name)
        axes.set_xlabel(label)
        axes.grid(alpha=0.3)
        axes.legend()
    axes_list[0][0].set_ylabel("mean ponder steps")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return path
