"""The command line: ``rnnkit train | sample | eval | bench``.

    rnnkit train charlm [--data PATH] [--time-budget 5m] [--steps N] [--seed N]
                        [--resume RUN] [--run-dir DIR [--overwrite]] [--print-config]
                        [--KEY=VALUE ...]
    rnnkit sample RUN [--prompt TEXT] [--length N] [--temperature T] [--top-k K] [--seed N]
    rnnkit eval RUN [--data PATH] [--split validation|train] [--json] [--depth-schedule SPEC]
    rnnkit predict RUN --data FILE --output FILE
    rnnkit export RUN --format onnx|torchscript --output FILE [--batch-size N]
    rnnkit quantize RUN --output FILE
    rnnkit bench ...

``--KEY=VALUE`` (or ``--KEY VALUE``) sets a dotted config key,
``--model.recurrent.hidden_size=512``; ``--print-config`` lists every key with its value.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from rnnkit.data import CorpusError
from rnnkit.data.files import DataFileError
from rnnkit.memory import keep_freed_memory
from rnnkit.train.checkpoint import CheckpointError, read_checkpoint
from rnnkit.train.config import (
    ConfigError,
    apply_overrides,
    from_dict,
    load_file,
    parse_duration,
    to_dict,
    to_json,
)
from rnnkit.train.task import TrainingDiverged
from rnnkit.train.tasks import TASKS, TaskDefinition, get_task

USER_ERRORS = (
    ConfigError,
    CorpusError,
    DataFileError,
    CheckpointError,
    TrainingDiverged,
    ValueError,
)
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["bench"]:
        from rnnkit.bench import main as bench_main

        return bench_main(arguments[1:])
    keep_freed_memory()  # large tensors reuse freed memory instead of faulting pages in
    parser = build_parser()
    options, extra = parser.parse_known_args(arguments)
    if options.command is None:
        parser.print_help()
        return 2
    if options.command != "train" and extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return options.handler(options, extra)
    except USER_ERRORS as error:
        print(f"rnnkit: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nrnnkit: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # `rnnkit sample ... | head`: the reader left. Point stdout at devnull so the
        # interpreter's final flush does not raise again (Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnkit", description="Recurrent networks: train, sample, evaluate."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    train = commands.add_parser("train", help="train a task", description="Train a task.")
    tasks = train.add_subparsers(dest="task", metavar="TASK", required=True)
    for definition in TASKS.values():
        add_task_parser(tasks, definition)
    sample = commands.add_parser(
        "sample", help="generate text from a trained run", allow_abbrev=False
    )
    sample.add_argument("run", type=Path, help="the run folder")
    sample.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    sample.add_argument("--length", type=int, default=500, help="characters to generate")
    sample.add_argument("--temperature", type=float, default=0.8, help="0 is greedy")
    sample.add_argument("--top-k", type=int, default=40, help="0 keeps every character")
    sample.add_argument("--seed", type=int, default=None, help="repeatable sampling")
    sample.set_defaults(handler=run_sample)
    evaluate = commands.add_parser(
        "eval", help="held-out metrics of a trained run", allow_abbrev=False
    )
    evaluate.add_argument("run", type=Path, help="the run folder")
    evaluate.add_argument(
        "--data",
        default=None,
        help="a file in the task's data format (charlm: a UTF-8 text file); default: the run's "
        "own held-out data",
    )
    evaluate.add_argument("--split", choices=("validation", "train"), default="validation")
    evaluate.add_argument(
        "--json", action="store_true", help="print one JSON object: the task and its metrics"
    )
    evaluate.add_argument(
        "--depth-schedule",
        default=None,
        metavar="SPEC",
        help="benchmark tasks: run the trained blocks in this order, e.g. 0,1,1,2 or 0-3x2 "
        "(skip, repeat, reorder; rnnkit/models/depth/schedule.py)",
    )
    evaluate.set_defaults(handler=run_eval)
    predict = commands.add_parser(
        "predict",
        help="write a trained run's predictions for a data file",
        description="Write a trained run's predictions for every example of a data file.",
        allow_abbrev=False,
    )
    predict.add_argument("run", type=Path, help="the run folder")
    predict.add_argument("--data", type=Path, required=True, help="a file in the task's format")
    predict.add_argument("--output", type=Path, required=True, help="where to write (.csv or .tsv)")
    predict.set_defaults(handler=run_predict)
    export = commands.add_parser(
        "export",
        help="write a trained run's model to ONNX, state as explicit inputs and outputs",
        allow_abbrev=False,
    )
    export.add_argument("run", type=Path, help="the run folder (charlm or classify)")
    export.add_argument("--format", choices=("onnx", "torchscript"), default="onnx")
    export.add_argument("--output", type=Path, required=True, help="the file to write")
    export.add_argument(
        "--batch-size", type=int, default=1, help="onnx: rows the graph takes (torchscript: any)"
    )
    export.set_defaults(handler=run_export)
    quantize = commands.add_parser(
        "quantize", help="int8 dynamic quantization of a trained run for CPU", allow_abbrev=False
    )
    quantize.add_argument("run", type=Path, help="the run folder (charlm or classify)")
    quantize.add_argument("--output", type=Path, required=True, help="where to torch.save it")
    quantize.set_defaults(handler=run_quantize)
    commands.add_parser("bench", help="benchmarks (rnnkit bench --help)", add_help=False)
    return parser


def add_task_parser(tasks, definition: TaskDefinition) -> None:
    defaults = flatten(to_dict(definition.config_type()))
    keys = "\n".join(f"  --{key}={json.dumps(value)}" for key, value in defaults.items())
    parser = tasks.add_parser(
        definition.name,
        help=definition.description,
        description=f"Train a {definition.description}.",
        epilog=f"config keys and their defaults (set with --KEY=VALUE):\n{keys}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    for option, key in definition.shortcuts.items():
        parser.add_argument(
            f"--{option}",
            dest=f"shortcut_{option}",
            metavar=key.rsplit(".", 1)[-1].upper(),
            help=f"same as --{key}",
        )
    parser.add_argument("--time-budget", help="stop after this much training: 90s, 5m, 1h")
    parser.add_argument(
        "--steps",
        type=int,
        help="stop after N steps (no time budget unless --time-budget is also given)",
    )
    parser.add_argument("--seed", type=int, help="same as --seed=N: repeatable runs")
    parser.add_argument("--resume", type=Path, metavar="RUN", help="continue an interrupted run")
    parser.add_argument("--run-dir", type=Path, help="the run folder (default: runs/TASK-TIME)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run already in --run-dir and start over (default: refuse)",
    )
    parser.add_argument(
        "--runs-root",
        type=Path,
        default=Path("runs"),
        help="where new run folders go (default: ./runs)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the config and exit")
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="a YAML or JSON config; --KEY=VALUE on top"
    )
    parser.set_defaults(handler=run_train, definition=definition)


def flatten(data: dict, prefix: str = "") -> dict:
    """Nested dicts -> ``{"dotted.key": value}``."""
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def parse_overrides(arguments: list[str]) -> list[tuple[str, str]]:
    """``["--a.b=1", "--c.d", "2"]`` -> ``[("a.b", "1"), ("c.d", "2")]``."""
    overrides, position = [], 0
    while position < len(arguments):
        token = arguments[position]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(
                f"unexpected argument {token!r}; settings look like --model.recurrent.cell=gru"
            )
        key, separator, value = token[2:].partition("=")
        if not separator:
            if position + 1 >= len(arguments) or arguments[position + 1].startswith("--"):
                raise ConfigError(f"--{key} needs a value, e.g. --{key}=VALUE")
            position += 1
            value = arguments[position]
        overrides.append((key.replace("-", "_"), value))
        position += 1
    return overrides


def resolve_config(options: argparse.Namespace, extra: list[str]):
    """The config of a train command: defaults or the resumed run's, then the overrides."""
    definition: TaskDefinition = options.definition
    document = None
    if options.resume is not None:
        document = read_checkpoint(options.resume)
        if document.get("task") != definition.name:
            raise CheckpointError(f"{options.resume} is a {document.get('task')!r} run")
        config: Any = from_dict(definition.config_type, document["config"])  # the task's own
    elif options.config is not None:
        config = load_file(definition.config_type, options.config)
    else:
        config = definition.config_type()
    overrides = []
    for option, key in definition.shortcuts.items():
        value = getattr(options, f"shortcut_{option}")
        if value is not None:
            overrides.append((key, value))
    if options.steps is not None:
        overrides.append(("trainer.max_steps", str(options.steps)))
        if options.time_budget is None:
            overrides.append(("trainer.time_budget_seconds", "none"))
    if options.time_budget is not None:
        overrides.append(("trainer.time_budget_seconds", str(parse_duration(options.time_budget))))
    if options.seed is not None:
        overrides.append(("seed", str(options.seed)))
    # --prune.KEY is short for --trainer.prune.KEY: pruning is part of every task's trainer.
    overrides += [
        ("trainer." + key if key.startswith("prune.") else key, value)
        for key, value in parse_overrides(extra)
    ]
    resolved = apply_overrides(config, overrides)
    if document is not None:
        check_resumable(config, resolved)
    return resolved, document


