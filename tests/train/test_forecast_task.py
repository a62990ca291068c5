"""``rnnkit train forecast``: metrics, holdout and scaling, the model's decodings, and the
command line end to end (train, resume, eval, eval --data, predict)."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch

from rnnkit import cli
from rnnkit.data.files.series_csv import Series
from rnnkit.models.forecaster import Forecaster, ForecasterConfig
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.train import forecast_metrics
from rnnkit.train.metrics import read_metrics
from rnnkit.train.tasks.forecast_data import (
    draw_windows,
    prepare,
    resolve_season,
    seasonal_period,
    training_windows,
)
from rnnkit.train.trainer import Trainer

CONTEXT, HORIZON, LENGTH = 6, 3, 24
TINY = [
    f"--data.context={CONTEXT}",
    f"--data.horizon={HORIZON}",
    "--data.season=4",
    "--data.covariates=price",
    "--data.plot_series=2",
    "--model.recurrent.hidden_size=4",
    "--trainer.batch_size=4",
]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The task trains on one thread (``trainer.threads``); later tests get torch's back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write_long(path, length=LENGTH, names=("a", "b")):
    """Seasonal series (period 4) with a trend and a price covariate, monthly timestamps."""
    lines = ["series,time,value,price"]
    for offset, name in enumerate(names):
        for step in range(length):
            value = 10 * (offset + 1) + step + 3 * math.sin(math.pi * step / 2)
            month = f"{2000 + step // 12}-{step % 12 + 1:02d}"
            lines.append(f"{name},{month},{value:.6f},{1 + step % 3}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_metrics_against_a_plain_reference():
    histories = [torch.tensor([1.0, 3.0, 2.0, 6.0]), torch.tensor([5.0, 5.0, 5.0])]
    truths = torch.tensor([[4.0, 0.0], [5.0, 7.0]])
    forecasts = torch.tensor([[2.0, 0.0], [6.0, 7.0]])
    errors = [[2.0, 0.0], [1.0, 0.0]]
    scores = forecast_metrics.score(histories, truths, forecasts, season=2)
    assert scores["mae"] == pytest.approx(3.0 / 4)
    assert scores["rmse"] == pytest.approx(math.sqrt(5.0 / 4))
    smape = [200 * 2 / 6, 0.0, 200 * 1 / 11, 0.0]  # 0/0 counts as 0
    assert scores["smape"] == pytest.approx(sum(smape) / 4)
    scale = (abs(2.0 - 1.0) + abs(6.0 - 3.0)) / 2  # series b's seasonal differences are all 0
    assert scores["mase"] == pytest.approx(sum(errors[0]) / 2 / scale)
    assert scores["mase_series"] == 1.0


def test_seasonal_naive_and_last_value_baselines():
    history = torch.arange(1.0, 8.0)  # 1..7
    assert forecast_metrics.seasonal_naive(history, 5, 3).tolist() == [5, 6, 7, 5, 6]
    assert forecast_metrics.seasonal_naive(history, 2, 1).tolist() == [7, 7]
    assert forecast_metrics.last_value(history, 3).tolist() == [7, 7, 7]


def test_scaling_is_fitted_on_the_training_part_and_windows_stay_inside_it():
    values = torch.arange(20.0, dtype=torch.float64) ** 2
    covariates = torch.arange(40.0, dtype=torch.float64).reshape(20, 2)
    series = Series("s", values, covariates, None)
    training = 20 - 2 * HORIZON
    prepared = prepare(series, training, "standard")
    assert prepared.shift == pytest.approx(float(values[:training].mean()))
    assert prepared.scale == pytest.approx(float(values[:training].std(correction=0)))
    changed = values.clone()
    changed[training:] = 1e6  # the validation and test windows do not move the scaling
    again = prepare(Series("s", changed, covariates, None), training, "standard")
    assert (again.shift, again.scale) == (prepared.shift, prepared.scale)
    restored = prepared.unscale(prepared.inputs[:, 0])  # inputs are float32
    assert restored.tolist() == pytest.approx(values.tolist(), abs=1e-4)
    absolute = prepare(series, training, "mean_absolute")
    assert absolute.shift == 0 and absolute.scale == pytest.approx(float(values[:training].mean()))
    windows = training_windows([prepared], CONTEXT, HORIZON)
    assert [start for _, start in windows] == list(range(training - CONTEXT - HORIZON + 1))
    generator = torch.Generator().manual_seed(3)
    inputs, targets = draw_windows([prepared], windows, 50, CONTEXT, HORIZON, generator)
    assert inputs.shape == (50, CONTEXT, 3) and targets.shape == (50, HORIZON)
    scaled = prepared.inputs[:, 0]
    for window, target in zip(inputs, targets, strict=True):
        start = int(torch.nonzero(scaled == window[0, 0])[0])
        assert torch.equal(target, scaled[start + CONTEXT : start + CONTEXT + HORIZON])
        assert start + CONTEXT + HORIZON <= training


@pytest.mark.parametrize("decoding", ["direct", "autoregressive"])
def test_forecaster_decodings_against_a_step_by_step_reference(decoding):
    torch.manual_seed(0)
    config = ForecasterConfig(RecurrentConfig(cell="gru", hidden_size=5), decoding)
    model = Forecaster(config, input_size=2, horizon=4).double()
    context = torch.randn(3, 7, 2, dtype=torch.float64)
    forecasts = model(context)
    # reference: standardize the context by hand, run the cell one step at a time
    shift = context[..., 0].mean(1, keepdim=True)
    scale = context[..., 0].std(1, correction=0, keepdim=True)
    inputs = torch.cat([((context[..., 0] - shift) / scale)[..., None], context[..., 1:]], -1)
    state = None
    for step in range(7):
        output, state = model.recurrent.step(inputs[:, step], state)
    if decoding == "direct":
        expected = model.head(output)
    else:
        values = [model.head(output)]
        for _ in range(3):
            output, state = model.recurrent.step(
                torch.cat([values[-1], inputs[:, -1, 1:]], 1), state
            )
            values.append(model.head(output))
        expected = torch.cat(values, 1)
    torch.testing.assert_close(forecasts, expected * scale + shift)
    # teacher forcing with the model's own forecasts is the free-running forecast
    torch.testing.assert_close(model.teacher_forced(context, forecasts.detach()), forecasts)
    # instance norm: the forecasts move and stretch with the context's values
    moved = context.clone()
    moved[..., 0] = 3 * context[..., 0] + 100
    torch.testing.assert_close(model(moved), 3 * forecasts + 100)


def test_autoregressive_needs_a_unidirectional_stack():
    with pytest.raises(ValueError, match="unidirectional"):
        ForecasterConfig(RecurrentConfig(bidirectional=True), "autoregressive")


def read_rows(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_train_eval_and_predict_through_the_command_line(tmp_path, capsys):
    data, run = write_long(tmp_path / "sales.csv"), tmp_path / "run"
    command = ["train", "forecast", "--data", str(data), "--steps", "3", "--run-dir", str(run)]
    assert cli.main([*command, *TINY, "--model.decoding=autoregressive"]) == 0
    output = capsys.readouterr().out
    assert "sales.csv: 2 read" in output and "covariates: price" in output
    assert "test windows" in output and "seasonal-naive" in output and "last-value" in output
    assert (run / "forecasts.png").stat().st_size > 0 and (run / "loss.png").exists()
    validation = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "validation"]
    assert validation[-1]["step"] == 3 and {"mase", "seasonal_naive_mase"} <= set(validation[-1])
    assert cli.main(["eval", str(run), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["task"], document["step"]) == ("forecast", 3)
    metrics = document["metrics"]
    expected = {"mae", "rmse", "smape", "mase", "seasonal_naive_mae", "last_value_smape"}
    assert expected <= set(metrics)
    # eval --data scores the last horizon steps of each series of the file
    assert cli.main(["eval", str(run), "--data", str(data), "--json"]) == 0
    on_file = json.loads(capsys.readouterr().out)["metrics"]
    # predict on the file without its last horizon steps: the forecasts eval --data scored
    truncated = write_long(tmp_path / "truncated.csv", LENGTH - HORIZON)
    output_path = tmp_path / "forecast.csv"
    predict = ["predict", str(run), "--data", str(truncated), "--output", str(output_path)]
    assert cli.main(predict) == 0
    assert "wrote 6 predictions" in capsys.readouterr().out
    rows = read_rows(output_path)
    assert [(row["series"], row["step_ahead"]) for row in rows] == [
        (name, str(step)) for name in "ab" for step in range(1, HORIZON + 1)
    ]
    assert [row["timestamp"] for row in rows[:3]] == ["2001-10", "2001-11", "2001-12"]
    truths = {(row["series"], row["time"]): float(row["value"]) for row in read_rows(data)}
    errors = [abs(float(row["forecast"]) - truths[row["series"], row["timestamp"]]) for row in rows]
    assert sum(errors) / len(errors) == pytest.approx(on_file["mae"], rel=1e-6)


def test_resuming_after_a_crash_reproduces_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    data = write_long(tmp_path / "sales.csv")
    command = ["train", "forecast", "--data", str(data), "--steps", "4", *TINY]
    command += ["--trainer.eval_interval=2", "--trainer.log_interval=1"]
    command += ["--model.recurrent.dropout=0.3", "--model.recurrent.num_layers=2"]
    assert cli.main([*command, "--run-dir", str(tmp_path / "whole")]) == 0
    original = Trainer.train_step

    def crash_at_three(self):
        original(self)
        if self.step == 3:
            raise MemoryError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", crash_at_three)
        with pytest.raises(MemoryError):
            cli.main([*command, "--run-dir", str(tmp_path / "crashed")])
    assert cli.main(["train", "forecast", "--resume", str(tmp_path / "crashed")]) == 0
    capsys.readouterr()

    def losses(run):
        records = read_metrics(run / "metrics.jsonl")
        return [(record["kind"], record["step"], record["loss"]) for record in records]

    assert losses(tmp_path / "crashed") == losses(tmp_path / "whole")


def test_short_series_refused_by_name_or_skipped_and_counted(tmp_path, capsys):
    data = tmp_path / "mixed.csv"
    write_long(data)
    short = write_long(tmp_path / "short.csv", 10, names=("tiny",))
    data.write_text(data.read_text() + short.read_text().split("\n", 1)[1])
    command = ["train", "forecast", "--data", str(data), "--steps", "1", *TINY]
    assert cli.main([*command, "--run-dir", str(tmp_path / "refused")]) == 1
    error = capsys.readouterr().err
    assert "series 'tiny' has 10 steps, fewer than the 15 needed" in error
    assert not (tmp_path / "refused").exists()
    assert cli.main([*command, "--data.short_series=skip", "--run-dir", str(tmp_path / "ok")]) == 0
    assert "2 read; skipped 1 (series shorter than 15 steps)" in capsys.readouterr().out


def test_files_that_do_not_match_the_run_are_refused(tmp_path, capsys):
    data, run = write_long(tmp_path / "sales.csv"), tmp_path / "run"
    command = ["train", "forecast", "--data", str(data), "--steps", "1", "--run-dir", str(run)]
    assert cli.main([*command, *TINY]) == 0
    wide = tmp_path / "wide.csv"
    wide.write_text("month,a\n" + "".join(f"{step},{step}\n" for step in range(12)))
    predict = ["predict", str(run), "--data", str(wide), "--output", str(tmp_path / "f.csv")]
    assert cli.main(predict) == 1
    assert "no column 'price' (--data.covariates)" in capsys.readouterr().err
    write_long(data, names=("a", "c"))  # the run's own file, changed after training
    assert cli.main(["eval", str(run)]) == 1
    assert "the series differ from those the run was trained on" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("timestamps", "season"),
    [
        (["1959-11", "1959-12"], 12),
        (["1959-10", "1960-01"], 4),
        (["2020-01-31", "2020-02-29"], 1),  # not the same day of the month: 29 days, no season
        (["2020-01-15", "2020-02-15"], 12),
        (["2020-03-01", "2020-03-08"], 52),
        (["2020-03-01", "2020-03-02"], 7),
        (["2020-03-01T10:00", "2020-03-01T11:00"], 24),
        (["2020-03-01T10:00", "2020-03-01T10:15"], 1),
        (["1", "2"], 1),
        (["a", "b"], 1),
        (None, 1),
    ],
)
def test_the_season_follows_the_step_of_the_timestamps(timestamps, season):
    assert seasonal_period(timestamps) == season


def test_a_set_season_wins_and_an_inferred_one_must_fit_the_context():
    monthly = Series("a", torch.zeros(3), torch.zeros(3, 0), ["2000-01", "2000-02", "2000-03"])
    assert resolve_season(3, [monthly], 32) == (3, "data.season")
    assert resolve_season(0, [monthly], 32) == (12, "the timestamps")
    season, why = resolve_season(0, [monthly], 6)
    assert season == 1 and "longer than context 6" in why
