"""The registry of trainable tasks: ``rnnkit train NAME`` looks ``NAME`` up in ``TASKS``.

A task gives its config dataclass (which must have ``seed: int`` and ``trainer:
TrainerConfig`` and ``optimizer: OptimizerConfig`` fields), a builder of its ``TrainingTask``,
a report printed after training (which also draws the task's plots into the run folder), the
evaluation behind ``rnnkit eval RUN``, what to try next, and command-line shortcuts for its
common keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rnnkit.train.task import FitResult, TrainingTask
from rnnkit.train.tasks import charlm


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


TASKS: dict[str, TaskDefinition] = {
    charlm.NAME: TaskDefinition(
        name=charlm.NAME,
        description="character-level language model on a text file (default Tiny Shakespeare)",
        config_type=charlm.CharLMConfig,
        build=charlm.build,
        report=charlm.report,
        evaluate_run=charlm.evaluate_run,
        next_steps=charlm.next_steps,
        shortcuts={"data": "data.path"},
    ),
}


def get_task(name: str) -> TaskDefinition:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


__all__ = ["TASKS", "TaskDefinition", "get_task"]
