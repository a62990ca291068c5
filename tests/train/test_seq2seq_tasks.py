"""``rnnkit train reverse`` and ``rnnkit train add`` end to end on tiny models."""

from __future__ import annotations

import io
import json

import pytest
import torch

from rnnkit import cli
from rnnkit.train.metrics import read_metrics
from rnnkit.train.tasks import TASKS
from rnnkit.train.tasks.seq2seq_tasks import exact_matches
from rnnkit.train.trainer import Trainer

TINY = [
    "--model.decoder.hidden_size=16",
    "--model.encoder.hidden_size=8",
    "--model.embedding_size=8",
    "--trainer.batch_size=8",
    "--data.validation_size=40",
    "--data.test_size=30",
    "--decoding.examples=3",
]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The tasks train on one thread (``trainer.threads``); later tests get torch's back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("problem", ["reverse", "add"])
def test_train_then_eval_through_the_command_line(problem, tmp_path, capsys):
    run = tmp_path / problem
    assert cli.main(["train", problem, "--steps", "3", "--run-dir", str(run), *TINY]) == 0
    output = capsys.readouterr().out
    assert "final validation loss" in output and "exact sequences (greedy)" in output
    assert "validation examples (greedy):" in output and f"rnnkit eval {run}" in output
    assert (run / "attention.png").stat().st_size > 0 and (run / "loss.png").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    validation = [record for record in records if record["kind"] == "validation"][-1]
    assert validation["step"] == 3
    assert {"loss", "token_accuracy", "exact_accuracy"} <= set(validation)
    assert cli.main(["eval", str(run)]) == 0
    output = capsys.readouterr().out
    assert "test set of 30 examples (model at step 3)" in output and "beam" in output
    metrics = TASKS[problem].evaluate_run(run, io.StringIO())
    expected = {"loss", "token_accuracy", "exact_accuracy", "beam_exact_accuracy"}
    assert set(metrics) == expected | {f"longer_{key}" for key in expected}
    assert all(0.0 <= metrics[key] <= 1.0 for key in metrics if "accuracy" in key)
    assert cli.main(["eval", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)  # exactly one JSON object on stdout
    assert (document["task"], document["step"], document["split"]) == (problem, 3, "test")
    assert document["metrics"] == pytest.approx(metrics)
    assert "test set of 30 examples" in captured.err


def test_resuming_after_a_crash_reproduces_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    command = ["train", "reverse", "--steps", "4", *TINY, "--model.dropout=0.2"]
    command += ["--trainer.eval_interval=2", "--trainer.log_interval=1"]
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
    assert cli.main(["train", "reverse", "--resume", str(tmp_path / "crashed")]) == 0
    capsys.readouterr()

    def losses(run):
        records = read_metrics(run / "metrics.jsonl")
        return [(record["kind"], record["step"], record["loss"]) for record in records]

    assert losses(tmp_path / "crashed") == losses(tmp_path / "whole")
    assert [step for kind, step, _ in losses(tmp_path / "whole") if kind == "validation"] == [2, 4]


def test_eval_refuses_a_run_of_another_problem(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "add", "--steps", "1", "--run-dir", str(run), *TINY]) == 0
    with pytest.raises(Exception, match="'add' run, not a 'reverse' one"):
        TASKS["reverse"].evaluate_run(run, io.StringIO())


def test_exact_matches_needs_every_token_and_the_eos():
    targets = torch.tensor([[5, 6, 2], [5, 2, 0], [7, 2, 0]])
    decoded = torch.tensor([[5, 6, 2, 0], [5, 6, 2, 0], [7, 7, 7, 7]])
    assert exact_matches(decoded, targets).tolist() == [True, False, False]
