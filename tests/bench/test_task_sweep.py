"""``rnnkit bench tasks``: the plan of a sweep, its runs through the real command line (resumed,
kept when finished, refused when their settings changed) and its tables and plots."""

from __future__ import annotations

import csv
import json
import subprocess
import threading

import pytest

from rnnkit import cli
from rnnkit.bench import runner, sweep, task_plots, task_results
from rnnkit.train.config import ConfigError
from rnnkit.train.tasks.benchmark_task import LENGTH_PREFIX

TINY = [
    "--set=model.num_blocks=1",
    "--set=trainer.batch_size=4",
    "--set=evaluation.sequences=8",
    "--set=evaluation.batch_size=8",
    "--set=mqar:data.sequence_length=16",
    "--set=mqar:data.num_pairs=2",
]


def test_mixers_are_cells_or_attention_with_an_optional_strategy():
    assert sweep.parse_mixer("paragru:newton") == sweep.Mixer("paragru", "newton")
    assert sweep.parse_mixer("paragru:newton").label == "paragru-newton"
    assert sweep.parse_mixer("attention").label == "attention"
    with pytest.raises(
        ConfigError, match=r"--mixers: expected attention, titans_mag or a registered .*'lstmm'"
    ):
        sweep.parse_mixer("lstmm")
    with pytest.raises(ConfigError, match="attention takes no strategy"):
        sweep.parse_mixer("attention:scan")


def test_mixers_take_cell_options():
    mixer = sweep.parse_mixer("mingru:scan@allow_negative_eigenvalues=true,bias=false")
    assert mixer.options == (("allow_negative_eigenvalues", "true"), ("bias", "false"))
    assert mixer.label == "mingru-scan-allow_negative_eigenvalues=true-bias=false"
    assert ("model.recurrent.options.allow_negative_eigenvalues", "true") in mixer.overrides(8)
    with pytest.raises(ConfigError, match="cell 'mingru' takes no option 'num_layers'"):
        sweep.parse_mixer("mingru@num_layers=2")
    with pytest.raises(ConfigError, match="expected @KEY=VALUE"):
        sweep.parse_mixer("mingru@bias")
    with pytest.raises(ConfigError, match="attention takes no strategy or options"):
        sweep.parse_mixer("attention@num_heads=2")


