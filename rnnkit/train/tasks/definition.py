"""What ``rnnkit train NAME`` needs to know about a task (see ``rnnkit.train.tasks``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rnnkit.train.task import FitResult, TrainingTask


@dataclass(frozen=True)
class TaskDefinition:
    """What ``rnnkit train NAME`` needs to know about a task."""

    name: str
    description: str
    config_type: type
    build: Callable[[Any, dict[str, Any] | None], TrainingTask]
    """``build(config, metadata)``: metadata is None for a new run, the checkpoint's on resume."""
    report: Callable[[Any, FitResult, TextIO, Path], None]
    """``report(task, result, stream, run_dir)`` after training: final metrics, a sample, the
    task's plots written into ``run_dir``."""
    evaluate_run: Callable[[Path, TextIO], dict[str, float]]
    """``rnnkit eval RUN``: the metrics of a trained run on held-out data, printed and returned."""
    next_steps: Callable[[Path], str]
    """Commands to try on a finished run (printed after the report)."""
    shortcuts: dict[str, str] = field(default_factory=dict)
    """Command-line options (without ``--``) that set a dotted config key."""
    evaluate_file: Callable[[Path, Path, TextIO], dict[str, float]] | None = None
    """``rnnkit eval RUN --data FILE``: ``evaluate_file(run_dir, data_path, stream)``, the
    metrics of a trained run on a file the user brings (in the task's data format); None for
    tasks that evaluate on their own held-out data only."""
    predict_file: Callable[[Path, Path, Path, TextIO], int] | None = None
    """``rnnkit predict RUN --data FILE --output FILE``: ``predict_file(run_dir, data_path,
    output_path, stream)`` writes the predictions for every example of the file (CSV or TSV,
    by the output's suffix) and returns how many rows it wrote; None for tasks without it."""
