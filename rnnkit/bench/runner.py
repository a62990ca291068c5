"""Running a sweep's runs: each in its own ``rnnkit train`` process, then ``rnnkit eval --json``.

A process per run keeps runs apart (threads, memory, a crash) and lets ``jobs`` of them train at
once, one thread each. A run's outcome goes to ``result.json`` in its folder, written atomically
last, so its presence means the run is finished: a later sweep reads it instead of training.
A failed run (a non-zero exit) records its status and the last lines of its log; an interrupt
(Ctrl-C, SIGTERM) stops the sweep, and the interrupted runs resume next time from their
checkpoints.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rnnkit.bench.sweep import RESULT_FILE, PlannedRun
from rnnkit.train.checkpoint import CHECKPOINT_FILE, write_json_atomically
from rnnkit.train.config import ConfigError

LOG_FILE = "sweep.log"
INTERRUPTED = (130, 143, 129)
"""Exit statuses of a run stopped by SIGINT, SIGTERM or SIGHUP (checkpointed, resumable)."""


class SweepInterrupted(Exception):
    """A run was interrupted: the sweep stops, and resumes next time."""


def read_result(folder: Path) -> dict[str, Any] | None:
    """The finished run's result, or None when the run has not finished."""
    path = folder / RESULT_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def train_command(
    run: PlannedRun, folder: Path, steps: int | None, budget: str | None
) -> list[str]:
    """``rnnkit train`` for ``run``: resumed when its folder holds a checkpoint."""
    command = [sys.executable, "-m", "rnnkit.cli", "train", run.task]
    if (folder / CHECKPOINT_FILE).exists():
        command += ["--resume", str(folder)]
    else:
        command += ["--run-dir", str(folder), "--overwrite", *run.arguments()]
    if steps is not None:
        command += ["--steps", str(steps)]
    if budget is not None:
        command += ["--time-budget", budget]
    return [*command, "--trainer.threads=1"]


def execute(
    run: PlannedRun,
    out: Path,
    steps: int | None,
    budget: str | None,
    stopping: threading.Event | None = None,
) -> dict[str, Any]:
    """Train (or resume) and evaluate ``run``; its result, also written to ``result.json``.

    Raises ``SweepInterrupted`` (and writes no result) when a process was stopped by a signal or
    ``stopping`` is set: an interrupted run is resumed next time, not recorded as failed."""
    stopping = stopping or threading.Event()
    folder = run.folder(out)

    def check_interrupted(process: subprocess.CompletedProcess, what: str) -> None:
        code = process.returncode
        if stopping.is_set() or code in INTERRUPTED or code < 0:
            raise SweepInterrupted(f"{folder}: {what} interrupted (exit {code})")

    if stopping.is_set():
        raise SweepInterrupted(f"{folder}: not started, the sweep is stopping")
    folder.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(folder / LOG_FILE, "a", encoding="utf-8") as log:
        trained = subprocess.run(
            train_command(run, folder, steps, budget), stdout=log, stderr=log, check=False
        )
    check_interrupted(trained, "training")
    result: dict[str, Any] = {
        "task": run.task,
        "mixer": run.mixer.name,
        "strategy": run.mixer.strategy or "",
        "label": run.mixer.label,
        "requested_width": run.requested_width,
        "width": run.width,
        "optimizer": run.optimizer,
        "seed": run.seed,
        "settings": dict(run.settings),
        "budget": {"steps": steps, "time_budget": budget},
    }
    if trained.returncode != 0:
        result.update(status="failed", error=_tail(folder / LOG_FILE))
    else:
        evaluated = subprocess.run(
            [sys.executable, "-m", "rnnkit.cli", "eval", str(folder), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        check_interrupted(evaluated, "evaluation")
        if evaluated.returncode != 0:
            result.update(status="failed", error=evaluated.stderr.strip()[-500:])
        else:
            document = json.loads(evaluated.stdout)
            result.update(status="finished", step=document["step"], metrics=document["metrics"])
            result["train_seconds"] = _train_seconds(folder)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    write_json_atomically(folder / RESULT_FILE, result)
    return result


def run_all(
    runs: list[PlannedRun],
    out: Path,
    steps: int | None,
    budget: str | None,
    jobs: int,
    retry_failed: bool,
    announce=print,
) -> list[dict[str, Any]]:
    """Every run's result, training those not finished (``jobs`` at a time). On Ctrl-C (which
    reaches the runs too: each saves a checkpoint and stops) no run is recorded as failed and
    none is started; the ``KeyboardInterrupt`` is raised once the running ones have stopped."""
    results: dict[int, dict[str, Any]] = {}
    pending = []
    for index, run in enumerate(runs):
        found = read_result(run.folder(out))
        if found is not None:
            check_same_run(found, run, out, steps, budget)
        if found is not None and not (retry_failed and found["status"] == "failed"):
            results[index] = found
        else:
            pending.append(index)
    announce(f"{len(runs)} runs: {len(results)} finished earlier, {len(pending)} to train")
    stopping = threading.Event()

    def one(index: int) -> tuple[int, dict[str, Any]]:
        return index, execute(runs[index], out, steps, budget, stopping)

    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        for done, (index, result) in enumerate(pool.map(one, pending), start=1):
            results[index] = result
            announce(f"[{done}/{len(pending)}] {describe(result)}")
    except KeyboardInterrupt:
        stopping.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[index] for index in range(len(runs))]


def check_same_run(
    found: dict[str, Any], run: PlannedRun, out: Path, steps: int | None, budget: str | None
) -> None:
    """Refuse a finished run whose settings or budget differ from the planned ones: its folder
    name does not hold the ``--set`` settings, so another sweep into ``out`` may collide."""
    planned = {**dict(run.settings), "--steps": steps, "--time-budget": budget}
    saved = {
        **found["settings"],
        "--steps": found["budget"]["steps"],
        "--time-budget": found["budget"]["time_budget"],
    }
    differing = sorted(
        key for key in planned.keys() | saved.keys() if planned.get(key) != saved.get(key)
    )
    if differing:
        changes = ", ".join(
            f"{key}: {saved.get(key)!r} -> {planned.get(key)!r}" for key in differing
        )
        raise ConfigError(
            f"{run.folder(out)} was trained with other settings ({changes}); give this sweep "
            "another --out, or delete that run folder to train it again"
        )


def describe(result: dict[str, Any]) -> str:
    """One line on a run's outcome."""
    name = (
        f"{result['task']} {result['label']} width {result['width']} {result['optimizer']} "
        f"seed {result['seed']}"
    )
    if result["status"] != "finished":
        return f"{name}: FAILED ({result['error'].splitlines()[-1] if result['error'] else ''})"
    metrics = result["metrics"]
    return (
        f"{name}: accuracy {metrics['accuracy']:.3f} after {result['step']} steps "
        f"({result['wall_seconds']:.0f} s)"
    )


def _train_seconds(folder: Path) -> float | None:
    """Training seconds of the run's last checkpoint."""
    document = json.loads((folder / CHECKPOINT_FILE).read_text(encoding="utf-8"))
    seconds = document.get("clocks", {}).get("train_seconds")
    return None if seconds is None else round(float(seconds), 1)


def _tail(path: Path, lines: int = 5) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
