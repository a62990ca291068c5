"""Point-forecast metrics, the naive baselines beside them, and the forecast plot.

For series ``i`` with history ``y_1..y_n`` (every step before the forecast origin), truth
``y_{n+1..n+H}`` and forecast ``f_{n+1..n+H}``, with season length ``m``:

    MAE   = mean_{i,k} |y - f|,        RMSE = sqrt(mean_{i,k} (y - f)^2)
    sMAPE = mean_{i,k} 200 |y - f| / (|y| + |f|)            (percent; 0 where both are 0)
    MASE  = mean_i [ mean_k |y - f| / (1/(n-m) sum_{t>m} |y_t - y_{t-m}|) ]

as in the M4 competition (Makridakis et al. 2020, https://doi.org/10.1016/j.ijforecast.2019.04.014;
MASE from Hyndman and Koehler 2006, https://doi.org/10.1016/j.ijforecast.2006.03.001). A series
whose in-sample seasonal differences are all zero has no MASE scale; it is left out of MASE's
mean (``mase_series`` counts the series in it). Baselines on the same windows: seasonal naive,
``f_{n+k} = y_{n+k-m*ceil(k/m)}`` (the value one season earlier), and last value,
``f_{n+k} = y_n`` (the same as seasonal naive when ``m = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

METRICS = ("mae", "rmse", "smape", "mase")
PLOT_FILE = "forecasts.png"


def seasonal_naive(history: Tensor, horizon: int, season: int) -> Tensor:
    """``(H,)``: each step's value one season (``season`` steps) before it, from ``history``."""
    last_season = history[-season:]
    return last_season[torch.arange(horizon) % season]


def last_value(history: Tensor, horizon: int) -> Tensor:
    return history[-1:].expand(horizon).clone()


def mase_scale(history: Tensor, season: int) -> float:
    """Mean absolute seasonal difference of ``history`` (NaN when it has none or it is 0)."""
    if len(history) <= season:
        return math.nan
    scale = float((history[season:] - history[:-season]).abs().mean())
    return scale if scale > 0 else math.nan


def score(
    histories: Sequence[Tensor], truths: Tensor, forecasts: Tensor, season: int
) -> dict[str, float]:
    """MAE, RMSE, sMAPE (percent), MASE and ``mase_series`` of ``forecasts (S, H)``."""
    truths, forecasts = truths.double(), forecasts.double()
    errors = (truths - forecasts).abs()  # (S, H)
    denominators = truths.abs() + forecasts.abs()
    ratios = torch.where(denominators > 0, 200 * errors / denominators, torch.zeros_like(errors))
    scales = torch.tensor([mase_scale(history.double(), season) for history in histories])
    per_series = errors.mean(1) / scales
    usable = ~per_series.isnan()
    return {
        "mae": float(errors.mean()),
        "rmse": float(errors.square().mean().sqrt()),
        "smape": float(ratios.mean()),
        "mase": float(per_series[usable].mean()) if bool(usable.any()) else math.nan,
        "mase_series": float(usable.sum()),
    }


def baselines(histories: Sequence[Tensor], horizon: int, season: int) -> dict[str, Tensor]:
    """``{"seasonal_naive": (S, H), "last_value": (S, H)}`` from each history."""
    return {
        "seasonal_naive": torch.stack([seasonal_naive(h, horizon, season) for h in histories]),
        "last_value": torch.stack([last_value(h, horizon) for h in histories]),
    }


def score_against_baselines(
    histories: Sequence[Tensor], truths: Tensor, forecasts: Tensor, season: int
) -> dict[str, dict[str, float]]:
    """Scores of ``"model"`` and of each baseline, on the same windows."""
    results = {"model": score(histories, truths, forecasts, season)}
    for name, baseline in baselines(histories, truths.shape[1], season).items():
        results[name] = score(histories, truths, baseline, season)
    return results


def flat_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """``mae``, ..., ``seasonal_naive_mae``, ...: the model's names bare, baselines prefixed."""
    flat = {}
    for source, metrics in results.items():
        prefix = "" if source == "model" else f"{source}_"
        flat.update({f"{prefix}{name}": value for name, value in metrics.items()})
    return flat


def format_table(results: dict[str, dict[str, float]]) -> str:
    """One line per forecaster: MAE, RMSE, sMAPE, MASE."""
    lines = [f"  {'':<16}{'MAE':>12}{'RMSE':>12}{'sMAPE %':>10}{'MASE':>9}"]
    for source, metrics in results.items():
        lines.append(
            f"  {source.replace('_', '-'):<16}{metrics['mae']:>12.4g}{metrics['rmse']:>12.4g}"
            f"{metrics['smape']:>10.3f}{metrics['mase']:>9.4f}"
        )
    return "\n".join(lines) + "\n"


def plot_forecasts(
    path: Path,
    names: Sequence[str],
    histories: Sequence[Tensor],
    truths: Tensor,
    forecasts: dict[str, Tensor],
    history_steps: int,
) -> None:
    """One panel per series: the last ``history_steps`` of its history, the truth and every
    forecast of ``forecasts`` (name -> ``(S, H)``) over the horizon."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    count = len(names)
    figure, axes_list = pyplot.subplots(count, 1, figsize=(9, 2.6 * count), squeeze=False)
    for row, axes in enumerate(axes_list[:, 0]):
        history = histories[row][-history_steps:].double()
        start = len(histories[row]) - len(history)
        future = range(len(histories[row]), len(histories[row]) + truths.shape[1])
        axes.plot(
            range(start, start + len(history)), history.numpy(), color="black", label="history"
        )
        axes.plot(future, truths[row].double().numpy(), "o-", color="black", ms=3, label="truth")
        for name, forecast in forecasts.items():
            axes.plot(future, forecast[row].double().numpy(), ".-", label=name.replace("_", "-"))
        axes.set_title(f"series {names[row]}", fontsize=10)
        axes.grid(alpha=0.3)
    axes_list[0, 0].legend(fontsize=8, ncol=4)
    axes_list[-1, 0].set_xlabel("step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