RESUMABLE_CHANGES = (
    "trainer.max_steps",
    "trainer.time_budget_seconds",
    "trainer.eval_interval",
    "trainer.eval_interval_seconds",
    "trainer.log_interval",
    "trainer.log_seconds",
    "trainer.threads",
    "data.path",
    "sample.",
    "optimizer.learning_rate",
    "optimizer.min_learning_rate_ratio",
    "optimizer.warmup_steps",
    "optimizer.clip_norm",
    "optimizer.gradient_noise",
)
"""Keys a resumed run may change: when to stop, log and evaluate, where the text is (the
vocabulary must still cover it), the final sample, and the learning rate, its schedule and
gradient clipping (recomputed every step; the betas and weight decay live in the optimizer
state and stay)."""


def check_resumable(saved, resolved) -> None:
    """Refuse overrides that a checkpoint cannot continue with (model shape, batch, ...)."""
    before, after = flatten(to_dict(saved)), flatten(to_dict(resolved))
    changed = [key for key in after if after[key] != before.get(key)]
    refused = [key for key in changed if not key.startswith(RESUMABLE_CHANGES)]
    if refused:
        allowed = [key + "*" if key.endswith(".") else key for key in RESUMABLE_CHANGES]
        raise ConfigError(
            f"cannot change {', '.join(refused)} when resuming; a resumed run may change only "
            f"{', '.join(allowed)}"
        )
    for key in changed:
        print(f"resuming with {key} changed: {before.get(key)!r} -> {after[key]!r}")


