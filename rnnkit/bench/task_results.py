"""A task sweep's results: ``results.csv``, ``lengths.csv``, ``results.md`` and three plots.

- ``results.csv``: a row per run (task, mixer, strategy, widths, optimizer, seed, status, steps,
  seconds, parameters, state size and every metric but the per-length ones).
- ``lengths.csv``: accuracy at each test length, a row per (run, length), for the tasks that test
  several lengths (state tracking, passkey).
- ``results.md``: the mixer x task matrix at the widest width, then a table per task with the
  mean and spread over seeds.
- ``accuracy_vs_width.png`` (Zoology's figure), ``accuracy_vs_length.png`` (extrapolation) and
  ``accuracy_vs_state_size.png``, a panel per task.
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rnnkit.train.tasks.benchmark_task import LENGTH_PREFIX, lengths_of

RUN_COLUMNS = (
    "task",
    "label",
    "mixer",
    "strategy",
    "requested_width",
    "width",
    "optimizer",
    "seed",
    "status",
    "step",
    "train_seconds",
)
SIZE_METRICS = ("parameter_count", "state_size")
EXTRA_METRICS = {
    "state-tracking": ("accuracy_in_distribution", "longest_length_at_90"),
    "icll": ("total_variation", "ngram_3_accuracy", "ngram_3_total_variation"),
    "passkey": ("digit_accuracy",),
    "copy": ("sequence_accuracy",),
    "selective-copy": ("sequence_accuracy",),
    "mqar": ("sequence_accuracy", "head_accuracy", "tail_accuracy"),
    "adding": ("mse",),
}
"""Metrics shown beside accuracy in each task's Markdown table."""


def finished(results: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [result for result in results if result["status"] == "finished"]


def write_csv(results: list[dict[str, Any]], path: Path) -> None:
    """A row per run: its settings and every metric but the per-length ones."""
    names = sorted(
        {
            name
            for result in finished(results)
            for name in result["metrics"]
            if not name.startswith(LENGTH_PREFIX)
        }
    )
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*RUN_COLUMNS, *names])
        for result in results:
            metrics = result.get("metrics", {})
            writer.writerow(
                [result.get(column, "") for column in RUN_COLUMNS]
                + [metrics.get(name, "") for name in names]
            )


def write_lengths_csv(results: list[dict[str, Any]], path: Path) -> None:
    """A row per (run, test length) with the accuracy there."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "label", "width", "optimizer", "seed", "length", "accuracy"])
        for result in finished(results):
            for length, value in lengths_of(result["metrics"]):
                writer.writerow(
                    [
                        result["task"],
                        result["label"],
                        result["width"],
                        result["optimizer"],
                        result["seed"],
                        length,
                        value,
                    ]
                )


def grouped(results: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Finished runs by (task, label, requested width, optimizer): the seeds of one setting."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for result in finished(results):
        key = (result["task"], result["label"], result["requested_width"], result["optimizer"])
        groups[key].append(result)
    return groups


def mean_and_spread(values: list[float]) -> str:
    """``0.912`` for one value, ``0.912 ± 0.031`` (standard deviation) for several."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def matrix_table(results: list[dict[str, Any]]) -> list[str]:
    """Mixers x tasks: accuracy at each task's widest width, first optimizer of the sweep."""
    groups = grouped(results)
    tasks = list(dict.fromkeys(key[0] for key in groups))
    labels = list(dict.fromkeys(key[1] for key in groups))
    optimizer = next(iter(groups))[3] if groups else "adamw"
    widest = {task: max(key[2] for key in groups if key[0] == task) for task in tasks}
    lines = [
        "| mixer | " + " | ".join(f"{task} (w{widest[task]})" for task in tasks) + " |",
        "| --- |" + " ---: |" * len(tasks),
    ]
    for label in labels:
        cells = []
        for task in tasks:
            runs = groups.get((task, label, widest[task], optimizer), [])
            accuracies = [run["metrics"]["accuracy"] for run in runs]
            cells.append(mean_and_spread(accuracies) if accuracies else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def task_table(results: list[dict[str, Any]], task: str) -> list[str]:
    """One task: a row per (mixer, width, optimizer), metrics as mean ± spread over seeds."""
    extra = EXTRA_METRICS.get(task, ())
    lines = [
        "| mixer | width | optimizer | parameters | state | seeds | steps | train s | accuracy | "
        + " | ".join(extra)
        + (" |" if extra else "|"),
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(extra),
    ]
    for (name, label, requested, optimizer), runs in grouped(results).items():
        if name != task:
            continue
        first = runs[0]
        width = f"{first['width']}" if first["width"] == requested else f"{first['width']}*"
        seconds = [run["train_seconds"] for run in runs if run.get("train_seconds") is not None]
        cells = [
            label,
            width,
            optimizer,
            f"{int(first['metrics']['parameter_count']):,}",
            f"{int(first['metrics']['state_size']):,}",
            str(len(runs)),
            str(first["step"]),
            f"{statistics.fmean(seconds):.0f}" if seconds else "",
            mean_and_spread([run["metrics"]["accuracy"] for run in runs]),
        ]
        for metric in extra:
            values = [run["metrics"][metric] for run in runs if metric in run["metrics"]]
            cell = mean_and_spread(values) if values else ""
            if values and len(values) < len(runs):  # runs of an older rnnkit lack the metric
                cell += f" ({len(values)} of {len(runs)} runs)"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_markdown(results: list[dict[str, Any]], path: Path, command: str) -> None:
    """The matrix, then a table per task, then the failed runs."""
    lines = [
        "# Task sweep",
        "",
        f"    {command}",
        "",
        "Accuracy on held-out data (mean ± standard deviation over seeds). State: floats of",
        "recurrent state per sequence summed over blocks (attention: KV cache floats per token).",
        "A width marked * was chosen to match the reference mixer's parameter count.",
        "",
        *matrix_table(results),
    ]
    for task in dict.fromkeys(result["task"] for result in finished(results)):
        lines += ["", f"## {task}", "", *task_table(results, task)]
    failures = [result for result in results if result["status"] != "finished"]
    if failures:
        lines += ["", "## Failed runs", ""]
        for result in failures:
            last = result["error"].splitlines()[-1] if result["error"] else ""
            lines.append(f"- {result['task']} {result['label']} w{result['width']}: {last}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
