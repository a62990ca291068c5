"""Validation loss against training time of ``rnnkit train charlm`` runs, as a markdown table.

    python benchmarks/charlm_curve.py runs/charlm-20261122-200000 [more run folders]

Each row is one evaluation in the run's metrics.jsonl: the step, the seconds of training (the
clock the time budget counts), the wall-clock seconds since the start (evaluations included),
and the validation loss in nats and bits per character. The last line gives the mean training
throughput in characters per second.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rnnkit.train.metrics import METRICS_FILE, read_metrics


def curve_table(run_dir: Path) -> str:
    """The markdown table of ``run_dir``'s validation records."""
    records = read_metrics(run_dir / METRICS_FILE)
    validation = [record for record in records if record["kind"] == "validation"]
    train = [record for record in records if record["kind"] == "train"]
    lines = [
        f"{run_dir}",
        "",
        "| step | training s | wall s | validation nats/char | validation bits/char |",
        "|---:|---:|---:|---:|---:|",
    ]
    for record in validation:
        lines.append(
            f"| {record['step']} | {record['train_seconds']:.0f} | "
            f"{record['elapsed_seconds']:.0f} | {record['loss']:.4f} | {record['bpc']:.4f} |"
        )
    if train:
        rate = sum(record["chars_per_second"] for record in train) / len(train)
        lines += ["", f"mean training throughput: {rate:,.0f} characters/s"]
    return "\n".join(lines)


def main(arguments: list[str]) -> int:
    if not arguments:
        print(__doc__)
        return 2
    for run_dir in arguments:
        print(curve_table(Path(run_dir)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
