"""``rnnkit train dynamics``: dynamical-systems reconstruction with generalized teacher forcing.

A recurrent model (any registered cell with an output field; the AL-RNN by default, Brenner et
al. 2024, M = 20 units, P = 2 ReLUs) learns the flow of a chaotic system from trajectories:

- data (``--data.system``): Lorenz-63, Roessler or Lorenz-96 integrated by
  ``rnnkit.data.dynamical_systems`` (one training trajectory of ``data.steps`` with observation
  noise ``data.noise``, one noise-free test trajectory from another initial point), or the user's
  CSV (``--data FILE``, ``rnnkit.data.files.trajectories_csv``), whose
  trajectories train on their first ``1 - data.test_fraction`` and are scored on the rest. Each
  dimension is z-scored with the training data's mean and deviation (kept in the checkpoint);
  metrics are computed in z-scored units, predictions are written in the file's units.
- model: the identity observation x_t = z_t[:N] of the first N latent units (N observed
  dimensions; in the AL-RNN keep N <= M - P so they are linear units) and the initial state
  z_0 = (x_0, L x_0) with a learned ``L (M - N, N)`` (the reference ``init_state``); inputs are
  zero (the systems are autonomous).
- training (``rnnkit.train.teacher_forcing.gtf_rollout``): windows of ``train.sequence_length``
  steps, z forced towards x with ``train.teacher_forcing`` = alpha (fixed), or with
  ``--train.adaptive=true`` the paper's adaptive alpha computed from each batch (no annealing),
  mean squared error of the predictions before forcing.
- validation and ``rnnkit eval``: D_stsp, D_H (``rnnkit.train.dynamics_metrics``) of a run as
  long as the test data: its first ``evaluation.warmup + 1`` points are the data (the state
  forced through them with the training alpha, ``DynamicsModel.warmed_state``), the rest runs
  free; the valid prediction time (steps and Lyapunov times) of forecasts from
  ``evaluation.forecasts`` points after ``evaluation.warmup`` such forced steps, and ``loss``, the
  GTF loss on the test data. ``rnnkit predict`` forces the state through each whole trajectory
  the same way, then runs ``evaluation.horizon`` steps free. The free runs and forecasts use the
  layer's strategy (``--model.recurrent.strategy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from rnnkit.data import dynamical_systems as systems
from rnnkit.data.files.trajectories_csv import read_trajectories, write_trajectories
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.train import dynamics_metrics as measures
from rnnkit.train import ranges
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.task import FitResult
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.teacher_forcing import DynamicsModel
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

NAME = "dynamics"
PLOT_FILE = "attractor.png"
SOURCES = ("lorenz63", "roessler", "lorenz96", "csv")


@dataclass
class DynamicsDataConfig:
    """Where the trajectories come from."""

    system: str = ""
    """``lorenz63``, ``roessler``, ``lorenz96`` (generated) or ``csv`` (``path``); empty:
    ``csv`` when ``path`` is given, else ``lorenz63``."""
    path: str | None = None
    """The CSV of trajectories (``--data FILE``), with ``system=csv``."""
    steps: int = 20_000
    """Generated systems: steps of the training trajectory."""
    test_steps: int = 10_000
    """Generated systems: steps of the test trajectory."""
    noise: float = 0.05
    """Generated systems: observation noise of the training data, in standard deviations."""
    lorenz96_dimension: int = 10
    """Variables of Lorenz-96."""
    test_fraction: float = 0.2
    """CSV: the share of each trajectory's last steps held out for scoring (a trajectory where
    that is under 2 steps is both trained on and scored whole)."""
    lyapunov_exponent: float | None = None
    """Largest Lyapunov exponent per step (CSV; generated systems know theirs): valid prediction
    times in Lyapunov times need it."""

    def source(self) -> str:
        """The system in effect (``system``, or what its empty default stands for)."""
        return self.system or ("csv" if self.path else "lorenz63")

    def __post_init__(self) -> None:
        system = self.source()
        ranges.choice("data.system", system, SOURCES)
        if system == "csv" and not self.path:
            raise ValueError("data.path: --data.system=csv needs --data.path=FILE")
        if system != "csv" and self.path:
            raise ValueError(
                f"data.path: {self.path} would be ignored with --data.system={system} "
                "(a generated system); leave the system out or set --data.system=csv"
            )
        ranges.at_least("data.steps", self.steps, 10)
        ranges.at_least("data.test_steps", self.test_steps, 10)
        ranges.at_least("data.noise", self.noise, 0.0)
        ranges.between("data.test_fraction", self.test_fraction, 0.0, 1.0, False)
        ranges.positive("data.lyapunov_exponent", self.lyapunov_exponent, optional=True)


@dataclass
class GTFConfig:
    """Generalized teacher forcing."""

    teacher_forcing: float = 0.1
    """alpha in [0, 1]: 1 pure teacher forcing, 0 free running (validation's GTF loss uses it
    also with ``adaptive``)."""
    adaptive: bool = False
    """Hess et al.'s adaptive alpha instead, from each training batch
    (``rnnkit.train.teacher_forcing.adaptive_alpha``; cells with a one-field state)."""
    sequence_length: int = 200
    """Steps per training window (the reference code's 200)."""

    def __post_init__(self) -> None:
        ranges.between("train.teacher_forcing", self.teacher_forcing, 0.0, 1.0, True)
        ranges.at_least("train.sequence_length", self.sequence_length, 1)


@dataclass
class DynamicsEvaluationConfig:
    """How runs are scored."""

    bins: int = 30
    """D_stsp: bins per dimension (binning for N <= 5)."""
    gmm_scaling: float = 1.0
    """D_stsp: variance of each Gaussian of the mixture estimate (N > 5)."""
    spectrum_smoothing: float = 20.0
    """D_H: standard deviation of the Gaussian smoothing of the spectra, in frequency bins."""
    forecasts: int = 50
    """Valid prediction time: forecasts per evaluation."""
    warmup: int = 20
    """Steps forced with the training alpha before each forecast and generated run."""
    horizon: int = 1000
    """Steps per forecast; also the length of ``rnnkit predict``'s continuations."""
    threshold: float = 0.4
    """Normalized error that ends a valid prediction."""

    def __post_init__(self) -> None:
        for name in ("bins", "forecasts", "horizon"):
            ranges.at_least(f"evaluation.{name}", getattr(self, name), 1)
        ranges.at_least("evaluation.warmup", self.warmup, 0)
        ranges.positive("evaluation.gmm_scaling", self.gmm_scaling)
        ranges.at_least("evaluation.spectrum_smoothing", self.spectrum_smoothing, 0.0)
        ranges.positive("evaluation.threshold", self.threshold)


def default_recurrent() -> RecurrentConfig:
    """The AL-RNN with M = 20 units (its own default P = 2 ReLUs), as Brenner et al.'s
    Lorenz-63 setting."""
    return RecurrentConfig(cell="alrnn", hidden_size=20)


@dataclass
class DynamicsModelConfig:
    """The recurrent layer (one layer, one direction: GTF forces its state)."""

    recurrent: RecurrentConfig = field(default_factory=default_recurrent)

    def __post_init__(self) -> None:
        if self.recurrent.num_layers != 1 or self.recurrent.bidirectional:
            raise ValueError("model.recurrent: dynamics needs num_layers=1, bidirectional=false")


def default_optimizer() -> OptimizerConfig:
    """AdamW at 1e-3 without weight decay, cosine to 5% (the reference: RAdam 1e-3 to 1e-5)."""
    return OptimizerConfig(learning_rate=1e-3, weight_decay=0.0, warmup_steps=50)


def default_trainer() -> TrainerConfig:
    return TrainerConfig(
        max_steps=3000, time_budget_seconds=300, batch_size=16, eval_interval_seconds=60
    )


@dataclass
class DynamicsConfig:
    """Every setting of a dynamics run."""

    data: DynamicsDataConfig = field(default_factory=DynamicsDataConfig)
    model: DynamicsModelConfig = field(default_factory=DynamicsModelConfig)
    train: GTFConfig = field(default_factory=GTFConfig)
    evaluation: DynamicsEvaluationConfig = field(default_factory=DynamicsEvaluationConfig)
    optimizer: OptimizerConfig = field(default_factory=default_optimizer)
    trainer: TrainerConfig = field(default_factory=default_trainer)
    seed: int = 0


@dataclass
class DynamicsData:
    """Z-scored trajectories ``(T_i, N)`` float64 to train on and to score on."""

    columns: list[str]
    train: list[Tensor]
    test: list[Tensor]
    mean: Tensor  # (N,) of the training data, in the file's units
    scale: Tensor  # (N,)
    lyapunov_per_step: float | None
    description: str


def load_data(
    config: DynamicsDataConfig, seed: int, metadata: dict[str, Any] | None
) -> DynamicsData:
    """The run's data; ``metadata`` (on resume or load) fixes the z-scoring."""
    if config.source() == "csv":
        assert config.path is not None  # checked by the config
        loaded = read_trajectories(config.path)
        train, test = [], []
        for values in loaded.values:
            held_out = int(len(values) * config.test_fraction)
            train.append(values[: len(values) - held_out] if held_out >= 2 else values)
            test.append(values[len(values) - held_out :] if held_out >= 2 else values)
        columns, lyapunov = loaded.columns, config.lyapunov_exponent
        description = f"{loaded.report.summary()}, {len(train)} trajectories"
    else:
        system = systems.get_system(config.source(), config.lorenz96_dimension)
        generator = supervised.fixed_generator(seed, supervised.VALIDATION_STREAM)
        train = list(systems.trajectories(system, 1, config.steps, generator, noise=config.noise))
        generator = supervised.fixed_generator(seed, supervised.TEST_STREAM)
        test = list(systems.trajectories(system, 1, config.test_steps, generator))
        columns = ["x", "y", "z"] if system.dimension == 3 else []
        columns = columns or [f"x{index + 1}" for index in range(system.dimension)]
        lyapunov = system.lyapunov_exponent * system.dt or None
        description = (
            f"{system.name}, dt {system.dt}: {config.steps} training steps (noise "
            f"{config.noise:g}), {config.test_steps} test steps"
        )
    if metadata is not None:
        mean = torch.tensor(metadata["mean"], dtype=torch.float64)
        scale = torch.tensor(metadata["scale"], dtype=torch.float64)
    else:
        joined = torch.cat(train)
        mean, scale = joined.mean(0), joined.std(0).clamp_min(1e-12)
    train = [(values - mean) / scale for values in train]
    test = [(values - mean) / scale for values in test]
    return DynamicsData(columns, train, test, mean, scale, lyapunov, description)


@torch.no_grad()
def score(
    model: DynamicsModel,
    trajectories: list[Tensor],
    config: DynamicsConfig,
    lyapunov_per_step: float | None,
) -> dict[str, float]:
    """GTF loss, D_stsp, D_H and valid prediction time on z-scored ``(T_i, N)`` trajectories."""
    dtype = next(model.parameters()).dtype
    evaluation = config.evaluation
    alpha = config.train.teacher_forcing
    losses, generated = [], []
    for values in trajectories:
        values = values.to(dtype)[None]
        predictions, _ = model.forced(values, alpha)
        losses.append(float(((predictions - values[:, 1:]) ** 2).sum()))
        prefix = values[:, : min(evaluation.warmup, values.shape[1] - 2) + 1]
        generated.append(model.generate(prefix, values.shape[1], alpha)[0].double())
    true = torch.cat(trajectories)
    metrics = {
        "loss": sum(losses) / (len(true) - len(trajectories)) / true.shape[1],
        "state_space_divergence": measures.state_space_divergence(
            true, torch.cat(generated), bins=evaluation.bins, scaling=evaluation.gmm_scaling
        ),
        "power_spectrum_distance": sum(
            measures.power_spectrum_distance(x, y, smoothing=evaluation.spectrum_smoothing)
            for x, y in zip(trajectories, generated, strict=True)
        )
        / len(trajectories),
    }
    forced, truth = systems.forecast_windows(
        trajectories, evaluation.forecasts, evaluation.warmup, evaluation.horizon
    )
    state = model.warmed_state(forced.to(dtype), alpha)
    forecast = model.free_run(state, truth.shape[1]).double()
    steps = measures.valid_prediction_steps(
        truth, forecast, true.var(0), evaluation.threshold
    ).double()
    metrics["valid_prediction_steps"] = float(steps.mean())
    if lyapunov_per_step is not None:
        metrics["valid_prediction_lyapunov_times"] = float(steps.mean()) * lyapunov_per_step
    metrics["parameter_count"] = float(sum(p.numel() for p in model.parameters()))
    return metrics


class DynamicsTask(supervised.NoCarriedTensors):
    """The ``TrainingTask``: GTF mean squared error per observed value."""

    unit = "window"

    def __init__(self, config: DynamicsConfig, metadata: dict[str, Any] | None) -> None:
        self.config = config
        self.data = load_data(config.data, config.seed, metadata)
        self.model = DynamicsModel(config.model.recurrent, len(self.data.columns))

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        batch_size = self.config.trainer.batch_size
        generator = supervised.batch_generator(self.config.seed, step)
        length = self.config.train.sequence_length + 1
        windows = systems.draw_windows(self.data.train, length, batch_size, generator).float()
        alpha = self.config.train.teacher_forcing
        if self.config.train.adaptive:
            alpha = self.model.adaptive_alpha(windows)
        predictions, _ = self.model.forced(windows, alpha)
        return ((predictions - windows[:, 1:]) ** 2).mean(), batch_size

    def evaluate(self) -> dict[str, float]:
        return score(self.model, self.data.test, self.config, self.data.lyapunov_per_step)

    def metadata(self) -> dict[str, Any]:
        return {
            "columns": self.data.columns,
            "mean": self.data.mean.tolist(),
            "scale": self.data.scale.tolist(),
        }

    def describe(self) -> str:
        recurrent = self.config.model.recurrent
        count = sum(p.numel() for p in self.model.parameters())
        return (
            f"data: {self.data.description}\nmodel: {recurrent.cell} {recurrent.options}, "
            f"M = {recurrent.hidden_size}, {count:,} parameters; GTF alpha "
            f"{self.config.train.teacher_forcing}\n{self.model.layer.describe_strategy()}"
        )


def build(config: DynamicsConfig, metadata: dict[str, Any] | None) -> DynamicsTask:
    return DynamicsTask(config, metadata)


def format_metrics(metrics: dict[str, float]) -> str:
    text = (
        f"D_stsp {metrics['state_space_divergence']:.3f}, D_H "
        f"{metrics['power_spectrum_distance']:.3f}, valid prediction "
        f"{metrics['valid_prediction_steps']:.0f} steps"
    )
    if "valid_prediction_lyapunov_times" in metrics:
        text += f" ({metrics['valid_prediction_lyapunov_times']:.2f} Lyapunov times)"
    return text + f", GTF loss {metrics['loss']:.4g}"


def plot_attractors(true: Tensor, generated: Tensor, path: Path) -> Path:
    """The first three (or two) dimensions of ``true`` and ``generated (T, N)`` side by side."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    three = true.shape[1] >= 3
    figure = pyplot.figure(figsize=(10, 4.5))
    for position, (values, title) in enumerate(((true, "data"), (generated, "generated")), 1):
        axes = figure.add_subplot(1, 2, position, projection="3d" if three else None)
        columns = [
            values[:, index].numpy() for index in range(3 if three else min(2, values.shape[1]))
        ]
        if len(columns) == 1:
            columns = [torch.arange(len(values)).numpy(), columns[0]]
        axes.plot(*columns, linewidth=0.3)
        axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path


def report(task: DynamicsTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
    task.model.eval()
    metrics = task.evaluate()
    stream.write(
        f"after {result.step} steps ({result.train_seconds:.0f} s of training), test data: "
        f"{format_metrics(metrics)}\n"
    )
    true = task.data.test[0]
    with torch.no_grad():
        dtype = next(task.model.parameters()).dtype
        prefix = true[None, : task.config.evaluation.warmup + 1].to(dtype)
        alpha = task.config.train.teacher_forcing
        generated = task.model.generate(prefix, len(true), alpha).double()[0]
    stream.write(f"attractors: {plot_attractors(true, generated, run_dir / PLOT_FILE)}\n")


@restoring_threads
def evaluate_run(run_dir: Path, stream: TextIO) -> dict[str, float]:
    _, task, step = supervised.load_run(run_dir, NAME, DynamicsConfig, build)
    metrics = task.evaluate()
    stream.write(f"{NAME} test data (model at step {step}): {format_metrics(metrics)}\n")
    return metrics


def load_file(task: DynamicsTask, path: Path) -> tuple[list[str], list[Tensor]]:
    """The ids and z-scored trajectories of a file with the run's columns."""
    loaded = read_trajectories(path, expected_columns=task.data.columns)
    return loaded.ids, [(values - task.data.mean) / task.data.scale for values in loaded.values]


@restoring_threads
def evaluate_file(run_dir: Path, path: Path, stream: TextIO) -> dict[str, float]:
    config, task, step = supervised.load_run(run_dir, NAME, DynamicsConfig, build)
    _, trajectories = load_file(task, path)
    metrics = score(task.model, trajectories, config, task.data.lyapunov_per_step)
    stream.write(f"{NAME} {path} (model at step {step}): {format_metrics(metrics)}\n")
    return metrics


@torch.no_grad()
def continuations(task: DynamicsTask, trajectories: list[Tensor], steps: int) -> list[Tensor]:
    """Free runs of ``steps`` from the end of each z-scored trajectory (GTF with the training
    alpha all along it), in the file's units."""
    dtype = next(task.model.parameters()).dtype
    results = []
    for values in trajectories:
        state = task.model.warmed_state(values.to(dtype)[None], task.config.train.teacher_forcing)
        generated = task.model.free_run(state, steps)[0].double()
        results.append(generated * task.data.scale + task.data.mean)
    return results


@restoring_threads
def predict_file(run_dir: Path, path: Path, output: Path, stream: TextIO) -> int:
    config, task, _ = supervised.load_run(run_dir, NAME, DynamicsConfig, build)
    ids, trajectories = load_file(task, path)
    generated = continuations(task, trajectories, config.evaluation.horizon)
    stream.write(f"{len(ids)} trajectories continued by {config.evaluation.horizon} steps\n")
    return write_trajectories(output, task.data.columns, ids, generated)


def next_steps(run_dir: Path) -> str:
    return (
        f"metrics on the test data (as JSON with --json):\n  rnnkit eval {run_dir}\n"
        f"continue your own trajectories:\n  rnnkit predict {run_dir} --data FILE.csv "
        "--output generated.csv\n"
        f"the PLRNN instead of the AL-RNN:\n  rnnkit train {NAME} --model.recurrent.cell=plrnn\n"
        f"the adaptive forcing of Hess et al. 2023:\n  rnnkit train {NAME} --train.adaptive=true\n"
    )


DEFINITIONS = [
    TaskDefinition(
        name=NAME,
        description="dynamical-systems reconstruction (Lorenz-63, ...) with teacher forcing",
        config_type=DynamicsConfig,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
        shortcuts={"data": "data.path", "cell": "model.recurrent.cell"},
        evaluate_file=evaluate_file,
        predict_file=predict_file,
    )
]
