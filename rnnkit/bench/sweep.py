"""The plan of a task sweep: which runs, in which folders, with which command-line settings.

A run is one (task, mixer, width, optimizer, seed). Its folder, ``OUT/runs/TASK/RUN``, is named
by those five, so a sweep started again with the same options finds its earlier runs: a run
with ``result.json`` is finished and kept, a run with a checkpoint is resumed, anything else is
(re)started.

Mixers are named as ``--model.cell`` names them (``attention``, ``titans_mag`` or a registered
cell), with an optional strategy after a colon: ``paragru:newton`` (``titans_mag``: its memory's
strategy and titans options). Widths set the model's residual width and
the recurrent hidden size together; with ``match="parameters"`` each mixer's width is instead the
one whose parameter count is nearest the reference mixer's at the requested width.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnnkit.cells import CELLS
from rnnkit.models.recurrent_config import cell_option_types
from rnnkit.models.titans_mag import MEMORY_CELL
from rnnkit.train.config import ConfigError, apply_overrides
from rnnkit.train.tasks import TASKS

RESULT_FILE = "result.json"
ATTENTION = "attention"
TITANS_MAG = "titans_mag"
HEAD_SIZE = 16
"""Attention heads are this wide (``num_heads = width // 16``, at least one)."""
MATCHES = ("width", "parameters")
WIDTH_STEP = 8
"""Parameter matching searches widths in steps of this."""


SWEEP_KEYS = {
    "seed": "--seeds",
    "optimizer.name": "--optimizers",
    "model.mixer": "--mixers",
    "model.cell": "--mixers",
    "model.recurrent.cell": "--mixers",
    "model.recurrent.strategy": "--mixers (CELL:STRATEGY)",
    "model.model_size": "--widths",
    "model.recurrent.hidden_size": "--widths",
    "model.num_heads": "--widths (attention heads are 16 wide)",
}
"""Config keys each run's place in the sweep sets; ``--set`` refuses them."""


@dataclass(frozen=True)
class Mixer:
    """``attention`` or a registered cell, with the strategy it runs under (None: the task's)
    and cell options as ``(KEY, VALUE)`` text pairs (``--model.recurrent.options.KEY=VALUE``)."""

    name: str
    strategy: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        """``paragru-newton``, ``deltaproduct-num_householder=2``: the mixer in folder names
        and tables."""
        parts = [self.name] + ([] if self.strategy is None else [self.strategy])
        return "-".join(parts + [f"{key}={value}" for key, value in self.options])

    def overrides(self, width: int) -> list[tuple[str, str]]:
        """The task settings that make this mixer ``width`` wide."""
        settings = [("model.mixer", self.name), ("model.model_size", str(width))]
        heads = ("model.num_heads", str(max(1, width // HEAD_SIZE)))
        if self.name == ATTENTION:
            return [*settings, heads]
        if self.name == TITANS_MAG:
            settings.append(heads)
        settings.append(("model.recurrent.hidden_size", str(width)))
        if self.strategy is not None:
            settings.append(("model.recurrent.strategy", self.strategy))
        settings += [(f"model.recurrent.options.{key}", value) for key, value in self.options]
        return settings


def parse_mixer(text: str) -> Mixer:
    """``NAME``, ``NAME:STRATEGY``, each optionally followed by ``@KEY=VALUE,KEY=VALUE`` cell
    options (``deltaproduct@num_householder=2,allow_negative_eigenvalues=true``); an unknown
    name is an error listing the known ones, an option the cell does not take one naming it."""
    spec, at, option_text = text.partition("@")
    name, _, strategy = spec.partition(":")
    if name not in (ATTENTION, TITANS_MAG) and name not in CELLS:
        raise ConfigError(
            f"--mixers: expected attention, titans_mag or a registered cell "
            f"({', '.join(sorted(CELLS))}), got {name!r}"
        )
    cell = MEMORY_CELL if name == TITANS_MAG else name
    if name == ATTENTION and (strategy or at):
        raise ConfigError(f"--mixers: attention takes no strategy or options, got {text!r}")
    options = []
    for item in option_text.split(",") if at else []:
        key, equals, value = item.partition("=")
        if not (equals and key and value):
            raise ConfigError(f"--mixers {text}: expected @KEY=VALUE,KEY=VALUE, got {item!r}")
        if key not in cell_option_types(cell):
            raise ConfigError(
                f"--mixers {text}: cell {cell!r} takes no option {key!r}; it takes "
                f"{', '.join(cell_option_types(cell))}"
            )
        options.append((key, value))
    return Mixer(name, strategy or None, tuple(options))


def parse_settings(texts: list[str]) -> dict[str | None, list[tuple[str, str]]]:
    """``--set KEY=VALUE`` (every task) and ``--set TASK:KEY=VALUE`` (one task), by task."""
    settings: dict[str | None, list[tuple[str, str]]] = {}
    for text in texts:
        target, separator, value = text.partition("=")
        if not separator:
            raise ConfigError(f"--set: expected KEY=VALUE or TASK:KEY=VALUE, got {text!r}")
        task, colon, key = target.rpartition(":")
        if colon and task not in TASKS:
            raise ConfigError(f"--set {text}: unknown task {task!r}")
        if key in SWEEP_KEYS:
            raise ConfigError(f"--set {text}: {key} is set by the sweep's {SWEEP_KEYS[key]}")
        settings.setdefault(task if colon else None, []).append((key, value))
    return settings


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep and the ``rnnkit train`` settings that make it."""

    task: str
    mixer: Mixer
    requested_width: int
    width: int
    optimizer: str
    seed: int
    settings: tuple[tuple[str, str], ...]

    def folder(self, out: Path) -> Path:
        name = f"{self.mixer.label}-w{self.requested_width}-{self.optimizer}-s{self.seed}"
        return out / "runs" / self.task / name

    def arguments(self) -> list[str]:
        """The ``--KEY=VALUE`` options of ``rnnkit train TASK``."""
        return [f"--{key}={value}" for key, value in self.settings]


def task_config(task: str, overrides: list[tuple[str, str]]):
    """The task's config with ``overrides``: a bad key or value raises naming it."""
    definition = TASKS[task]
    return apply_overrides(definition.config_type(), overrides)


def parameter_count(task: str, overrides: list[tuple[str, str]]) -> int:
    """Parameters of the task's model under ``overrides`` (built, not trained)."""
    task_object: Any = TASKS[task].build(task_config(task, overrides), None)
    return int(task_object.model.parameter_count())


def matched_width(
    task: str, mixer: Mixer, target: int, base: list[tuple[str, str]], widest: int
) -> int:
    """The width (a multiple of ``WIDTH_STEP`` up to ``widest``) whose parameter count is nearest
    ``target``; counts grow with width, so the search stops once they pass it."""
    best, best_gap = WIDTH_STEP, None
    for width in range(WIDTH_STEP, widest + 1, WIDTH_STEP):
        if mixer.name in (ATTENTION, TITANS_MAG) and width % (2 * max(1, width // HEAD_SIZE)):
            continue
        count = parameter_count(task, [*base, *mixer.overrides(width)])
        gap = abs(count - target)
        if best_gap is None or gap < best_gap:
            best, best_gap = width, gap
        if count > target:
            break
    return best


def plan(
    tasks: list[str],
    mixers: list[Mixer],
    widths: list[int],
    optimizers: list[str],
    seeds: list[int],
    settings: dict[str | None, list[tuple[str, str]]],
    match: str = "width",
    reference: Mixer | None = None,
) -> list[PlannedRun]:
    """Every run of the sweep, task by task; each config is checked before anything trains."""
    if match not in MATCHES:
        raise ConfigError(f"--match: expected one of {', '.join(MATCHES)}, got {match!r}")
    runs = []
    for task in tasks:
        if task not in TASKS:
            raise ConfigError(f"--tasks: unknown task {task!r}; tasks: {', '.join(TASKS)}")
        base = settings.get(None, []) + settings.get(task, [])
        for requested in widths:
            target = None
            if match == "parameters":
                anchor = reference or mixers[0]
                target = parameter_count(task, [*base, *anchor.overrides(requested)])
            for mixer in mixers:
                width = requested
                if target is not None:
                    width = matched_width(task, mixer, target, base, 4 * requested)
                for optimizer in optimizers:
                    for seed in seeds:
                        overrides = [
                            *base,
                            *mixer.overrides(width),
                            ("optimizer.name", optimizer),
                            ("seed", str(seed)),
                        ]
                        task_config(task, overrides)  # refuse a bad setting now
                        runs.append(
                            PlannedRun(
                                task, mixer, requested, width, optimizer, seed, tuple(overrides)
                            )
                        )
    return runs