def test_settings_go_to_every_task_or_to_one():
    settings = sweep.parse_settings(["data.x=3", "mqar:data.num_pairs=4", "icll:data.a=b=c"])
    assert settings == {
        None: [("data.x", "3")],
        "mqar": [("data.num_pairs", "4")],
        "icll": [("data.a", "b=c")],
    }
    with pytest.raises(ConfigError, match="unknown task 'mqr'"):
        sweep.parse_settings(["mqr:data.num_pairs=4"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE or TASK:KEY=VALUE, got 'seed'"):
        sweep.parse_settings(["seed"])
    with pytest.raises(ConfigError, match="seed is set by the sweep's --seeds"):
        sweep.parse_settings(["mqar:seed=3"])
    with pytest.raises(ConfigError, match="model.model_size is set by the sweep's --widths"):
        sweep.parse_settings(["model.model_size=3"])


def test_the_plan_has_a_run_per_combination_each_in_its_own_folder(tmp_path):
    mixers = [sweep.Mixer("lstm"), sweep.Mixer("paragru", "newton"), sweep.Mixer("attention")]
    runs = sweep.plan(["mqar", "copy"], mixers, [16, 32], ["adamw", "muon"], [0, 1], {})
    assert len(runs) == 2 * 3 * 2 * 2 * 2
    assert len({run.folder(tmp_path) for run in runs}) == len(runs)
    paragru = next(run for run in runs if run.mixer.name == "paragru")
    assert "--model.recurrent.strategy=newton" in paragru.arguments()
    attention = next(run for run in runs if run.mixer.name == "attention" and run.width == 32)
    assert "--model.num_heads=2" in attention.arguments()  # heads of 16 features


def test_a_bad_setting_is_refused_before_anything_trains():
    with pytest.raises(ConfigError, match="data.num_pair"):
        sweep.plan(
            ["mqar"],
            [sweep.Mixer("lstm")],
            [16],
            ["adamw"],
            [0],
            {"mqar": [("data.num_pair", "3")]},
        )
    with pytest.raises(ValueError, match="num_pairs"):
        sweep.plan(
            ["mqar"], [sweep.Mixer("lstm")], [16], ["adamw"], [0], {None: [("data.num_pairs", "0")]}
        )


def test_parameter_matching_picks_the_width_nearest_the_reference_count():
    base = [("model.num_blocks", "1")]
    lstm, mingru = sweep.Mixer("lstm"), sweep.Mixer("mingru")
    runs = sweep.plan(["mqar"], [lstm, mingru], [32], ["adamw"], [0], {None: base}, "parameters")
    assert runs[0].width == 32  # the reference (first mixer) keeps the width
    target = sweep.parameter_count("mqar", [*base, *lstm.overrides(32)])
    chosen = runs[1].width
    gaps = {
        width: abs(sweep.parameter_count("mqar", [*base, *mingru.overrides(width)]) - target)
        for width in (chosen - 8, chosen, chosen + 8)
    }
    assert chosen > 32  # minGRU has fewer parameters per width than the LSTM
    assert gaps[chosen] == min(gaps.values())


def bench(*arguments: str) -> int:
    return cli.main(["bench", "tasks", *arguments])


def test_a_sweep_trains_evaluates_keeps_finished_runs_and_writes_its_tables(tmp_path, capsys):
    out = tmp_path / "sweep"
    arguments = [
        "--tasks",
        "mqar",
        "--mixers",
        "lstm",
        "attention",
        "--widths",
        "8",
        "--steps",
        "2",
    ]
    assert bench(*arguments, *TINY, "--out", str(out)) == 0
    output = capsys.readouterr().out
    assert "2 runs: 0 finished earlier, 2 to train" in output
    results = [json.loads(path.read_text()) for path in sorted(out.glob("runs/mqar/*/result.json"))]
    assert [result["label"] for result in results] == ["attention", "lstm"]
    assert all(result["status"] == "finished" and result["step"] == 2 for result in results)
    with open(out / "results.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["label"] for row in rows] == ["lstm", "attention"]
    assert all(0.0 <= float(row["accuracy"]) <= 1.0 for row in rows)
    markdown = (out / "results.md").read_text()
    assert "| lstm |" in markdown and "## mqar" in markdown and "--steps 2" in markdown
    assert (out / task_plots.WIDTH_PLOT).stat().st_size > 0
    written = {path: path.stat().st_mtime_ns for path in out.glob("runs/mqar/*/result.json")}
    assert bench(*arguments, *TINY, "--out", str(out)) == 0
    assert "2 runs: 2 finished earlier, 0 to train" in capsys.readouterr().out
    assert {path: path.stat().st_mtime_ns for path in written} == written
    assert bench(*arguments, *TINY, "--set=trainer.batch_size=8", "--out", str(out)) == 2
    error = capsys.readouterr().err
    assert "was trained with other settings (trainer.batch_size: '4' -> '8')" in error
    assert "another --out" in error


def test_an_interrupted_run_is_resumed_from_its_checkpoint(tmp_path, capsys):
    out = tmp_path / "sweep"
    arguments = ["--tasks", "mqar", "--mixers", "gru", "--widths", "8", *TINY, "--out", str(out)]
    assert bench(*arguments, "--steps", "3", "--plan") == 0
    folder, options = capsys.readouterr().out.splitlines()[-1].split(maxsplit=1)
    # a run stopped after its first step: a checkpoint, no result
    assert cli.main(["train", "mqar", "--steps", "1", "--run-dir", folder, *options.split()]) == 0
    assert bench(*arguments, "--steps", "3") == 0
    result = json.loads((tmp_path / folder / "result.json").read_text())
    assert result["status"] == "finished" and result["step"] == 3
    assert "resuming mqar" in (tmp_path / folder / runner.LOG_FILE).read_text()


def test_sweep_options_are_checked(capsys):
    assert bench("--tasks", "mqar", "--mixers", "lstm") == 2
    assert "set --steps or --time-budget" in capsys.readouterr().err
    assert bench("--steps", "1", "--jobs", "0") == 2
    assert "--jobs: expected 1 or more, got 0" in capsys.readouterr().err
    assert bench("--steps", "1", "--mixers", "attention:newton") == 2
    assert "attention takes no strategy" in capsys.readouterr().err


def finished_run(task, label, width, seed, accuracy, lengths=None, optimizer="adamw"):
    metrics = {"loss": 1.0, "accuracy": accuracy, "parameter_count": 100.0 * width}
    metrics["state_size"] = 2.0 * width
    for length, value in (lengths or {}).items():
        metrics[f"{LENGTH_PREFIX}{length}"] = value
    return {
        "task": task,
        "label": label,
        "mixer": label,
        "strategy": "",
        "requested_width": width,
        "width": width,
        "optimizer": optimizer,
        "seed": seed,
        "status": "finished",
        "step": 10,
        "train_seconds": 1.5,
        "metrics": metrics,
    }


def test_tables_give_the_mean_and_spread_over_seeds_at_the_widest_width(tmp_path):
    results = [
        finished_run("mqar", "lstm", 16, 0, 0.1),
        finished_run("mqar", "lstm", 32, 0, 0.5),
        finished_run("mqar", "lstm", 32, 1, 0.7),
        finished_run("passkey", "lstm", 32, 0, 0.25, {64: 1.0, 128: 0.0}),
        {**finished_run("mqar", "gla", 32, 0, 0.0), "status": "failed", "error": "boom\nlast"},
    ]
    matrix = task_results.matrix_table(results)
    assert matrix[0] == "| mixer | mqar (w32) | passkey (w32) |"
    assert matrix[2] == "| lstm | 0.600 ± 0.141 | 0.250 |"
    task_results.write_markdown(results, tmp_path / "results.md", "rnnkit bench tasks ...")
    markdown = (tmp_path / "results.md").read_text()
    assert "| lstm | 16 | adamw | 1,600 | 32 | 1 | 10 | 2 | 0.100 |" in markdown
    assert "- mqar gla w32: last" in markdown
    results[2]["metrics"]["sequence_accuracy"] = 0.25  # one of the two seeds has the metric
    task_results.write_markdown(results, tmp_path / "results.md", "rnnkit bench tasks ...")
    assert "| 0.600 ± 0.141 | 0.250 (1 of 2 runs) |" in (tmp_path / "results.md").read_text()
    task_results.write_lengths_csv(results, tmp_path / "lengths.csv")
    with open(tmp_path / "lengths.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["length"], row["accuracy"]) for row in rows] == [("64", "1.0"), ("128", "0.0")]
    for plot in (task_plots.plot_width, task_plots.plot_length, task_plots.plot_state_size):
        path = plot(results, tmp_path)
        assert path is not None and path.stat().st_size > 0


def test_an_interrupted_sweep_says_how_to_resume(tmp_path, capsys, monkeypatch):
    def interrupted(*arguments, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_all", interrupted)
    arguments = ["--tasks", "mqar", "--mixers", "lstm", "--widths", "8", "--steps", "2"]
    assert bench(*arguments, "--out", str(tmp_path / "sweep")) == 130
    assert "run the same command again to resume" in capsys.readouterr().err


@pytest.mark.parametrize(("train_code", "eval_code"), [(130, 0), (0, 130), (0, -2), (143, 0)])
def test_a_run_stopped_by_a_signal_is_not_recorded(tmp_path, monkeypatch, train_code, eval_code):
    codes = iter([train_code, eval_code])

    def finished_process(command, **options):
        return subprocess.CompletedProcess(command, next(codes), stdout="", stderr="")

    monkeypatch.setattr(runner.subprocess, "run", finished_process)
    (run,) = sweep.plan(["mqar"], [sweep.Mixer("lstm")], [8], ["adamw"], [0], {})
    with pytest.raises(runner.SweepInterrupted, match="interrupted"):
        runner.execute(run, tmp_path, 2, None)
    assert not (run.folder(tmp_path) / sweep.RESULT_FILE).exists()  # resumed next time


def test_no_run_starts_once_the_sweep_is_stopping(tmp_path):
    (run,) = sweep.plan(["mqar"], [sweep.Mixer("lstm")], [8], ["adamw"], [0], {})
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(runner.SweepInterrupted, match="not started"):
        runner.execute(run, tmp_path, 2, None, stopping)
    assert not run.folder(tmp_path).exists()
