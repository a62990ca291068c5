"""``rnnkit train dynamics``: dynamical-systems reconstruction with (generalized) teacher forcing.

A recurrent model (any registered cell with an output field; the AL-RNN by default, Brenner et
al. 2024, M = 20 units, P = 2 ReLUs) learns the flow of a chaotic system from trajectories
(settings and data: ``rnnkit.train.tasks.dynamics_config``; Lorenz-63 by default, or the user's
CSV with ``--data FILE``):

- model: the identity observation x_t = z_t[:N] of the first N latent units (N observed
  dimensions; in the AL-RNN keep N <= M - P so they are linear units) and the initial state
  z_0 = (x_0, L x_0) with a learned ``L (M - N, N)`` (the reference ``init_state``); inputs are
  zero (the systems are autonomous).
- training (``rnnkit.train.teacher_forcing.gtf_rollout``): windows of ``train.sequence_length``
  steps, the observed units forced towards x with ``train.teacher_forcing`` = alpha every
  ``train.forcing_interval`` steps (alpha = 1 every 16 steps by default: the sparse identity
  teacher forcing of the reference ALRNN-DSR code; alpha < 1 every step: Hess et al.'s GTF), or
  with ``--train.adaptive=true`` the adaptive alpha computed from each batch (no annealing);
  mean squared error of the predictions before forcing.
- validation and ``rnnkit eval``: D_stsp, D_H (``rnnkit.train.dynamics_metrics``) of a run as
  long as the test data: its first ``evaluation.warmup + 1`` points are the data (the state
  forced through them as in training, ``DynamicsModel.warmed_state``), the rest runs free; the
  valid prediction time (steps and Lyapunov times) of forecasts from ``evaluation.forecasts``
  points after ``evaluation.warmup`` such forced steps, and ``loss``, the teacher-forced loss on
  the test data. Metrics are computed in z-scored units. ``rnnkit predict`` forces the state
  through each whole trajectory the same way, then runs ``evaluation.horizon`` steps free, and
  writes them in the file's units. The free runs and forecasts use the layer's strategy
  (``--model.recurrent.strategy``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from rnnkit.data import dynamical_systems as systems
from rnnkit.data.files.trajectories_csv import read_trajectories, write_trajectories
from rnnkit.train import dynamics_metrics as measures
from rnnkit.train.task import FitResult
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tasks.dynamics_config import DynamicsConfig, load_data
from rnnkit.train.teacher_forcing import DynamicsModel
from rnnkit.train.threads import restoring_threads

NAME = "dynamics"
PLOT_FILE = "attractor.png"


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
    alpha, interval = config.train.teacher_forcing, config.train.forcing_interval
    losses, generated = [], []
    for values in trajectories:
        values = values.to(dtype)[None]
        predictions, _ = model.forced(values, alpha, interval)
        losses.append(float(((predictions - values[:, 1:]) ** 2).sum()))
        prefix = values[:, : min(evaluation.warmup, values.shape[1] - 2) + 1]
        generated.append(model.generate(prefix, values.shape[1], alpha, interval)[0].double())
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
    state = model.warmed_state(forced.to(dtype), alpha, interval)
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
    splits_batch_by_rank = True  # under torchrun each rank trains its rows (train_loss)

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
        if self.config.train.adaptive:  # a maximum over the whole batch, on every rank alike
            alpha = self.model.adaptive_alpha(windows)
        windows = supervised.rank_rows(windows, batch_size)  # this rank's rows
        predictions, _ = self.model.forced(windows, alpha, self.config.train.forcing_interval)
        return ((predictions - windows[:, 1:]) ** 2).mean(), len(windows)

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
            f"M = {recurrent.hidden_size}, {count:,} parameters; teacher forcing alpha "
            f"{self.config.train.teacher_forcing} every {self.config.train.forcing_interval} "
            f"steps\n{self.model.layer.describe_strategy()}"
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
        train = task.config.train
        generated = task.model.generate(
            prefix, len(true), train.teacher_forcing, train.forcing_interval
        ).double()[0]
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
    """Free runs of ``steps`` from the end of each z-scored trajectory (forced as in training all
    along it, and on its last step), in the file's units."""
    dtype = next(task.model.parameters()).dtype
    results = []
    for values in trajectories:
        train = task.config.train
        state = task.model.warmed_state(
            values.to(dtype)[None], train.teacher_forcing, train.forcing_interval
        )
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
        "generalized teacher forcing every step (Hess et al. 2023), fixed or adaptive alpha:\n"
        f"  rnnkit train {NAME} --train.forcing_interval=1 --train.teacher_forcing=0.1\n"
        f"  rnnkit train {NAME} --train.forcing_interval=1 --train.adaptive=true\n"
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
