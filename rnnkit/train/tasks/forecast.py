"""``rnnkit train forecast --data SERIES.csv``: multi-step forecasts of your own time series.

The file (``rnnkit.data.files.series_csv``: wide or long, one or many series, optional
timestamps and covariates) is split per series by a rolling-origin holdout, scaled per series
on its training part, and cut into windows of ``data.context`` inputs and ``data.horizon``
targets (``forecast_data``). Training step ``s`` draws its windows from
``supervised.batch_generator(seed, s)``, so a resumed run sees the batches of the uninterrupted
one. The loss is the mean squared error of the scaled forecasts (per value forecast); the
model (``rnnkit.models.forecaster``) decodes ``direct`` or ``autoregressive``
(``--model.decoding``), with any cell and strategy (``--model.recurrent.cell=gru``).

Validation forecasts the validation window of every series, the report and ``rnnkit eval RUN``
the test window; both give MAE, RMSE, sMAPE and MASE (``rnnkit.train.forecast_metrics``) beside
the seasonal-naive (season ``data.season``, by default read from the timestamps' step) and
last-value baselines on the same windows, and the report draws ``forecasts.png``. ``rnnkit
eval RUN --data FILE`` scores the last ``horizon`` steps of each series of FILE (scaled on the
steps before them); ``rnnkit predict RUN --data FILE --output forecast.csv`` forecasts the
``horizon`` steps after the end of each series.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from torch import Tensor
from torch.nn import functional

from rnnkit.data.files import DataFileError
from rnnkit.data.files.series_csv import SeriesFile, load_series
from rnnkit.models.forecaster import Forecaster, ForecasterConfig
from rnnkit.train import forecast_metrics
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.task import FitResult
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tasks.file_tasks import write_table
from rnnkit.train.tasks.forecast_data import (
    ForecastDataConfig,
    Holdout,
    PreparedSeries,
    data_checksum,
    draw_windows,
    forecast,
    future_timestamps,
    holdout,
    prepare,
    resolve_season,
    training_windows,
)
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

NAME = "forecast"


def default_trainer() -> TrainerConfig:
    """2,000 steps of 32 windows or 5 minutes, on one thread (small models gain nothing from
    more), evaluated every 20 seconds."""
    return TrainerConfig(
        max_steps=2000, time_budget_seconds=300, eval_interval_seconds=20, threads=1
    )


@dataclass
class ForecastConfig:
    """Forecasting the series of a file: every setting of a run."""

    data: ForecastDataConfig = field(default_factory=ForecastDataConfig)
    model: ForecasterConfig = field(default_factory=ForecasterConfig)
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(learning_rate=3e-3, weight_decay=0.01)
    )
    trainer: TrainerConfig = field(default_factory=default_trainer)
    seed: int = 0


class ForecastTask(supervised.NoCarriedTensors):
    """The ``TrainingTask``: mean squared error of the scaled forecasts, per value."""

    unit = "value"
    loss_unit = "(scaled MSE)"
    splits_batch_by_rank = True  # under torchrun each rank trains its rows (train_loss)

    def __init__(self, config: ForecastConfig, metadata: dict[str, Any] | None = None) -> None:
        self.config, self.data = config, config.data
        data = config.data
        if data.path is None:
            raise ValueError("forecast needs a series file: rnnkit train forecast --data FILE")
        context, horizon = data.context, data.horizon
        self.file = load_series(
            data.path,
            data.format(),
            context + 3 * horizon,
            f"context {context} + 3 x horizon {horizon} (training windows, then a validation "
            "and a test window)",
        )
        if metadata is not None and metadata.get("data_checksum") != data_checksum(self.file):
            raise DataFileError(data.path, "the series differ from those the run was trained on")
        self.prepared = [
            prepare(series, len(series.values) - 2 * horizon, data.scaling)
            for series in self.file.series
        ]
        self.windows = training_windows(self.prepared, context, horizon)
        self.season, self.season_source = resolve_season(data.season, self.file.series, context)
        self.model = Forecaster(config.model, 1 + len(self.file.covariate_names), horizon)

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        generator = supervised.batch_generator(self.config.seed, step)
        inputs, targets = draw_windows(
            self.prepared,
            self.windows,
            self.config.trainer.batch_size,
            self.data.context,
            self.data.horizon,
            generator,
        )
        # this rank's rows of the whole batch
        inputs, targets = supervised.rank_rows((inputs, targets), self.config.trainer.batch_size)
        predictions = self.model.teacher_forced(inputs, targets)
        return functional.mse_loss(predictions, targets), targets.numel()

    def holdout(self, split: str) -> Holdout:
        """``"validation"`` or ``"test"``: each series' window of that split."""
        back = 2 * self.data.horizon if split == "validation" else self.data.horizon
        return holdout(self.model, self.prepared, back, self.data.context)

    def evaluate(self) -> dict[str, float]:
        window = self.holdout("validation")
        results = window.results(self.season)
        metrics = forecast_metrics.flat_metrics(results)
        return {
            "loss": window.loss,
            **{key: metrics[key] for key in metrics if "series" not in key},
        }

    def metadata(self) -> dict[str, Any]:
        return {"series": len(self.prepared), "data_checksum": data_checksum(self.file)}

    def describe(self) -> str:
        data, model = self.data, self.config.model
        covariates = ", ".join(self.file.covariate_names) or "none"
        return (
            f"data: {self.file.report.summary()}; {len(self.windows)} training windows of "
            f"context {data.context} + horizon {data.horizon}; covariates: {covariates}; "
            f"scaling {data.scaling}; season {self.season} ({self.season_source})\n"
            f"model: {model.recurrent.num_layers} x "
            f"{model.recurrent.cell} (hidden {model.recurrent.hidden_size}), {model.decoding} "
            f"decoding, instance norm {'on' if model.instance_norm else 'off'}, "
            f"{self.model.parameter_count():,} parameters\n"
            + self.model.recurrent.describe_strategy()
        )


