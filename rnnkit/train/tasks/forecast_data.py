"""The data of ``rnnkit train forecast``: its options, the holdout, scaling, windows, timestamps.

Holdout (rolling origin, one fold per set): with horizon ``H``, the last ``H`` steps of every
series are its test window and the ``H`` before them its validation window. The training part
is the rest: training windows of ``context + H`` steps lie wholly inside it, so a series needs
``context + 3 H`` steps. The validation forecast reads the ``context`` steps before the
validation window, the test forecast those before the test window (the validation steps among
them: the origin rolls forward, as in Tashman 2000, "Out-of-sample tests of forecasting
accuracy", https://doi.org/10.1016/S0169-2070(00)00065-0).

Scaling, per series, fitted on its training part only (or, for ``eval --data`` and ``predict``
on a new file, on all the steps before the forecast origin): ``"standard"`` subtracts the mean
and divides by the standard deviation, ``"mean_absolute"`` divides by the mean absolute value
(Salinas et al. 2020, DeepAR), ``"none"`` leaves the values. Covariates are standardized per
series and column in the same way.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data.files.series_csv import (
    LAYOUTS,
    MISSING_POLICIES,
    SHORT_SERIES_POLICIES,
    Series,
    SeriesFile,
    SeriesFormat,
)
from rnnkit.models.forecaster import Forecaster
from rnnkit.train import forecast_metrics, ranges

SCALINGS = ("standard", "mean_absolute", "none")
MONTH = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass
class ForecastDataConfig:
    """The series file, how to read it, and what to forecast."""

    path: str | None = None
    """The CSV or TSV file of series (``--data FILE``), wide or long (``series_csv``)."""
    layout: str = "auto"
    """``"wide"`` (a column per series), ``"long"`` (series, time, value rows) or ``"auto"``."""
    time_column: str = ""
    """The timestamp column (long: default ``"time"``; wide: default the first column when its
    header is a time word such as ``date``; ``"none"`` for none)."""
    series_column: str = "series"
    """Long layout: the column of series names."""
    value_column: str = "value"
    """Long layout: the column of values."""
    covariates: str = ""
    """Comma-separated covariate columns, read beside the values as extra inputs."""
    missing: str = "error"
    """Missing values: ``"error"``, ``"interpolate"`` or ``"skip"`` (the series)."""
    short_series: str = "error"
    """A series too short for the windows: ``"error"`` or ``"skip"`` (counted)."""
    context: int = 32
    """Steps the model reads before it forecasts."""
    horizon: int = 8
    """Steps forecast at once; also the size of the validation and test windows."""
    season: int = 0
    """Season length m of the seasonal-naive baseline and of MASE's scale; 0 (the default)
    reads it from the timestamps' step (``seasonal_period``: months 12, quarters 4, weeks 52,
    days 7, hours 24; 1, no season, without timestamps or with another step); 1: none."""
    scaling: str = "standard"
    """Per-series scaling: ``"standard"``, ``"mean_absolute"`` or ``"none"``."""
    plot_series: int = 4
    """Series drawn in forecasts.png."""

    def __post_init__(self) -> None:
        ranges.choice("layout", self.layout, LAYOUTS)
        ranges.choice("missing", self.missing, MISSING_POLICIES)
        ranges.choice("short_series", self.short_series, SHORT_SERIES_POLICIES)
        ranges.choice("scaling", self.scaling, SCALINGS)
        for name in ("context", "horizon"):
            ranges.at_least(name, getattr(self, name), 1)
        ranges.at_least("season", self.season, 0)
        ranges.at_least("plot_series", self.plot_series, 0)
        if self.season > self.context:
            raise ValueError(f"season ({self.season}) must not exceed context ({self.context})")

    def covariate_names(self) -> tuple[str, ...]:
        return tuple(name.strip() for name in self.covariates.split(",") if name.strip())

    def format(self) -> SeriesFormat:
        return SeriesFormat(
            self.layout,
            self.time_column,
            self.series_column,
            self.value_column,
            self.covariate_names(),
            self.missing,
            self.short_series,
        )


@dataclass
class PreparedSeries:
    """A series with its model inputs ``(T, 1 + C)`` float32, scaled by ``shift`` and ``scale``."""

    series: Series
    inputs: Tensor
    shift: float
    scale: float

    def unscale(self, scaled: Tensor) -> Tensor:
        return scaled.double() * self.scale + self.shift


def _statistics(values: Tensor, method: str) -> tuple[Tensor, Tensor]:
    """``(shift, scale)`` over the first dimension of ``values (T, K)``; a zero scale is 1."""
    zeros, ones = torch.zeros(values.shape[1:]), torch.ones(values.shape[1:])
    if method == "none" or values.numel() == 0:
        return zeros.double(), ones.double()
    if method == "mean_absolute":
        shift, scale = zeros.double(), values.abs().mean(0)
    else:
        shift, scale = values.mean(0), values.std(0, correction=0)
    return shift, torch.where(scale > 0, scale, torch.ones_like(scale))


def prepare(series: Series, fit_steps: int, scaling: str) -> PreparedSeries:
    """Scale ``series`` by statistics of its first ``fit_steps`` steps."""
    shift, scale = _statistics(series.values[:fit_steps, None], scaling)
    values = (series.values - shift) / scale
    covariate_shift, covariate_scale = _statistics(
        series.covariates[:fit_steps], "none" if scaling == "none" else "standard"
    )
    covariates = (series.covariates - covariate_shift) / covariate_scale
    inputs = torch.cat([values[:, None], covariates], 1).float()
    return PreparedSeries(series, inputs, float(shift), float(scale))


def training_windows(
    prepared: list[PreparedSeries], context: int, horizon: int
) -> list[tuple[int, int]]:
    """Every ``(series index, start)`` whose ``context + horizon`` steps end before the
    validation window."""
    return [
        (index, start)
        for index, item in enumerate(prepared)
        for start in range(len(item.inputs) - 2 * horizon - context - horizon + 1)
    ]


def draw_windows(
    prepared: list[PreparedSeries],
    windows: list[tuple[int, int]],
    count: int,
    context: int,
    horizon: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """``count`` windows drawn uniformly: ``inputs (B, context, 1 + C)`` and scaled
    ``targets (B, horizon)``."""
    chosen = torch.randint(len(windows), (count,), generator=generator).tolist()
    inputs, targets = [], []
    for choice in chosen:
        index, start = windows[choice]
        series = prepared[index].inputs
        inputs.append(series[start : start + context])
        targets.append(series[start + context : start + context + horizon, 0])
    return torch.stack(inputs), torch.stack(targets)


def contexts_at(prepared: list[PreparedSeries], back: int, context: int) -> Tensor:
    """The ``context`` input steps before each series' origin ``len - back``:
    ``(S, context, 1 + C)``."""
    return torch.stack(
        [item.inputs[len(item.inputs) - back - context :][:context] for item in prepared]
    )


@dataclass
class Holdout:
    """Forecasts of one window per series: raw ``histories`` (every step before the origin),
    ``truths`` and ``forecasts`` ``(S, H)`` float64, and the scaled mean squared error."""

    names: list[str]
    histories: list[Tensor]
    truths: Tensor
    forecasts: Tensor
    loss: float

    def results(self, season: int) -> dict[str, dict[str, float]]:
        return forecast_metrics.score_against_baselines(
            self.histories, self.truths, self.forecasts, season
        )


def forecast(model: Forecaster, prepared: list[PreparedSeries], back: int, context: int) -> Tensor:
    """Scaled forecasts ``(S, H)`` from the ``context`` steps before ``len - back``."""
    with torch.no_grad():
        return model(contexts_at(prepared, back, context)).double()


def holdout(model: Forecaster, prepared: list[PreparedSeries], back: int, context: int) -> Holdout:
    """The window of ``horizon`` steps starting ``back`` steps before each series' end."""
    scaled = forecast(model, prepared, back, context)
    horizon = scaled.shape[1]
    ends = [len(item.inputs) - back for item in prepared]
    targets = torch.stack(
        [item.inputs[end : end + horizon, 0] for item, end in zip(prepared, ends, strict=True)]
    )
    return Holdout(
        [item.series.name for item in prepared],
        [item.series.values[:end] for item, end in zip(prepared, ends, strict=True)],
        torch.stack(
            [
                item.series.values[end : end + horizon]
                for item, end in zip(prepared, ends, strict=True)
            ]
        ),
        torch.stack([item.unscale(row) for item, row in zip(prepared, scaled, strict=True)]),
        float(functional.mse_loss(scaled, targets.double())),
    )


