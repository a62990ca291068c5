"""Metrics: ``metrics.jsonl`` (one JSON record per line) and progress on the terminal.

On a terminal, progress is one line redrawn in place (a bar, loss, bits per character,
characters per second, ETA); otherwise (a pipe, a file, CI) it is plain log lines, at most one
every ``log_seconds``.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

METRICS_FILE = "metrics.jsonl"
BAR_WIDTH = 24
REDRAW_SECONDS = 0.1


def bits_per_character(loss_nats: float) -> float:
    """A cross-entropy in nats per character, in bits per character."""
    return loss_nats / math.log(2)


SHOWN_METRICS = 8
"""An evaluation line shows the loss and at most this many more metrics (metrics.jsonl has all)."""


def format_evaluation(evaluation: dict[str, float], loss_unit: str = "nats") -> str:
    """``loss 1.2345 nats | bpc 1.7810 | accuracy 0.9812``: the loss in ``loss_unit`` and the
    first ``SHOWN_METRICS`` other metrics of an evaluation, then how many more metrics.jsonl
    holds."""
    parts = [f"loss {evaluation['loss']:.4f} {loss_unit}"]
    others = [(name, value) for name, value in evaluation.items() if name != "loss"]
    for name, value in others[:SHOWN_METRICS]:
        parts.append(f"{name} {value:,}" if isinstance(value, int) else f"{name} {value:.4f}")
    if len(others) > SHOWN_METRICS:
        parts.append(f"{len(others) - SHOWN_METRICS} more in metrics.jsonl")
    return " | ".join(parts)


class MetricsLog:
    """Appends records to ``run_dir/metrics.jsonl``."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> list[dict[str, Any]]:
        """Drop records past ``step`` (written after the checkpoint a run resumes from) and a
        torn last line (a kill inside an append); returns the records kept.

        The file is replaced atomically (temporary file, fsync, rename): a kill inside the
        rewrite leaves the old history or the new one, never a part of it."""
        if not self.path.is_file():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        records = []
        for number, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except ValueError:
                if number != len(lines) - 1:
                    raise ValueError(f"{self.path}:{number + 1}: not a JSON record") from None
        kept = [record for record in records if record["step"] <= step]
        if len(kept) == len(lines):
            return kept  # nothing to drop: leave the file as it is
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        return kept


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (none when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class TrainingMeter:
    """Training losses since the last record (for metrics.jsonl), and smoothed for display.

    ``smoothing`` is the exponential-average factor of the displayed loss and throughput.
    """

    def __init__(self, smoothing: float = 0.95) -> None:
        self.smoothing = smoothing
        self.loss_sum, self.steps, self.items, self.seconds = 0.0, 0, 0, 0.0
        self.smoothed_loss, self.smoothed_rate = math.nan, math.nan
        self.steps_seen = 0

    def add(self, loss: float, items: int, seconds: float) -> None:
        """One step: its mean loss, the items it read and the seconds it took."""
        self.loss_sum += loss
        self.steps += 1
        self.items += items
        self.seconds += seconds
        rate = items / seconds
        self.steps_seen += 1
        if self.steps_seen <= 2:  # the first steps warm the kernels up: start from the next
            self.smoothed_loss, self.smoothed_rate = loss, rate
        else:
            keep = self.smoothing
            self.smoothed_loss = keep * self.smoothed_loss + (1 - keep) * loss
            self.smoothed_rate = keep * self.smoothed_rate + (1 - keep) * rate

    def take_record(self) -> dict[str, float]:
        """Mean loss, bpc and throughput of the steps since the last record; starts anew."""
        loss = self.loss_sum / self.steps
        record = {
            "loss": loss,
            "bpc": bits_per_character(loss),
            "items_per_second": self.items / self.seconds,
        }
        self.loss_sum, self.steps, self.items, self.seconds = 0.0, 0, 0, 0.0
        return record

    def state(self) -> list[float]:
        """The unrecorded sums, so that a resumed run writes the records of an uninterrupted
        one."""
        return [self.loss_sum, self.steps, self.items, self.seconds]

    def load_state(self, state: list[float]) -> None:
        """Restore what ``state`` returned (read back from the checkpoint's JSON)."""
        loss_sum, steps, items, seconds = state
        self.loss_sum, self.seconds = float(loss_sum), float(seconds)
        self.steps, self.items = int(steps), int(items)


def format_duration(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``; ``125`` -> ``"2:05"``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def format_rate(per_second: float) -> str:
    return f"{per_second / 1000:.1f}k" if per_second >= 1000 else f"{per_second:.0f}"


class Progress:
    """A redrawn progress bar on a terminal, plain log lines elsewhere.

    Args:
        stream: where to write (stdout by default).
        interactive: draw a bar; None to decide by ``stream.isatty()``.
        log_seconds: the least time between two plain log lines.
    """

    def __init__(
        self, stream: TextIO | None = None, interactive: bool | None = None, log_seconds: float = 10
    ) -> None:
        self.stream = stream or sys.stdout
        if interactive is None:
            interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interactive = interactive
        self.log_seconds = log_seconds
        self.last_log = -math.inf
        self.last_draw = -math.inf
        self.bar_shown = False

    def update(
        self, step: int, fraction: float, values: dict[str, str], eta_seconds: float | None
    ) -> None:
        """Show progress at ``step`` (``fraction`` of the run done) with named ``values``."""
        eta = "?" if eta_seconds is None else format_duration(eta_seconds)
        shown = " | ".join(f"{name} {value}" for name, value in values.items())
        now = time.monotonic()
        if self.interactive:
            if now - self.last_draw < REDRAW_SECONDS and fraction < 1:
                return
            self.last_draw = now
            filled = int(BAR_WIDTH * min(1.0, fraction))
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            line = f"\r[{bar}] {100 * fraction:3.0f}% step {step} | {shown} | ETA {eta}"
            self.stream.write(line + "\033[K")
            self.stream.flush()
            self.bar_shown = True
            return
        if now - self.last_log >= self.log_seconds:
            self.last_log = now
            self.write(f"step {step} ({100 * fraction:.0f}%) | {shown} | ETA {eta}")

    def write(self, text: str) -> None:
        """A full line, below the bar when one is drawn."""
        if self.bar_shown:
            self.stream.write("\r\033[K")
            self.bar_shown = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self.bar_shown = False