def run_train(options: argparse.Namespace, extra: list[str]) -> int:
    from rnnkit.train import distributed
    from rnnkit.train.run import new_run_dir, train

    resume, run_dir = options.resume, options.run_dir
    if resume is not None and run_dir is not None and run_dir.resolve() != resume.resolve():
        raise ConfigError(
            f"--run-dir {run_dir} with --resume {resume}: a resumed run continues in its own "
            "folder; drop --run-dir (or copy the run folder first)"
        )
    config, document = resolve_config(options, extra)
    if options.print_config:
        print(to_json(config))
        return 0
    if options.resume is not None:
        run_dir = options.resume
    elif options.run_dir is not None:
        run_dir = options.run_dir
    else:
        run_dir = new_run_dir(options.runs_root, options.definition.name)
    if options.overwrite and options.resume is not None:
        raise ConfigError("--overwrite starts a run over; it cannot go with --resume")
    ranks = distributed.start_from_environment()  # under torchrun: one rank of a process group
    try:
        run_dir = ranks.broadcast(run_dir)  # rank 0's folder (new ones are named by the time)
        if ranks.is_main:
            result = train(
                options.definition, config, run_dir, document, overwrite=options.overwrite
            )
        else:
            result = distributed.follow(options.definition, config, run_dir, document)
    finally:
        distributed.stop()
    return 128 + result.signal_number if result.reason == "interrupted" else 0