def build(config: ForecastConfig, metadata: dict[str, Any] | None) -> ForecastTask:
    return ForecastTask(config, metadata)


def write_results(stream: TextIO, title: str, window: Holdout, season: int) -> dict[str, float]:
    """The metrics table of ``window`` (model and baselines); the flat metrics with ``loss``."""
    results = window.results(season)
    stream.write(
        f"{title}: {len(window.names)} series x {window.truths.shape[1]} steps "
        f"(season {season}; MASE over {int(results['model']['mase_series'])} series)\n"
    )
    stream.write(forecast_metrics.format_table(results))
    return {"loss": window.loss, **forecast_metrics.flat_metrics(results)}


def plot(run_dir: Path, window: Holdout, config: ForecastDataConfig, season: int) -> None:
    count = min(config.plot_series, len(window.names))
    if count == 0:
        return
    baselines = forecast_metrics.baselines(window.histories[:count], config.horizon, season)
    forecast_metrics.plot_forecasts(
        run_dir / forecast_metrics.PLOT_FILE,
        window.names[:count],
        window.histories[:count],
        window.truths[:count],
        {"model": window.forecasts[:count], "seasonal_naive": baselines["seasonal_naive"]},
        config.context + 3 * config.horizon,
    )


def report(task: ForecastTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
    """Final validation loss, the test table beside the baselines, forecasts.png."""
    task.model.eval()
    if result.evaluation:
        stream.write(
            f"final validation after {result.step} steps ({result.train_seconds:.0f} s of "
            f"training): loss {result.evaluation['loss']:.4f} (scaled MSE), MASE "
            f"{result.evaluation['mase']:.4f}\n"
        )
    window = task.holdout("test")
    write_results(
        stream, "test windows (the last horizon steps of each series)", window, task.season
    )
    plot(run_dir, window, task.data, task.season)


@restoring_threads
def evaluate_run(run_dir: Path, stream: TextIO) -> dict[str, float]:
    config, task, step = supervised.load_run(run_dir, NAME, ForecastConfig, build)
    title = f"test windows of {config.data.path} (model at step {step})"
    return write_results(stream, title, task.holdout("test"), task.season)


@dataclass
class _TrainedModel:
    """What ``supervised.load_run`` needs for a file the run never saw: the model alone."""

    model: Forecaster


def _model_only(config: ForecastConfig, metadata: dict[str, Any] | None) -> _TrainedModel:
    inputs = 1 + len(config.data.covariate_names())
    return _TrainedModel(Forecaster(config.model, inputs, config.data.horizon))


def _load_file(
    config: ForecastDataConfig, path: Path, minimum: int, needed_for: str, fit_back: int
) -> tuple[SeriesFile, list[PreparedSeries]]:
    """The series of ``path`` read as the run read its own, each scaled on its steps before
    ``len - fit_back``."""
    series_file = load_series(path, config.format(), minimum, needed_for)
    prepared = [
        prepare(series, len(series.values) - fit_back, config.scaling)
        for series in series_file.series
    ]
    return series_file, prepared


@restoring_threads
def evaluate_file(run_dir: Path, data_path: Path, stream: TextIO) -> dict[str, float]:
    """The last ``horizon`` steps of each series of ``data_path``, forecast from the steps
    before them (scaled on those steps), beside the baselines."""
    config, trained, step = supervised.load_run(run_dir, NAME, ForecastConfig, _model_only)
    data = config.data
    series_file, prepared = _load_file(
        data,
        data_path,
        data.context + data.horizon,
        f"context {data.context} + horizon {data.horizon}",
        data.horizon,
    )
    stream.write(series_file.report.summary() + "\n")
    window = holdout(trained.model, prepared, data.horizon, data.context)
    title = f"last {data.horizon} steps of each series of {data_path} (model at step {step})"
    season, _ = resolve_season(data.season, series_file.series, data.context)
    return write_results(stream, title, window, season)


@restoring_threads
def predict_file(run_dir: Path, data_path: Path, output_path: Path, stream: TextIO) -> int:
    """Forecast the ``horizon`` steps after the end of each series of ``data_path``: rows of
    series, step ahead (1 to horizon), timestamp (when the file's are regular) and forecast."""
    config, trained, _ = supervised.load_run(run_dir, NAME, ForecastConfig, _model_only)
    data = config.data
    series_file, prepared = _load_file(data, data_path, data.context, f"context {data.context}", 0)
    stream.write(series_file.report.summary() + "\n")
    scaled = forecast(trained.model, prepared, 0, data.context)
    rows = []
    for item, row in zip(prepared, scaled, strict=True):
        times = future_timestamps(item.series.timestamps, data.horizon)
        for ahead, (time, value) in enumerate(zip(times, item.unscale(row), strict=True)):
            rows.append([item.series.name, ahead + 1, time, repr(float(value))])
    return write_table(output_path, ["series", "step_ahead", "timestamp", "forecast"], rows)


def next_steps(run_dir: Path) -> str:
    return (
        f"test metrics (JSON with --json), or on another file of series:\n"
        f"  rnnkit eval {run_dir} [--data FILE]\n"
        f"forecast the steps after the end of each series of a file:\n"
        f"  rnnkit predict {run_dir} --data FILE --output forecast.csv\n"
    )


DEFINITIONS = [
    TaskDefinition(
        name=NAME,
        description="recurrent forecaster of the series of a CSV file, beside naive baselines",
        config_type=ForecastConfig,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
        shortcuts={"data": "data.path"},
        evaluate_file=evaluate_file,
        predict_file=predict_file,
    )
]
