"""Running a registered task into a run folder: new runs and resumed ones.

A run folder holds ``config.json`` (the resolved config), ``checkpoint.json`` and
``checkpoints/`` (see ``rnnkit.train.checkpoint``), ``metrics.jsonl`` and ``loss.png``.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from rnnkit.train import checkpoint as checkpoints
from rnnkit.train.config import to_dict
from rnnkit.train.lock import RunFolderBusy, RunLock
from rnnkit.train.metrics import METRICS_FILE, Progress
from rnnkit.train.plots import PLOT_FILE
from rnnkit.train.task import FitResult
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.threads import set_threads, threads_restored
from rnnkit.train.trainer import Trainer

CONFIG_FILE = "config.json"


def new_run_dir(root: Path, task_name: str) -> Path:
    """``root/TASK-YYYYmmdd-HHMMSS`` (with a suffix when that exists); created by ``train``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = root / f"{task_name}-{stamp}"
    suffix = 2
    while candidate.exists():
        candidate = root / f"{task_name}-{stamp}-{suffix}"
        suffix += 1
    return candidate


def train(
    definition: TaskDefinition,
    config: Any,
    run_dir: Path,
    document: dict[str, Any] | None = None,
    stream: TextIO | None = None,
    overwrite: bool = False,
) -> FitResult:
    """Train ``config`` into ``run_dir``; continue from the checkpoint ``document`` if given.

    The run holds ``run_dir``'s lock throughout (a second run into it is refused). A new run
    into a folder that already holds one is refused unless ``overwrite``, which deletes the old
    run's files first. torch's thread count is restored on return: a library call leaves the
    process as it was."""
    stream = stream or sys.stdout
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with threads_restored(), RunLock(run_dir, stream):
            if document is None:
                _clear_previous_run(run_dir, overwrite)
            return _train(definition, config, run_dir, document, stream)
    finally:
        if created and not any(run_dir.iterdir()):  # refused before writing (bad data): no trace
            run_dir.rmdir()


RUN_FILES = (checkpoints.CHECKPOINT_FILE, METRICS_FILE, PLOT_FILE, CONFIG_FILE)


def _clear_previous_run(run_dir: Path, overwrite: bool) -> None:
    """Refuse (or with ``overwrite`` delete) an earlier run's files in ``run_dir``."""
    found = [name for name in RUN_FILES[:2] if (run_dir / name).exists()]
    if not found:
        return
    if not overwrite:
        raise RunFolderBusy(
            f"{run_dir} already holds a run ({', '.join(found)}); continue it with --resume "
            f"{run_dir}, start over with --overwrite, or choose another --run-dir"
        )
    # checkpoint.json first: an overwrite killed half-way leaves no checkpoint naming old files.
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / checkpoints.CHECKPOINT_FOLDER, ignore_errors=True)


def build_task(definition: TaskDefinition, config: Any, document: dict[str, Any] | None) -> Any:
    """The task of a run: threads set, a new run seeded, a resumed one rebuilt from its
    checkpoint's metadata."""
    set_threads(config.trainer.threads)  # torch's and Numba's (the compiled kernels') threads
    if document is None:
        checkpoints.seed_everything(config.seed)
    return definition.build(config, None if document is None else document["metadata"])


def build_trainer(
    definition: TaskDefinition,
    config: Any,
    task: Any,
    run_dir: Path,
    document: dict[str, Any] | None,
    progress: Progress,
) -> Trainer:
    """The trainer of ``task``, restored from ``document`` when the run resumes."""
    trainer = Trainer(
        task,
        config.trainer,
        config.optimizer,
        run_dir,
        info={"task": definition.name, "config": to_dict(config)},
        progress=progress,
    )
    if document is not None:
        trainer.restore(document)
    return trainer


def _train(
    definition: TaskDefinition,
    config: Any,
    run_dir: Path,
    document: dict[str, Any] | None,
    stream: TextIO,
) -> FitResult:
    task = build_task(definition, config, document)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.write_json_atomically(run_dir / CONFIG_FILE, to_dict(config))
    action = "resuming" if document is not None else "training"
    stream.write(f"{action} {definition.name} in run folder {run_dir}\n")
    if hasattr(task, "describe"):
        stream.write(task.describe() + "\n")
    stream.flush()
    progress = Progress(stream, log_seconds=config.trainer.log_seconds)
    trainer = build_trainer(definition, config, task, run_dir, document, progress)
    if document is not None:
        stream.write(f"continuing from step {trainer.step}\n")
    result = trainer.fit()
    if result.reason == "interrupted":
        stream.write(
            f"interrupted at step {result.step}; checkpoint saved. Continue with:\n"
            f"  rnnkit train {definition.name} --resume {run_dir}\n"
        )
        return result
    definition.report(task, result, stream, run_dir)
    stream.write(f"run folder {run_dir}: checkpoint, config.json, metrics.jsonl, plots\n")
    stream.write(definition.next_steps(run_dir))
    stream.flush()
    return result