def data_checksum(series_file: SeriesFile) -> str:
    digest = hashlib.sha256()
    for series in series_file.series:
        digest.update(series.name.encode())
        digest.update(series.values.numpy().tobytes())
        digest.update(series.covariates.numpy().tobytes())
    return digest.hexdigest()[:16]


def future_timestamps(timestamps: list[str] | None, count: int) -> list[str]:
    """The ``count`` timestamps after ``timestamps`` when their step is regular: integers,
    ``YYYY-MM`` months, ISO dates or date-times (a constant number of months, or a constant
    time difference); empty strings otherwise."""
    if not timestamps or len(timestamps) < 2:
        return [""] * count
    last, before = timestamps[-1], timestamps[-2]
    try:
        step = int(last) - int(before)
        return [str(int(last) + step * (ahead + 1)) for ahead in range(count)]
    except ValueError:
        pass
    if MONTH.match(last) and MONTH.match(before):
        months = _months(last) - _months(before)
        return [_month_text(_months(last) + months * (ahead + 1)) for ahead in range(count)]
    try:
        end, previous = (
            datetime.datetime.fromisoformat(last),
            datetime.datetime.fromisoformat(before),
        )
    except ValueError:
        return [""] * count
    is_date = len(last) == 10
    months = _months(end.strftime("%Y-%m")) - _months(previous.strftime("%Y-%m"))
    if end.day == previous.day and months > 0 and (end - previous).days >= 28:
        starts = [_months(end.strftime("%Y-%m")) + months * (ahead + 1) for ahead in range(count)]
        try:
            moments = [end.replace(year=value // 12, month=value % 12 + 1) for value in starts]
        except ValueError:  # the 31st of a shorter month
            return [""] * count
    else:
        moments = [end + (end - previous) * (ahead + 1) for ahead in range(count)]
    return [moment.date().isoformat() if is_date else moment.isoformat() for moment in moments]


def _months(text: str) -> int:
    year, month = text.split("-")
    return int(year) * 12 + int(month) - 1


def _month_text(months: int) -> str:
    return f"{months // 12:04d}-{months % 12 + 1:02d}"


# The season of a step between timestamps: (months, season) and (seconds, season).
MONTHLY_SEASONS = {1: 12, 3: 4}
TIMED_SEASONS = {7 * 86400: 52, 86400: 7, 3600: 24}


def seasonal_period(timestamps: list[str] | None) -> int:
    """The season length that a step between ``timestamps`` implies: 12 for monthly
    (``YYYY-MM`` or dates a month apart), 4 for quarterly, 52 for weekly, 7 for daily and 24
    for hourly steps; 1 when there are no timestamps, they are integers, or the step is
    another one (the last two timestamps decide, as ``future_timestamps`` does)."""
    if not timestamps or len(timestamps) < 2:
        return 1
    last, before = timestamps[-1], timestamps[-2]
    if MONTH.match(last) and MONTH.match(before):
        return MONTHLY_SEASONS.get(_months(last) - _months(before), 1)
    try:
        end = datetime.datetime.fromisoformat(last)
        previous = datetime.datetime.fromisoformat(before)
    except ValueError:
        return 1
    months = _months(end.strftime("%Y-%m")) - _months(previous.strftime("%Y-%m"))
    if end.day == previous.day and months in MONTHLY_SEASONS and (end - previous).days >= 28:
        return MONTHLY_SEASONS[months]
    return TIMED_SEASONS.get(int((end - previous).total_seconds()), 1)


def resolve_season(config_season: int, series: list[Series], context: int) -> tuple[int, str]:
    """The season to score with and where it came from: ``config_season`` when set, else the
    timestamps' (``seasonal_period`` of the first series), kept only when it fits in
    ``context``."""
    if config_season:
        return config_season, "data.season"
    inferred = seasonal_period(series[0].timestamps if series else None)
    if inferred > context:
        return 1, f"the timestamps imply {inferred}, longer than context {context}"
    return inferred, "the timestamps" if inferred > 1 else "no seasonal timestamps"
