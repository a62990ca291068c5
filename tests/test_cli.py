"""The command line end to end on a small text: train, sample, eval, and the refused inputs."""

from __future__ import annotations

import json
import shutil
import sys
import types

import pytest

from rnnkit import cli
from rnnkit.data import bundled_path

TINY = [
    "--model.embedding_size=8",
    "--model.recurrent.hidden_size=16",
    "--trainer.batch_size=4",
    "--bptt.window=16",
    "--bptt.evaluation_streams=4",
    "--sample.length=40",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run trained for a few steps on 6000 characters of Tiny Shakespeare."""
    folder = tmp_path_factory.mktemp("cli")
    text = folder / "small.txt"
    text.write_text(bundled_path().read_text(encoding="utf-8")[:6000], encoding="utf-8")
    command = ["train", "charlm", "--data", str(text), "--steps", "6", "--runs-root"]
    assert cli.main(command + [str(folder / "runs")] + TINY) == 0
    (run,) = (folder / "runs").iterdir()
    return run, text


def test_train_writes_a_complete_run_folder(trained_run):
    run, _ = trained_run
    assert run.name.startswith("charlm-")
    names = {path.name for path in run.iterdir()}
    assert {"config.json", "checkpoint.json", "checkpoints", "metrics.jsonl", "loss.png"} <= names
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["recurrent"]["hidden_size"] == 16
    assert config["trainer"]["max_steps"] == 6
    assert config["trainer"]["time_budget_seconds"] is None
    document = json.loads((run / "checkpoint.json").read_text())
    assert document["step"] == 6 and document["task"] == "charlm"
    assert "\n" in document["metadata"]["vocabulary"]
    kinds = [json.loads(line)["kind"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert kinds[-1] == "validation"


def test_train_prints_progress_final_loss_and_a_sample(tmp_path, trained_run, capsys):
    _, text = trained_run
    command = ["train", "charlm", "--data", str(text), "--steps", "2", "--run-dir"]
    assert cli.main(command + [str(tmp_path / "run")] + TINY) == 0
    output = capsys.readouterr().out
    assert f"run folder {tmp_path / 'run'}" in output
    assert "step 1" in output and "char/s" in output and "ETA" in output
    assert "final validation loss" in output and "bits/char" in output
    assert "sample (temperature 0.8, top-k 40):" in output


def test_sample_with_a_seed_is_repeatable(trained_run, capsys):
    run, _ = trained_run
    samples = []
    for seed in ("1", "1", "2"):
        command = ["sample", str(run), "--prompt", "ROMEO:", "--length", "60", "--seed", seed]
        assert cli.main(command) == 0
        samples.append(capsys.readouterr().out)
    assert samples[0] == samples[1] != samples[2]
    assert samples[0].startswith("ROMEO:") and len(samples[0]) == len("ROMEO:") + 60 + 1


def test_sample_refuses_a_prompt_outside_the_vocabulary(trained_run, capsys):
    run, _ = trained_run
    assert cli.main(["sample", str(run), "--prompt", "ROMEO€"]) == 1
    assert "outside the model's vocabulary: '€'" in capsys.readouterr().err


def test_eval_prints_validation_loss(trained_run, capsys):
    run, text = trained_run
    assert cli.main(["eval", str(run), "--data", str(text)]) == 0
    output = capsys.readouterr().out
    assert output.startswith("validation loss ") and "bits/char" in output
    assert "model at step 6" in output


def test_eval_json_prints_one_object_with_the_task_and_its_metrics(trained_run, capsys):
    run, text = trained_run
    assert cli.main(["eval", str(run), "--data", str(text), "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert (document["task"], document["step"], document["run"]) == ("charlm", 6, str(run))
    assert {"loss", "bpc", "tokens"} <= set(document["metrics"])
    assert document["split"] == f"validation of {text}"
    assert captured.err.startswith("validation loss ")


def test_print_config_shows_overrides_and_does_not_train(tmp_path, capsys):
    command = [
        "train",
        "charlm",
        "--print-config",
        "--model.recurrent.cell=gru",
        "--model.recurrent.hidden_size",
        "48",
    ]
    assert cli.main(command + ["--time-budget", "90s", "--runs-root", str(tmp_path)]) == 0
    config = json.loads(capsys.readouterr().out)
    recurrent = config["model"]["recurrent"]
    assert recurrent["cell"] == "gru" and recurrent["hidden_size"] == 48
    assert config["trainer"]["time_budget_seconds"] == 90
    assert config["data"]["path"] is None
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model.hidden_sise=3"], "unknown config key 'model.hidden_sise'; did you mean "),
        (
            ["--model.recurrent.hidden_size=big"],
            "--model.recurrent.hidden_size expects an integer, got 'big'",
        ),
        (["--model.recurrent.cell=transformer"], "unknown cell 'transformer'"),
        (["--time-budget", "soon"], "cannot read the duration 'soon'"),
        (["--model.recurrent.hidden_size"], "--model.recurrent.hidden_size needs a value"),
        (["stray"], "unexpected argument 'stray'"),
    ],
)
def test_bad_settings_are_refused_with_their_message(tmp_path, arguments, message, capsys):
    command = ["train", "charlm", "--steps", "1", "--runs-root", str(tmp_path)]
    assert cli.main(command + arguments) == 1
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" * 20, "binary file"),
        ("na\u00efve caf\u00e9 ".encode("latin-1") * 20, "not UTF-8 text"),
        (b"To be, or not to be", "too short to train on"),
        (
            ("All the world's a stage.\n" * 8).encode(),
            "too short for batch_size=32 streams of windows of 64",
        ),
    ],
    ids=["empty", "binary", "latin1", "too-short", "shorter-than-a-batch"],
)
def test_refused_files_give_their_message(tmp_path, data, message, capsys):
    path = tmp_path / "input.txt"
    path.write_bytes(data)
    command = ["train", "charlm", "--data", str(path), "--steps", "1", "--runs-root", str(tmp_path)]
    assert cli.main(command) == 1
    assert message in capsys.readouterr().err
    assert [item.name for item in tmp_path.iterdir()] == ["input.txt"]


def test_missing_run_is_explained(tmp_path, capsys):
    assert cli.main(["sample", str(tmp_path / "nope")]) == 1
    assert "no such run folder" in capsys.readouterr().err


def test_bench_forwards_its_arguments(monkeypatch):
    received = []
    fake = types.ModuleType("rnnkit.bench")
    fake.main = lambda argv: received.append(argv) or 7
    monkeypatch.setitem(sys.modules, "rnnkit.bench", fake)
    assert cli.main(["bench", "strategies", "--quick", "--model.x=1"]) == 7
    assert received == [["strategies", "--quick", "--model.x=1"]]


def test_resume_refuses_changes_the_checkpoint_cannot_continue_with(trained_run, capsys):
    run, _ = trained_run
    command = ["train", "charlm", "--resume", str(run), "--model.recurrent.hidden_size=32"]
    assert cli.main(command) == 1
    assert "cannot change model.recurrent.hidden_size when resuming" in capsys.readouterr().err


def test_resume_of_a_finished_run_can_extend_it(tmp_path, trained_run, capsys):
    run, text = trained_run
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert cli.main(["train", "charlm", "--resume", str(copy), "--steps", "8"]) == 0
    output = capsys.readouterr().out
    assert "continuing from step 6" in output and "after 8 steps" in output


def test_predict_and_eval_data_are_for_tasks_trained_on_files(trained_run, tmp_path, capsys):
    run, text = trained_run
    output = tmp_path / "predictions.csv"
    assert cli.main(["predict", str(run), "--data", str(text), "--output", str(output)]) == 1
    assert "rnnkit predict is for tasks trained on files" in capsys.readouterr().err
    assert not output.exists()
    assert cli.main(["eval", str(run), "--split", "train", "--data", str(text)]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse: --output is required
        cli.main(["predict", str(run), "--data", str(text)])
    assert "--output" in capsys.readouterr().err


def test_data_file_errors_name_the_file_and_the_line(tmp_path):
    from rnnkit.data.files import DataFileError, LoadReport

    error = DataFileError(tmp_path / "train.ts", "expected 3 dimensions, got 2", line=12)
    assert str(error) == f"{tmp_path / 'train.ts'}: line 12: expected 3 dimensions, got 2"
    assert str(DataFileError("x.npz", "missing", where="array 'X'")) == "x.npz: array 'X': missing"
    report = LoadReport(tmp_path / "a.csv", read=10)
    report.skip("empty series", 2)
    report.skip("empty series")
    assert report.summary().endswith("a.csv: 10 read; skipped 3 (empty series)")
