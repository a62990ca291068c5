"""Mixers on the benchmark tasks: which recurrence for which task, at what cost.

Trains every requested mixer (``attention`` or any registered cell, ``NAME:STRATEGY`` for a
strategy) on every requested task at every width, optimizer and seed, then evaluates each run on
its held-out test set and writes ``results.csv``, ``lengths.csv``, ``results.md`` and the plots
into ``--out``. Each run is ``rnnkit train TASK`` in its own process (``--trainer.threads=1``,
``--jobs`` of them at once); an interrupted sweep started again with the same options resumes
the unfinished runs from their checkpoints and does not retrain finished ones.

    rnnkit bench tasks --tasks mqar --mixers lstm mingru attention --widths 32 64 128
    rnnkit bench tasks --tasks state-tracking --set state-tracking:data.group=s5 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from rnnkit.bench import runner, sweep, task_plots, task_results
from rnnkit.train.config import ConfigError
from rnnkit.train.tasks.benchmark_problems import DEFINITIONS

TASK_NAMES = [definition.name for definition in DEFINITIONS]
DEFAULT_MIXERS = [
    "lstm",
    "gru",
    "elman",
    "mingru",
    "lru",
    "selective_ssm",
    "gla",
    "mlstm",
    "deltanet",
    "paragru:newton",
    "attention",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", nargs="+", default=TASK_NAMES, choices=TASK_NAMES)
    parser.add_argument(
        "--mixers",
        nargs="+",
        default=DEFAULT_MIXERS,
        help="attention or CELL[:STRATEGY][@KEY=VALUE,...] (cell options)",
    )
    parser.add_argument("--widths", nargs="+", type=int, default=[64], help="model widths")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--optimizers", nargs="+", default=["adamw"], choices=["adamw", "muon"])
    parser.add_argument(
        "--match",
        choices=sweep.MATCHES,
        default="width",
        help="width: every mixer at each width; parameters: each mixer at the width whose "
        "parameter count is nearest the reference mixer's at each width",
    )
    parser.add_argument(
        "--reference", default=None, help="the mixer parameters are matched to (first mixer)"
    )
    parser.add_argument("--steps", type=int, default=None, help="training steps per run")
    parser.add_argument("--time-budget", default=None, help="training time per run: 90s, 2m")
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="[TASK:]KEY=VALUE",
        help="a config setting for every task, or for one (repeatable)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (1 thread each)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-tasks"))
    parser.add_argument(
        "--retry-failed", action="store_true", help="train again the runs that failed earlier"
    )
    parser.add_argument("--plan", action="store_true", help="list the runs and exit")


def run(arguments: argparse.Namespace) -> int:
    try:
        runs = make_plan(arguments)
    except (ConfigError, ValueError) as error:
        print(f"rnnkit bench tasks: error: {error}", file=sys.stderr)
        return 2
    if arguments.plan:
        for planned in runs:
            print(f"{planned.folder(arguments.out)}  {' '.join(planned.arguments())}")
        return 0
    arguments.out.mkdir(parents=True, exist_ok=True)
    try:
        results = runner.run_all(
            runs,
            arguments.out,
            arguments.steps,
            arguments.time_budget,
            arguments.jobs,
            arguments.retry_failed,
        )
    except ConfigError as error:
        print(f"rnnkit bench tasks: error: {error}", file=sys.stderr)
        return 2
    except runner.SweepInterrupted as stopped:
        print(f"sweep stopped: {stopped}; run the same command again to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # Ctrl-C reaches the runs too: each saves its checkpoint and stops
        print("sweep interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    write_outputs(results, arguments.out, command_line(arguments))
    failed = sum(result["status"] != "finished" for result in results)
    return 1 if failed else 0


def make_plan(arguments: argparse.Namespace) -> list[sweep.PlannedRun]:
    """The sweep's runs; bad mixers, settings, widths or budgets raise naming the option."""
    if arguments.jobs < 1:
        raise ConfigError(f"--jobs: expected 1 or more, got {arguments.jobs}")
    if arguments.steps is None and arguments.time_budget is None:
        raise ConfigError("set --steps or --time-budget (or both): the budget of each run")
    if arguments.steps is not None and arguments.steps < 1:
        raise ConfigError(f"--steps: expected 1 or more, got {arguments.steps}")
    if any(width < 1 for width in arguments.widths):
        raise ConfigError(f"--widths: expected positive integers, got {arguments.widths}")
    mixers = [sweep.parse_mixer(text) for text in arguments.mixers]
    reference = None if arguments.reference is None else sweep.parse_mixer(arguments.reference)
    return sweep.plan(
        arguments.tasks,
        mixers,
        arguments.widths,
        arguments.optimizers,
        arguments.seeds,
        sweep.parse_settings(arguments.settings),
        arguments.match,
        reference,
    )


def command_line(arguments: argparse.Namespace) -> str:
    """The sweep's command with every option spelled out (defaults too), to regenerate it."""
    words = ["rnnkit", "bench", "tasks"]
    for option in ("tasks", "mixers", "widths", "seeds", "optimizers"):
        words += [f"--{option}", *map(str, getattr(arguments, option))]
    words += ["--match", arguments.match]
    if arguments.reference is not None:
        words += ["--reference", arguments.reference]
    if arguments.steps is not None:
        words += ["--steps", str(arguments.steps)]
    if arguments.time_budget is not None:
        words += ["--time-budget", arguments.time_budget]
    for setting in arguments.settings:
        words += ["--set", setting]
    words += ["--jobs", str(arguments.jobs), "--out", str(arguments.out)]
    return shlex.join(words)


def write_outputs(results: list[dict], out: Path, command: str) -> None:
    """The tables and plots of ``results`` into ``out``, each path printed."""
    task_results.write_csv(results, out / "results.csv")
    task_results.write_lengths_csv(results, out / "lengths.csv")
    task_results.write_markdown(results, out / "results.md", command)
    written = [out / "results.csv", out / "lengths.csv", out / "results.md"]
    for plot in (task_plots.plot_width, task_plots.plot_length, task_plots.plot_state_size):
        path = plot(results, out)
        if path is not None:
            written.append(path)
    print("\n".join(task_results.matrix_table(results)))
    print("written: " + ", ".join(str(path) for path in written))
