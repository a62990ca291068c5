"""Metrics against training time of supervised task runs, as markdown tables.

    python benchmarks/task_curves.py runs/sort-20261122-230000 [more run folders]

Each row is one evaluation in the run's metrics.jsonl: the step, the seconds of training (the
clock the time budget counts), the wall-clock seconds since the start (evaluations included),
and every metric the task's validation reports (loss in nats, accuracies, error rates, ...).
The task name comes from the run's checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rnnkit.train.checkpoint import read_checkpoint
from rnnkit.train.metrics import METRICS_FILE, read_metrics

CLOCK_KEYS = ("kind", "step", "train_seconds", "elapsed_seconds")


def curve_table(run_dir: Path) -> str:
    """The markdown table of ``run_dir``'s validation records."""
    records = read_metrics(run_dir / METRICS_FILE)
    validation = [record for record in records if record["kind"] == "validation"]
    if not validation:
        return f"{run_dir}: no validation records"
    metrics = [key for key in validation[-1] if key not in CLOCK_KEYS]
    task = read_checkpoint(run_dir).get("task", "?")
    lines = [
        f"`{task}`: {run_dir}",
        "",
        "| step | training s | wall s | " + " | ".join(metrics) + " |",
        "|---:|---:|---:|" + "---:|" * len(metrics),
    ]
    for record in validation:
        values = " | ".join(_format(record.get(key)) for key in metrics)
        lines.append(
            f"| {record['step']} | {record['train_seconds']:.0f} | "
            f"{record['elapsed_seconds']:.0f} | {values} |"
        )
    return "\n".join(lines)


def _format(value) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}"


def main(arguments: list[str]) -> int:
    if not arguments:
        print(__doc__)
        return 2
    for run_dir in arguments:
        print(curve_table(Path(run_dir)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