def run_sample(options: argparse.Namespace, extra: list[str]) -> int:
    import torch

    from rnnkit.decoding import generate
    from rnnkit.train.tasks.charlm import SampleConfig, load_trained

    try:  # the same range checks as sample.* in a config, before the checkpoint is read
        SampleConfig(options.prompt, options.length, options.temperature, options.top_k)
    except ValueError as error:
        raise ConfigError(f"--{str(error).replace('_', '-')}") from None
    _, model, vocabulary, _ = load_trained(options.run)
    prompt = options.prompt or ("\n" if "\n" in vocabulary.index else vocabulary.characters[0])
    unknown = vocabulary.unknown(prompt)
    if unknown:
        raise CorpusError(
            f"the prompt has characters outside the model's vocabulary: "
            f"{', '.join(repr(character) for character in unknown)}; the vocabulary is "
            f"{''.join(vocabulary.characters)!r}"
        )
    generator = torch.Generator()
    if options.seed is None:
        generator.seed()
    else:
        generator.manual_seed(options.seed)
    sys.stdout.write(prompt)
    tokens = generate(
        model,
        vocabulary.encode(prompt),
        options.length,
        options.temperature,
        options.top_k,
        generator,
    )
    for token in tokens:
        sys.stdout.write(vocabulary.characters[token])
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def run_eval(options: argparse.Namespace, extra: list[str]) -> int:
    from rnnkit.train.tasks import charlm

    document = read_checkpoint(options.run)
    task_name = document.get("task")
    definition = get_task(str(task_name))
    # With --json the task's text goes to stderr, so stdout is exactly one JSON object.
    stream = sys.stderr if options.json else sys.stdout
    if options.depth_schedule is not None:
        metrics = evaluate_scheduled(options, definition, stream)
    elif definition.name == charlm.NAME:
        metrics = charlm.evaluate_run(options.run, stream, options.data, options.split)
    elif options.split != "validation":
        raise ValueError(f"--split is for charlm runs; {options.run} is a {task_name} run")
    elif options.data is not None and definition.evaluate_file is not None:
        metrics = definition.evaluate_file(options.run, Path(options.data), stream)
    elif options.data is not None:
        raise ValueError(
            f"--data is for tasks trained on files; {options.run} is a {task_name} run, "
            "evaluated on its own held-out data"
        )
    else:
        metrics = definition.evaluate_run(options.run, stream)
    if options.json:
        print(json.dumps(eval_document(definition.name, options, document, metrics)))
    return 0


def evaluate_scheduled(
    options: argparse.Namespace, definition: TaskDefinition, stream: Any
) -> dict[str, float]:
    """``eval --depth-schedule``: a benchmark task's test metrics with its blocks scheduled."""
    from rnnkit.models.depth.schedule import apply_schedule, format_schedule, parse_schedule
    from rnnkit.train.tasks import supervised
    from rnnkit.train.tasks.benchmark_task import BenchmarkTask, format_metrics
    from rnnkit.train.threads import threads_restored

    if options.data is not None or options.split != "validation":
        raise ValueError(
            "--depth-schedule: expected no --data and no --split (it scores the run's test set)"
        )
    with threads_restored():
        _, task, step = supervised.load_run(
            options.run, definition.name, definition.config_type, definition.build
        )
        if not isinstance(task, BenchmarkTask):
            raise ValueError(
                "--depth-schedule: expected a run of a benchmark task (a sequence model), "
                f"got a {definition.name} run"
            )
        schedule = parse_schedule(options.depth_schedule, len(task.model.blocks))
        apply_schedule(task.model, schedule)
        metrics = task.evaluate_stream(supervised.TEST_STREAM)
        metrics["scheduled_blocks"] = float(len(schedule))
    stream.write(
        f"{definition.name} test set (model at step {step}, depth schedule "
        f"{format_schedule(schedule)}): {format_metrics(metrics)}\n"
    )
    return metrics


def run_predict(options: argparse.Namespace, extra: list[str]) -> int:
    document = read_checkpoint(options.run)
    definition = get_task(str(document.get("task")))
    if definition.predict_file is None:
        raise ValueError(
            f"{options.run} is a {definition.name} run; rnnkit predict is for tasks trained on "
            "files a user brings"
        )
    if options.output.suffix not in (".csv", ".tsv"):
        raise ValueError(f"--output: expected a .csv or .tsv file, got {options.output}")
    rows = definition.predict_file(options.run, options.data, options.output, sys.stdout)
    print(f"wrote {rows} predictions to {options.output}")
    return 0


def run_export(options: argparse.Namespace, extra: list[str]) -> int:
    from rnnkit.deploy.runs import export_run

    if options.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {options.batch_size}")
    export_run(options.run, options.output, options.format, options.batch_size, sys.stdout)
    return 0


def run_quantize(options: argparse.Namespace, extra: list[str]) -> int:
    from rnnkit.deploy.runs import quantize_run

    quantize_run(options.run, options.output, sys.stdout)
    return 0


def eval_document(task: str, options: argparse.Namespace, checkpoint: dict, metrics: dict) -> dict:
    """The ``eval --json`` object; a NaN or infinite metric is null (JSON has no NaN)."""
    split = options.split if options.data is None else f"{options.split} of {options.data}"
    return {
        "task": task,
        "run": str(options.run),
        "step": checkpoint.get("step"),
        "split": split if task == "charlm" else "test",
        "metrics": {
            name: value if not isinstance(value, float) or math.isfinite(value) else None
            for name, value in metrics.items()
        },
    }


if __name__ == "__main__":
    sys.exit(main())
