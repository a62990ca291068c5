"""What the benchmark tasks share: one sequence model, one ``TrainingTask``, one report.

Each benchmark task (``rnnkit.train.tasks.benchmark_problems``) is a *problem*: generated data
(``rnnkit.data.benchmarks``), its loss and its metrics. This module puts a problem and a
``SequenceModel`` (``--model.cell=NAME``: attention or any registered cell) together as the
``TrainingTask`` the trainer runs, and gives every problem the same report, ``rnnkit eval RUN``
and plots.

Data streams: training step ``s`` draws its batch from ``supervised.batch_generator(seed, s)``
on the generators' ``"train"`` side, so a resumed run sees the batches the uninterrupted run
would have seen. Validation and test sets are fixed draws of the ``"test"`` side from two other
streams (``VALIDATION_STREAM``, ``TEST_STREAM``); the generators keep the two sides disjoint.
Validation only watches training (nothing is selected on it); ``rnnkit eval`` reports the test
set.

Every evaluation also records ``parameter_count`` and ``state_size``: floats of recurrent state
per sequence summed over the blocks, and for attention blocks the KV cache's floats per token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import torch
from torch import Tensor

from rnnkit.models.sequence_model import SequenceModel, SequenceModelConfig, build_sequence_model
from rnnkit.train import ranges
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.plots import plot_ponder_by_difficulty
from rnnkit.train.task import FitResult
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

LENGTH_PREFIX = "accuracy_at_length_"
"""Metrics ``accuracy_at_length_N``: the accuracy on test sequences of length N."""
LENGTH_PLOT_FILE = "accuracy_by_length.png"
PONDER_PLOT_FILE = "ponder.png"
PONDER_BUCKETS = 8
"""Difficulty buckets of ``ponder_by_length_N`` and ``ponder_by_ones_N`` (``rnnkit eval``)."""


@dataclass
class EvaluationConfig:
    """How many held-out sequences validation and ``rnnkit eval`` score."""

    sequences: int = 256
    """Held-out sequences per evaluated setting (per test length, where a task has several)."""
    batch_size: int = 128
    """Sequences per forward pass in evaluation."""

    def __post_init__(self) -> None:
        ranges.at_least("sequences", self.sequences, 1)
        ranges.at_least("batch_size", self.batch_size, 1)


def task_trainer() -> TrainerConfig:
    """The benchmark tasks' default stopping: 2,000 steps or 5 minutes of training."""
    return TrainerConfig(max_steps=2000, time_budget_seconds=300, eval_interval_seconds=60)


def task_optimizer() -> OptimizerConfig:
    """AdamW at 3e-3 with weight decay 0.1 after 100 warm-up steps, cosine to the end."""
    return OptimizerConfig(learning_rate=3e-3, weight_decay=0.1, warmup_steps=100)


def benchmark_config(
    name: str,
    description: str,
    data: Callable[[], Any],
    evaluation: Callable[[], EvaluationConfig] = EvaluationConfig,
) -> type:
    """The config class of a benchmark task: every task has the same groups, and only the
    generator's config (``data()`` gives its default) and the evaluation defaults differ.

    - ``data``: the generator, every option a ``--data.*`` setting;
    - ``model``: the sequence model, ``--model.cell=NAME`` picks the mixer;
    - ``optimizer``: AdamW or Muon and the schedule (``task_optimizer``);
    - ``trainer``: stopping, evaluation, logging (``task_trainer``);
    - ``evaluation``: held-out sequences scored;
    - ``seed``: seeds the weights and the training batches."""
    return make_dataclass(
        name,
        [
            ("data", type(data()), field(default_factory=data)),
            ("model", SequenceModelConfig, field(default_factory=SequenceModelConfig)),
            ("optimizer", OptimizerConfig, field(default_factory=task_optimizer)),
            ("trainer", TrainerConfig, field(default_factory=task_trainer)),
            ("evaluation", EvaluationConfig, field(default_factory=evaluation)),
            ("seed", int, field(default=0)),
        ],
        namespace={"__doc__": f"{description}: every setting of a run.", "__module__": __name__},
    )


