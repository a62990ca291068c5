"""``rnnkit train digit-strings`` and ``rnnkit eval`` end to end on a tiny model."""

from __future__ import annotations

import io
import json

import pytest

from rnnkit import cli
from rnnkit.decoding.metrics import edit_distance
from rnnkit.train.metrics import read_metrics
from rnnkit.train.tasks import TASKS
from rnnkit.train.tasks.digit_strings_plots import choose_examples, digits_text

TINY = [
    "--model.channels=4",
    "--model.recurrent.hidden_size=8",
    "--trainer.batch_size=4",
    "--data.validation_strings=12",
    "--data.test_strings=10",
    "--decoding.examples=6",
    "--trainer.log_interval=1",
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "digits"
    status = cli.main(["train", "digit-strings", "--steps", "3", "--run-dir", str(run_dir), *TINY])
    assert status == 0
    return run_dir


def test_the_task_is_registered():
    assert "digit-strings" in TASKS


def test_train_writes_a_run_with_metrics_and_plots(trained_run):
    for name in ("config.json", "checkpoint.json", "metrics.jsonl", "loss.png", "predictions.png"):
        assert (trained_run / name).exists(), name
    assert (trained_run / "predictions.png").stat().st_size > 1000
    records = read_metrics(trained_run / "metrics.jsonl")
    validation = [record for record in records if record["kind"] == "validation"]
    assert validation[-1]["step"] == 3
    for key in ("loss", "exact_accuracy", "label_error_rate", "sequence_error_rate"):
        assert isinstance(validation[-1][key], float), key
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["channels"] == 4


def test_eval_reports_greedy_beam_and_ngram_metrics(trained_run, capsys):
    assert cli.main(["eval", str(trained_run)]) == 0
    output = capsys.readouterr().out
    for name in ("greedy", "beam", "beam_ngram", "exact", "label error rate"):
        assert name in output
    results = TASKS["digit-strings"].evaluate_run(trained_run, io.StringIO())
    for key in (
        "loss",
        "greedy_exact_accuracy",
        "beam_label_error_rate",
        "beam_ngram_exact_accuracy",
    ):
        assert 0.0 <= results[key] < float("inf"), key


def test_resume_continues_the_run(trained_run, capsys):
    status = cli.main(["train", "digit-strings", "--resume", str(trained_run), "--steps", "4"])
    assert status == 0
    assert "continuing from step 3" in capsys.readouterr().out


def test_examples_put_misread_strings_first():
    references = [(1,), (2,), (3,), (4,)]
    hypotheses = [(1,), (5,), (3,), ()]
    assert choose_examples(references, hypotheses, 4) == [1, 3, 0, 2]
    assert choose_examples(references, hypotheses, 2) == [1, 0]
    assert edit_distance(references[3], hypotheses[3]) == 1
    assert digits_text((4, 0, 7)) == "407" and digits_text(()) == "(empty)"
