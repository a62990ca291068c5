"""The trainer through the command line: resuming reproduces an uninterrupted run exactly,
NaN losses stop the run and keep the last good checkpoint, time budgets stop it."""

from __future__ import annotations

import json
import os
import signal

import pytest

from rnnkit import cli
from rnnkit.data import bundled_path
from rnnkit.train import checkpoint as checkpoints
from rnnkit.train.metrics import read_metrics
from rnnkit.train.trainer import Trainer

TINY = [
    "--model.embedding_size=8",
    "--model.recurrent.hidden_size=16",
    "--trainer.batch_size=4",
    "--bptt.window=16",
    "--bptt.evaluation_streams=4",
    "--trainer.log_interval=1",
    "--trainer.log_seconds=0",
    "--sample.length=20",
]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(bundled_path().read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


def losses(run_dir) -> list[tuple[str, int, float]]:
    return [(r["kind"], r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl")]


def interrupt_at(monkeypatch, step: int) -> None:
    """Send this process a real SIGINT (Ctrl-C) once training reaches ``step``."""
    original = Trainer.train_step

    def train_step(self):
        original(self)
        if self.step == step:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "train_step", train_step)


@pytest.mark.parametrize(
    "extra",
    [
        ["--model.recurrent.cell=lstm", "--trainer.log_interval=3"],
        [
            "--model.recurrent.cell=gru",
            "--model.recurrent.num_layers=2",
            "--model.dropout=0.1",
            "--optimizer.gradient_noise=0.01",
            "--model.recurrent.options.zoneout=0.1",
        ],
        ["--model.recurrent.cell=lstm", "--optimizer.name=muon"],
    ],
    ids=["lstm-log-every-3", "gru-2layers-dropout-noise-zoneout", "lstm-muon"],
)
def test_resume_reproduces_the_uninterrupted_run(tmp_path, text_file, monkeypatch, extra):
    command = ["train", "charlm", "--data", str(text_file), "--steps", "14", "--seed", "3"]
    command += TINY + ["--trainer.eval_interval=5"] + extra
    assert cli.main(command + ["--run-dir", str(tmp_path / "whole")]) == 0

    with monkeypatch.context() as patch:
        interrupt_at(patch, 8)
        assert cli.main(command + ["--run-dir", str(tmp_path / "parts")]) == cli.INTERRUPTED
    assert json.loads((tmp_path / "parts" / "checkpoint.json").read_text())["step"] == 8
    assert cli.main(["train", "charlm", "--resume", str(tmp_path / "parts")]) == 0

    whole, parts = losses(tmp_path / "whole"), losses(tmp_path / "parts")
    assert [record[1] for record in whole if record[0] == "validation"] == [5, 10, 14]
    assert parts == whole


def test_resume_after_a_crash_drops_the_records_after_the_checkpoint(
    tmp_path, text_file, monkeypatch
):
    command = ["train", "charlm", "--data", str(text_file), "--steps", "12", "--seed", "1"]
    command += TINY + ["--trainer.eval_interval=4"]
    assert cli.main(command + ["--run-dir", str(tmp_path / "whole")]) == 0

    original = Trainer.train_step

    def crash_at_ten(self):
        original(self)
        if self.step == 10:
            raise MemoryError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", crash_at_ten)
        with pytest.raises(MemoryError):
            cli.main(command + ["--run-dir", str(tmp_path / "crashed")])
    assert losses(tmp_path / "crashed")[-1][1] == 10  # records past the step-8 checkpoint
    assert cli.main(["train", "charlm", "--resume", str(tmp_path / "crashed")]) == 0
    assert losses(tmp_path / "crashed") == losses(tmp_path / "whole")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, text_file, capsys):
    run = tmp_path / "run"
    command = ["train", "charlm", "--data", str(text_file), "--steps", "30", "--run-dir", str(run)]
    command += TINY + [
        "--trainer.eval_interval=1",
        "--optimizer.learning_rate=1e30",
        "--optimizer.warmup_steps=1",
        "--optimizer.clip_norm=0",
    ]
    assert cli.main(command) == 1
    error = capsys.readouterr().err
    assert "training stopped at step" in error
    assert any(what in error for what in ("is nan", "is inf", "NaN or infinite"))
    step = json.loads((run / "checkpoint.json").read_text())["step"]
    assert f"last good checkpoint (step {step})" in error
    assert step < 30


def test_time_budget_stops_the_run(tmp_path, text_file, capsys):
    run = tmp_path / "run"
    command = ["train", "charlm", "--data", str(text_file), "--time-budget", "1s"] + TINY
    assert cli.main(command + ["--run-dir", str(run)]) == 0
    records = read_metrics(run / "metrics.jsonl")
    last = records[-1]
    assert last["kind"] == "validation"
    assert 1.0 <= last["train_seconds"] < 3.0
    assert (run / "loss.png").stat().st_size > 1000
    assert "final validation loss" in capsys.readouterr().out


def test_state_reset_every_window_carries_nothing(tmp_path, text_file):
    run = tmp_path / "run"
    command = ["train", "charlm", "--data", str(text_file), "--steps", "3", "--run-dir", str(run)]
    assert cli.main(command + TINY + ["--bptt.carry_state=false"]) == 0
    document = checkpoints.read_checkpoint(run)
    assert not any(
        key.startswith("carry.") for key in checkpoints.load_training_tensors(run, document)
    )
    assert cli.main(command[:-1] + [str(tmp_path / "carried")] + TINY) == 0
    carried = checkpoints.load_training_tensors(
        tmp_path / "carried", checkpoints.read_checkpoint(tmp_path / "carried")
    )
    assert carried["carry.0.h"].shape == (4, 16)
