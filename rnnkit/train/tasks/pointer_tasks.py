"""Pointer networks on generated problems: ``rnnkit train sort | convex-hull | tsp``.

A pointer network (``rnnkit.models.pointer``) reads n numbers or points and points at them in
the order of the exact target (``rnnkit.data.pointer_problems``): sorted order, the convex
hull counter-clockwise then the end position, the optimal tour by Held-Karp. Training draws a
fresh batch each step (from the seed and the step alone, so resumed runs see the same batches)
with n uniform in ``data.min_size..data.max_size``; the loss is the cross-entropy of the
target positions, in nats per pointer (end positions count as pointers). Validation and
``rnnkit eval RUN`` decode greedily and report the problem's metrics; ``rnnkit eval`` also
tests on larger n (``data.test_sizes``) to show how a model trained on small n generalizes.

The defaults, measured on 2 CPU cores shared with other jobs (one thread, ``rnnkit train NAME``
then ``rnnkit eval RUN``, 1000 test problems each):

    sort         3922 steps in 180 s: exact 99.5% at n = 5-10, 97.6% at 15, 96.4% at 20
    convex-hull  2264 steps in 240 s: exact 80.7%, area coverage 99.25% at n = 5-20;
                 exact 45.6%, coverage 99.4% at n = 50
    tsp          4058 steps in 300 s: tour length / optimal 1.0072 (71.0% optimal) at
                 n = 5-10; 1.0217 (35.8% optimal) at n = 12
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data.pointer_problems import (
    CONVEX_HULL,
    SORT,
    TSP,
    PointerBatch,
    PointerProblem,
    check_sizes,
    draw_batch,
)
from rnnkit.models.pointer import (
    PADDING,
    PointerNetwork,
    PointerNetworkConfig,
    indices_from_positions,
    positions_from_indices,
)
from rnnkit.train.metrics import format_evaluation
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.task import FitResult
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tasks.pointer_plots import PREDICTION_FILE, plot_prediction
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

EVALUATION_BATCH = 250
"""Examples per forward pass in evaluation (bounds the (B, L, N+1, A) attention tensor)."""


@dataclass
class PointerDataConfig:
    """The sizes of the generated problems."""

    min_size: int = 5
    """Fewest elements (numbers, points, cities) of a training or validation problem."""
    max_size: int = 10
    """Most elements of a training or validation problem."""
    test_sizes: str = "20"
    """Comma-separated sizes that ``rnnkit eval`` also tests on ("20,50"; "" for none)."""
    validation_examples: int = 1000
    """Problems in the fixed validation set."""
    test_examples: int = 1000
    """Problems in each fixed test set of ``rnnkit eval``."""


def _optimizer(learning_rate: float) -> OptimizerConfig:
    """AdamW without weight decay: every batch is new, nothing to overfit."""
    return OptimizerConfig(learning_rate=learning_rate, weight_decay=0.0)


def _trainer(seconds: float) -> TrainerConfig:
    """128 problems a step, one thread: a second thread stalls when another process shares the
    cores (measured 13x slower); on an idle 2-core machine it is 1.4x faster (BENCHMARKS.md),
    ``--trainer.threads=0`` takes it."""
    return TrainerConfig(batch_size=128, time_budget_seconds=seconds, threads=1)


@dataclass
class SortConfig:
    """Sorting numbers with a pointer network: every setting of a run."""

    data: PointerDataConfig = field(default_factory=lambda: PointerDataConfig(5, 10, "15,20"))
    """Problem sizes: trained on 5-10 numbers, tested also on 15 and 20."""
    model: PointerNetworkConfig = field(default_factory=PointerNetworkConfig)
    """The pointer network (a permutation: chosen numbers masked, no end position)."""
    optimizer: OptimizerConfig = field(default_factory=lambda: _optimizer(5e-3))
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(default_factory=lambda: _trainer(180.0))
    """Stopping, evaluation, logging."""
    seed: int = 0
    """Seeds the model, the training batches and the fixed sets."""


@dataclass
class ConvexHullConfig:
    """Planar convex hulls with a pointer network: every setting of a run."""

    data: PointerDataConfig = field(default_factory=lambda: PointerDataConfig(5, 20, "50"))
    """Problem sizes: trained on 5-20 points, tested also on 50."""
    model: PointerNetworkConfig = field(
        default_factory=lambda: PointerNetworkConfig(end_position=True)
    )
    """The pointer network (a subset of the points, then the end position)."""
    optimizer: OptimizerConfig = field(default_factory=lambda: _optimizer(1e-2))
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(default_factory=lambda: _trainer(240.0))
    """Stopping, evaluation, logging."""
    seed: int = 0
    """Seeds the model, the training batches and the fixed sets."""


@dataclass
class TSPConfig:
    """Planar travelling salesman tours with a pointer network: every setting of a run."""

    data: PointerDataConfig = field(default_factory=lambda: PointerDataConfig(5, 10, "12"))
    """Problem sizes: trained on 5-10 cities, tested also on 12 (Held-Karp's limit is 13)."""
    model: PointerNetworkConfig = field(default_factory=PointerNetworkConfig)
    """The pointer network (a permutation: visited cities masked, no end position)."""
    optimizer: OptimizerConfig = field(default_factory=lambda: _optimizer(5e-3))
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(default_factory=lambda: _trainer(300.0))
    """Stopping, evaluation, logging."""
    seed: int = 0
    """Seeds the model, the training batches and the fixed sets."""


PointerTaskConfig = SortConfig | ConvexHullConfig | TSPConfig


class PointerTask(supervised.NoCarriedTensors):
    """The ``TrainingTask`` of a pointer network on one generated problem."""

    unit = "pointer"

    def __init__(self, config: PointerTaskConfig, problem: PointerProblem) -> None:
        data = config.data
        check_sizes(problem, data.min_size, data.max_size)
        for size in parse_test_sizes(data.test_sizes):
            check_sizes(problem, size, size)
        if problem is CONVEX_HULL and not config.model.end_position:
            raise ValueError(
                "model.end_position: convex hulls have varying lengths and need the end "
                "position; expected true, got false"
            )
        self.config, self.problem = config, problem
        self.model = PointerNetwork(config.model, problem.features)
        generator = supervised.fixed_generator(config.seed, supervised.VALIDATION_STREAM)
        self.validation = draw_batch(
            problem, generator, data.validation_examples, data.min_size, data.max_size
        )

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        data = self.config.data
        generator = supervised.batch_generator(self.config.seed, step)
        batch = draw_batch(
            self.problem, generator, self.config.trainer.batch_size, data.min_size, data.max_size
        )
        total, count = pointer_loss(self.model, batch)
        return total / count, count

    def evaluate(self) -> dict[str, float]:
        return evaluate_batch(self.model, self.problem, self.validation)

    def metadata(self) -> dict[str, Any]:
        return {"problem": self.problem.name}

    def describe(self) -> str:
        config, data = self.config.model, self.config.data
        return (
            f"{self.problem.name}: n = {data.min_size}-{data.max_size} per problem, "
            f"{data.validation_examples} validation problems\n"
            f"model: pointer network, {self.model.num_parameters():,} parameters, "
            f"{config.recurrent.num_layers} x {config.recurrent.cell} (hidden "
            f"{config.recurrent.hidden_size}"
            f"{', bidirectional encoder' if config.recurrent.bidirectional else ''}), additive "
            f"attention {config.attention_size}, {config.glimpses} glimpses, mask chosen "
            f"{config.mask_chosen}, end position {config.end_position}"
        )


def pointer_loss(model: PointerNetwork, batch: PointerBatch) -> tuple[Tensor, int]:
    """Summed cross-entropy of the target positions (teacher forcing), and their number."""
    targets = positions_from_indices(batch.targets, model.config.end_position)
    log_probabilities = model(batch.inputs, batch.lengths, targets)  # (B, L, N+1)
    total = functional.nll_loss(
        log_probabilities.flatten(0, 1), targets.flatten(), ignore_index=PADDING, reduction="sum"
    )
    return total, int((targets != PADDING).sum())


@torch.no_grad()
def predict(model: PointerNetwork, batch: PointerBatch) -> list[list[int]]:
    """Greedy outputs as lists of element indices (end position dropped)."""
    predictions: list[list[int]] = []
    for part in split_batch(batch):
        predictions += indices_from_positions(model.decode(part.inputs, part.lengths))
    return predictions


@torch.no_grad()
def evaluate_batch(
    model: PointerNetwork, problem: PointerProblem, batch: PointerBatch
) -> dict[str, float]:
    """Teacher-forced loss (nats per pointer) and the problem's metrics of greedy outputs."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for part in split_batch(batch):
        part_total, part_count = pointer_loss(model, part)
        total, count = total + float(part_total), count + part_count
    evaluation = {"loss": total / count, **problem.metrics(batch, predict(model, batch))}
    model.train(was_training)
    return evaluation


def split_batch(batch: PointerBatch, size: int = EVALUATION_BATCH) -> list[PointerBatch]:
    """Consecutive parts of at most ``size`` examples, each trimmed to its own longest."""
    parts = []
    for start in range(0, len(batch.lengths), size):
        lengths = batch.lengths[start : start + size]
        targets = batch.targets[start : start + size]
        longest_target = max(1, int((targets >= 0).sum(1).max()))
        parts.append(
            PointerBatch(
                batch.inputs[start : start + size, : int(lengths.max())],
                lengths,
                targets[:, :longest_target],
            )
        )
    return parts


def parse_test_sizes(text: str) -> list[int]:
    """``"20,50"`` -> ``[20, 50]`` (the ``data.test_sizes`` setting)."""
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ValueError(
            f"data.test_sizes: expected comma-separated whole numbers such as '20,50', got {text!r}"
        ) from None


def build(
    problem: PointerProblem, config: PointerTaskConfig, metadata: dict[str, Any] | None
) -> PointerTask:
    """The task of ``problem`` for ``config`` (the metadata names the problem)."""
    if metadata is not None and metadata.get("problem") != problem.name:
        raise ValueError(f"a {metadata.get('problem')!r} checkpoint, not a {problem.name!r} one")
    return PointerTask(config, problem)


def report(task: PointerTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
    """Print the final validation metrics; draw one validation problem into prediction.png."""
    if result.evaluation:
        stream.write(
            f"final validation {format_evaluation(result.evaluation)} after {result.step} "
            f"steps ({result.train_seconds:.0f} s of training)\n"
        )
    batch = task.validation
    row = int(batch.lengths.argmax())  # the first of the largest problems
    example = PointerBatch(
        batch.inputs[row : row + 1, : int(batch.lengths[row])],
        batch.lengths[row : row + 1],
        batch.targets[row : row + 1],
    )
    task.model.eval()
    (prediction,) = predict(task.model, example)
    target = [index for index in example.targets[0].tolist() if index >= 0]
    path = run_dir / PREDICTION_FILE
    plot_prediction(task.problem.name, example.inputs[0].double().numpy(), prediction, target, path)
    stream.write(f"a validation problem (n = {len(example.inputs[0])}) drawn in {path}\n")




@restoring_threads
def evaluate_run(
    problem: PointerProblem,
    config_type: type,
    run_dir: str | Path,
    stream: TextIO,
) -> dict[str, float]:
    """Metrics of a trained run on a fixed test set of its training sizes, then on each of
    ``data.test_sizes`` (keys prefixed ``n20_``, ...)."""
    config, task, step = supervised.load_run(
        run_dir, problem.name, config_type, partial(build, problem)
    )
    data = config.data
    sizes = parse_test_sizes(data.test_sizes)
    generator = supervised.fixed_generator(config.seed, supervised.TEST_STREAM)
    batch = draw_batch(problem, generator, data.test_examples, data.min_size, data.max_size)
    results = evaluate_batch(task.model, problem, batch)
    stream.write(
        f"test, n = {data.min_size}-{data.max_size} ({data.test_examples} problems, model at "
        f"step {step}): {format_evaluation(results)}\n"
    )
    for size in sizes:
        batch = draw_batch(problem, generator, data.test_examples, size, size)
        evaluation = evaluate_batch(task.model, problem, batch)
        stream.write(f"test, n = {size}: {format_evaluation(evaluation)}\n")
        results.update({f"n{size}_{name}": value for name, value in evaluation.items()})
    return results


def next_steps(run_dir: Path) -> str:
    return f"evaluate on held-out problems and on larger n with\n  rnnkit eval {run_dir}\n"


def _definition(problem: PointerProblem, config_type: type, description: str) -> TaskDefinition:
    build_problem: Callable[[Any, dict[str, Any] | None], PointerTask] = partial(build, problem)
    return TaskDefinition(
        name=problem.name,
        description=description,
        config_type=config_type,
        build=build_problem,
        report=report,
        evaluate_run=partial(evaluate_run, problem, config_type),
        next_steps=next_steps,
    )


DEFINITIONS = [
    _definition(SORT, SortConfig, "pointer network sorting numbers"),
    _definition(CONVEX_HULL, ConvexHullConfig, "pointer network finding planar convex hulls"),
    _definition(TSP, TSPConfig, "pointer network on planar TSP with exact Held-Karp tours"),
]
