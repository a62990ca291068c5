"""The registry of trainable tasks: ``rnnkit train NAME`` looks ``NAME`` up in ``TASKS``.

A task module gives ``DEFINITIONS``, a list of ``TaskDefinition``: its config dataclass (which
must have ``seed: int`` and ``trainer: TrainerConfig`` and ``optimizer: OptimizerConfig``
fields), a builder of its ``TrainingTask``, a report printed after training (which also draws
the task's plots into the run folder), the evaluation behind ``rnnkit eval RUN``, what to try
next, and command-line shortcuts for its common keys.
"""

from __future__ import annotations

from rnnkit.train.tasks import (
    benchmark_problems,
    charlm,
    classify,
    ctc_files,
    digit_strings,
    dynamics,
    forecast,
    image_classify,
    pointer_tasks,
    seq2seq_files,
    seq2seq_tasks,
)
from rnnkit.train.tasks.definition import TaskDefinition

_TASK_MODULES = (
    charlm,
    pointer_tasks,
    seq2seq_tasks,
    digit_strings,
    benchmark_problems,
    image_classify,
    seq2seq_files,
    ctc_files,
    forecast,
    classify,
    dynamics,
)

TASKS: dict[str, TaskDefinition] = {
    definition.name: definition for module in _TASK_MODULES for definition in module.DEFINITIONS
}


def get_task(name: str) -> TaskDefinition:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]


__all__ = ["TASKS", "TaskDefinition", "get_task"]