def fixed_set(config: Any, stream: int, draw: Callable[..., Any]) -> Any:
    """The held-out set of ``stream``: ``draw(count, generator)`` in batches of
    ``config.evaluation.batch_size`` up to ``config.evaluation.sequences``, as one batch."""
    generator = supervised.fixed_generator(config.seed, stream)
    sequences, batch_size = config.evaluation.sequences, config.evaluation.batch_size
    sizes = [batch_size] * (sequences // batch_size)
    if sequences % batch_size:
        sizes.append(sequences % batch_size)
    batches = [draw(size, generator) for size in sizes]
    # NamedTuples of tensors, concatenated field by field
    return type(batches[0])(*(torch.cat(list(parts)) for parts in zip(*batches, strict=True)))


def fixed_sets_by_length(
    config: Any, stream: int, lengths: list[int], draw: Callable[..., Any]
) -> list[Any]:
    """``fixed_set`` at each of ``lengths``: ``draw(count, length, generator)``, one stream."""
    return [
        fixed_set(
            config, stream, lambda count, generator, length=length: draw(count, length, generator)
        )
        for length in lengths
    ]


class TokenProblemBase:
    """What the token problems share: token inputs and logits over the generator's vocabulary
    (``config.data.vocabulary_size``), and the cross-entropy at each batch's ``mask``."""

    unit = "token"
    input_size = None

    def __init__(self, config: Any) -> None:
        self.config, self.data = config, config.data
        self.vocabulary_size: int | None = config.data.vocabulary_size
        self.output_size: int = config.data.vocabulary_size

    def loss(self, model: SequenceModel, batch: Any) -> tuple[Tensor, int]:
        return masked_token_loss(model, batch.inputs, batch.targets, batch.mask)


class Problem(Protocol):
    """One benchmark task's data, loss and metrics."""

    @property
    def unit(self) -> str:
        """What the loss is averaged over ("token", "sequence")."""

    @property
    def vocabulary_size(self) -> int | None:
        """Token ids ``0 .. V - 1`` as inputs, or None for real inputs."""

    @property
    def input_size(self) -> int | None:
        """Features of real inputs, or None for token inputs."""

    @property
    def output_size(self) -> int:
        """Logits (or regression outputs) per position."""

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Any:
        """A training batch of the generators' ``"train"`` side."""

    def loss(self, model: SequenceModel, batch: Any) -> tuple[Tensor, int]:
        """Mean loss of ``batch`` (with its graph) and the number of items it averages."""

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        """Metrics (``loss``, ``accuracy``, ...) on the fixed held-out set of ``stream``."""

    def describe(self) -> str:
        """One line on the data."""


class BenchmarkTask(supervised.NoCarriedTensors):
    """The ``TrainingTask`` of a benchmark problem and a ``SequenceModel``."""

    # Under torchrun each rank trains on its rows of the step's batch (every batch field is
    # batch-first); the trainer weights the ranks' gradients by their items. A depth recursion's
    # auxiliary loss (ACT's ponder cost) is a per-rank mean, so its weighting is approximate.
    splits_batch_by_rank = True

    def __init__(self, config: Any, problem: Problem) -> None:
        self.config, self.problem = config, problem
        self.unit = problem.unit
        self.loss_unit: str = getattr(problem, "loss_unit", "nats")
        self.model: SequenceModel = build_sequence_model(
            config.model,
            vocabulary_size=problem.vocabulary_size,
            input_size=problem.input_size,
            output_size=problem.output_size,
        )

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        generator = supervised.batch_generator(self.config.seed, step)
        batch_size = self.config.trainer.batch_size
        # under torchrun this rank's rows of the step's whole batch (splits_batch_by_rank)
        batch = supervised.rank_rows(self.problem.train_batch(batch_size, generator), batch_size)
        loss, count = self.problem.loss(self.model, batch)
        auxiliary = self.model.auxiliary_loss()  # depth recursion: ACT's ponder cost, ...
        return (loss if auxiliary is None else loss + auxiliary), count

    def evaluate(self) -> dict[str, float]:
        return self.evaluate_stream(supervised.VALIDATION_STREAM)

    def evaluate_stream(self, stream: int) -> dict[str, float]:
        """The problem's metrics on ``stream``'s held-out set, with the model's sizes."""
        self.model.reset_depth_statistics()
        with torch.no_grad():
            metrics = self.problem.evaluate(self.model, stream)
        return {**metrics, **self.model.depth_statistics(), **model_sizes(self.model)}

    def metadata(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        sizes = model_sizes(self.model)
        mixers = ", ".join(self.model.block_mixers())
        recurrent = self.config.model.recurrent
        strategy = (
            "" if self.config.model.mixer == "attention" else (f", strategy {recurrent.strategy}")
        )
        depth = self.config.model.depth
        if depth.recursion == "universal":
            halting = f"ACT, ponder weight {depth.ponder_weight:g}" if depth.act else "no ACT"
            strategy += f"; depth universal, up to {depth.max_steps} steps ({halting})"
        elif depth.recursion != "none":
            strategy += f"; depth {depth.recursion}, max_steps {depth.max_steps}"
        return (
            f"data: {self.problem.describe()}\n"
            f"model: {int(sizes['parameter_count']):,} parameters; blocks {mixers}{strategy}; "
            f"width {self.config.model.model_size}; state {int(sizes['state_size']):,} floats "
            "(recurrent: per sequence, attention: KV cache per token)"
        )


def model_sizes(model: SequenceModel) -> dict[str, float]:
    """``parameter_count`` and ``state_size`` (summed over the blocks) of ``model``."""
    return {
        "parameter_count": float(model.parameter_count()),
        "state_size": float(sum(model.state_size_per_token())),
    }


def masked_token_loss(
    model: SequenceModel, inputs: Tensor, targets: Tensor, mask: Tensor
) -> tuple[Tensor, int]:
    """Cross-entropy (nats) of the next-token logits at the ``mask`` positions ``(B, T)``."""
    logits, _ = model(inputs)  # (B, T, V)
    loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    return loss, int(mask.sum())


def batched_logits(model: SequenceModel, inputs: Tensor, batch_size: int) -> Tensor:
    """``model(inputs)`` in slices of ``batch_size`` rows, concatenated ``(N, T, output)``."""
    return torch.cat([model(part)[0] for part in inputs.split(batch_size)])


def token_metrics(logits: Tensor, targets: Tensor, mask: Tensor) -> dict[str, float]:
    """``loss`` (nats per scored token), ``accuracy`` (per scored token) and
    ``sequence_accuracy`` (every scored token of the sequence right)."""
    correct = (logits.argmax(-1) == targets) | ~mask  # (N, T)
    loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    return {
        "loss": float(loss),
        "accuracy": float(correct[mask].double().mean()),
        "sequence_accuracy": float(correct.all(1).double().mean()),
    }


def lengths_of(metrics: dict[str, float]) -> list[tuple[int, float]]:
    """``(length, accuracy)`` of the ``accuracy_at_length_N`` metrics, by length."""
    return sorted(
        (int(key[len(LENGTH_PREFIX) :]), value)
        for key, value in metrics.items()
        if key.startswith(LENGTH_PREFIX)
    )


def plot_length_curve(
    metrics: dict[str, float], train_length: int, path: Path, title: str
) -> Path | None:
    """Accuracy against test length, the training length marked; None without such metrics."""
    points = lengths_of(metrics)
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    axes.plot([length for length, _ in points], [value for _, value in points], "o-", ms=3)
    axes.axvline(train_length, color="gray", linestyle="--", label="training length")
    axes.set_xscale("log", base=2)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("test sequence length")
    axes.set_ylabel("accuracy")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


@torch.no_grad()
def ponder_by_difficulty(task: BenchmarkTask) -> dict[str, float]:
    """A Universal Transformer's (ACT) mean ponder steps per position of the longest held-out
    token batch, by difficulty: ``ponder_by_length_N`` (prefix lengths up to N, in
    ``PONDER_BUCKETS`` equal ranges) and ``ponder_by_ones_N`` (non-identity tokens, 0 < token,
    so far: the ones of parity, same ranges). Empty for other models and problems."""
    from rnnkit.data.benchmarks.batches import TokenBatch
    from rnnkit.models.depth.universal import UniversalTransformer

    depth, held_out = task.model.depth, getattr(task.problem, "held_out", None)
    if not isinstance(depth, UniversalTransformer) or depth.act is None or held_out is None:
        return {}
    sets = held_out(supervised.TEST_STREAM)
    sets = [sets] if isinstance(sets, TokenBatch) else sets
    if not isinstance(sets, list) or not all(isinstance(item, TokenBatch) for item in sets):
        return {}
    batch = max(sets, key=lambda item: item.inputs.shape[1])
    task.model.eval()
    steps = []
    for inputs in batch.inputs.split(task.config.evaluation.batch_size):
        task.model(inputs)
        assert depth.latest_steps is not None
        steps.append(depth.latest_steps)
    taken = torch.cat(steps).double()  # (N, T)
    length = taken.shape[1]
    width = -(-length // PONDER_BUCKETS)
    prefix = torch.arange(1, length + 1).expand_as(taken)
    ones = (batch.inputs > 0).long().cumsum(1)
    result = {}
    for name, difficulty in (("length", prefix), ("ones", ones)):
        bucket = (difficulty + width - 1) // width  # 0 for difficulty 0, 1 for 1..width, ...
        for index in range(int(bucket.max()) + 1):
            chosen = bucket == index
            if bool(chosen.any()):
                result[f"ponder_by_{name}_{index * width}"] = float(taken[chosen].mean())
    return result


def plot_ponder(metrics: dict[str, float], path: Path, title: str) -> Path | None:
    """The ``ponder_by_*`` metrics against their difficulty (upper end of each bucket)."""
    panels = [
        (
            label,
            {
                "mean steps": sorted(
                    (int(key.rsplit("_", 1)[1]), value)
                    for key, value in metrics.items()
                    if key.startswith(f"ponder_by_{name}_")
                )
            },
        )
        for name, label in (("length", "prefix length"), ("ones", "ones (non-identity) so far"))
    ]
    return plot_ponder_by_difficulty(panels, path, title)


def format_metrics(metrics: dict[str, float]) -> str:
    """The metrics but the per-length ones, one line."""
    shown = {
        key: value
        for key, value in metrics.items()
        if not key.startswith(LENGTH_PREFIX) and key not in ("parameter_count", "state_size")
    }
    return ", ".join(f"{key} {value:.4f}" for key, value in shown.items())


def write_lengths(stream: TextIO, metrics: dict[str, float]) -> None:
    points = lengths_of(metrics)
    if points:
        stream.write(
            "  accuracy by length: "
            + ", ".join(f"{length}: {value:.3f}" for length, value in points)
            + "\n"
        )


def make_definition(
    name: str,
    description: str,
    config_type: type,
    make_problem: Callable[[Any], Problem],
    train_length: Callable[[Any], int],
) -> TaskDefinition:
    """The ``TaskDefinition`` of a benchmark problem: ``make_problem(config)`` builds it;
    ``train_length(config)`` marks the training length on the accuracy-by-length plot."""

    def build(config: Any, metadata: dict[str, Any] | None) -> BenchmarkTask:
        return BenchmarkTask(config, make_problem(config))

    def report(task: BenchmarkTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
        if result.evaluation:
            stream.write(
                f"final validation after {result.step} steps ({result.train_seconds:.0f} s of "
                f"training): {format_metrics(result.evaluation)}\n"
            )
        task.model.eval()
        metrics = task.evaluate_stream(supervised.TEST_STREAM)
        stream.write(f"test: {format_metrics(metrics)}\n")
        write_lengths(stream, metrics)
        title = f"{name}: {', '.join(sorted(set(task.model.block_mixers())))}"
        plot_length_curve(metrics, train_length(task.config), run_dir / LENGTH_PLOT_FILE, title)

    @restoring_threads
    def evaluate_run(run_dir: Path, stream: TextIO) -> dict[str, float]:
        config, task, step = supervised.load_run(run_dir, name, config_type, build)
        metrics = task.evaluate_stream(supervised.TEST_STREAM)
        stream.write(
            f"{name} test set (model at step {step}, {int(metrics['parameter_count']):,} "
            f"parameters, state {int(metrics['state_size']):,} floats): "
            f"{format_metrics(metrics)}\n"
        )
        write_lengths(stream, metrics)
        ponder = ponder_by_difficulty(task)
        if ponder:
            metrics.update(ponder)
            path = plot_ponder(ponder, Path(run_dir) / PONDER_PLOT_FILE, f"{name}: ACT ponder")
            stream.write(f"  mean ponder steps by difficulty: {path}\n")
        return metrics

    def next_steps(run_dir: Path) -> str:
        return (
            f"test-set metrics (as JSON with --json):\n  rnnkit eval {run_dir}\n"
            f"compare mixers on this task:\n  rnnkit bench tasks --tasks {name} "
            "--mixers lstm mingru attention --steps 600\n"
        )

    return TaskDefinition(
        name=name,
        description=description,
        config_type=config_type,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
        shortcuts={"model.cell": "model.mixer"},
    )
