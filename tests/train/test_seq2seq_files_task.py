"""``rnnkit train seq2seq --data PAIRS.tsv``, ``eval --data`` and ``predict`` end to end."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

from rnnkit import cli
from rnnkit.data.files import DataFileError
from rnnkit.decoding.metrics import edit_distance
from rnnkit.train.tasks import TASKS
from rnnkit.train.tasks.seq2seq_files import evaluate_file
from rnnkit.train.tasks.seq2seq_files_task import Seq2SeqFilesTask
from rnnkit.train.tasks.supervised import load_run
from rnnkit.train.trainer import Trainer

TINY = [
    "--model.decoder.hidden_size=16",
    "--model.encoder.hidden_size=8",
    "--model.embedding_size=8",
    "--trainer.batch_size=8",
    "--decoding.examples=3",
    "--decoding.beam_width=2",
    "--data.target_tokens=words",
    "--data.validation_fraction=0.1",
    "--data.test_fraction=0.2",
]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write_pairs(path, count, seed=0, letters="abcd"):
    """Words of ``letters`` and their reversal in capitals, as space-separated symbols."""
    generator = torch.Generator().manual_seed(seed)
    lines = []
    for _ in range(count):
        length = int(torch.randint(1, 5, (1,), generator=generator))
        indices = torch.randint(len(letters), (length,), generator=generator).tolist()
        word = "".join(letters[index] for index in indices)
        lines.append(f"{word}\t{' '.join(word[::-1].upper())}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seq2seq")
    data = write_pairs(folder / "pairs.tsv", 60)
    run = folder / "run"
    assert (
        cli.main(
            ["train", "seq2seq", "--data", str(data), "--steps", "3", "--run-dir", str(run), *TINY]
        )
        == 0
    )
    return run, folder


def test_training_reports_the_test_split_and_draws_attention(trained_run, capsys):
    run, _ = trained_run
    assert "seq2seq" in TASKS
    assert (run / "attention-1.png").stat().st_size > 0 and (run / "attention-3.png").exists()
    assert cli.main(["eval", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["task"] == "seq2seq" and document["step"] == 3
    metrics = document["metrics"]
    assert {
        "exact_accuracy",
        "token_error_rate",
        "beam_exact_accuracy",
        "beam_token_error_rate",
    } <= set(metrics)
    assert metrics["unknown_source_tokens"] == 0 and "word error rate" in captured.err


def test_eval_on_a_file_scores_edit_distance_and_counts_unknown_tokens(trained_run, capsys):
    run, folder = trained_run
    data = folder / "unseen.tsv"
    data.write_text("abz\tZ B A\nzz\tZ Z\nab\tB A\n")  # z and Z were never seen in training
    assert cli.main(["eval", str(run), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["unknown_source_tokens"] == 3 and metrics["unknown_target_tokens"] == 3
    _, task, _ = load_run(run, "seq2seq", TASKS["seq2seq"].config_type, TASKS["seq2seq"].build)
    assert isinstance(task, Seq2SeqFilesTask)
    assert (
        cli.main(["predict", str(run), "--data", str(data), "--output", str(folder / "p.tsv")]) == 0
    )
    rows = list(csv.DictReader((folder / "p.tsv").open(), delimiter="\t"))
    references = [("Z", "B", "A"), ("Z", "Z"), ("B", "A")]
    predicted = [tuple(row["prediction"].split()) for row in rows]
    edits = sum(edit_distance(r, p) for r, p in zip(references, predicted, strict=True))
    assert metrics["beam_token_error_rate"] == pytest.approx(edits / 7)  # predict uses the beam
    exact = sum(r == p for r, p in zip(references, predicted, strict=True)) / 3
    assert metrics["beam_exact_accuracy"] == pytest.approx(exact)


def test_predict_writes_one_row_per_source_in_order(trained_run, capsys):
    run, folder = trained_run
    sources = folder / "sources.txt"
    sources.write_text("abc\n\ndcba\na\tIGNORED\n")
    output = folder / "out.csv"
    assert cli.main(["predict", str(run), "--data", str(sources), "--output", str(output)]) == 0
    assert "wrote 3 predictions" in capsys.readouterr().out
    rows = list(csv.reader(output.open()))
    assert rows[0] == ["source", "prediction"] and [row[0] for row in rows[1:]] == [
        "abc",
        "dcba",
        "a",
    ]
    pairs = folder / "consistent.tsv"  # the predictions as targets: beam exact accuracy 1
    pairs.write_text(
        "".join(f"{source}\t{prediction}\n" for source, prediction in rows[1:] if prediction)
    )
    if pairs.read_text():
        metrics = evaluate_file(run, pairs, io.StringIO())
        assert metrics["beam_exact_accuracy"] == 1.0 and metrics["beam_token_error_rate"] == 0.0


def test_a_malformed_file_stops_with_its_line(trained_run, tmp_path, capsys):
    data = tmp_path / "bad.tsv"
    data.write_text("ab\tB A\nab B A\n")
    status = cli.main(
        [
            "train",
            "seq2seq",
            "--data",
            str(data),
            "--steps",
            "1",
            "--run-dir",
            str(tmp_path / "r"),
            *TINY,
        ]
    )
    assert status == 1
    assert (
        f"{data}: line 2: expected source<TAB>target (one TAB), found no TAB"
        in capsys.readouterr().err
    )
    with pytest.raises(DataFileError):
        evaluate_file(trained_run[0], data, io.StringIO())


def test_without_data_the_task_asks_for_a_file(tmp_path, capsys):
    assert cli.main(["train", "seq2seq", "--steps", "1", "--run-dir", str(tmp_path / "r")]) != 0
    assert "--data PAIRS.tsv" in capsys.readouterr().err


def test_resuming_after_a_crash_repeats_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    data = write_pairs(tmp_path / "pairs.tsv", 40, seed=1)
    command = ["train", "seq2seq", "--data", str(data), "--steps", "4", *TINY]
    command += ["--trainer.eval_interval=2", "--decoding.examples=0"]
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
    assert cli.main(["train", "seq2seq", "--resume", str(tmp_path / "crashed")]) == 0
    capsys.readouterr()
    definition = TASKS["seq2seq"]
    whole, resumed = (
        load_run(tmp_path / name, "seq2seq", definition.config_type, definition.build)[1]
        for name in ("whole", "crashed")
    )
    for first, second in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_a_separate_test_file_is_scored_with_its_unknown_tokens(tmp_path, capsys):
    data = write_pairs(tmp_path / "pairs.tsv", 30, seed=2)
    test = tmp_path / "test.tsv"
    test.write_text("ab\tB A\nax\tX A\n")  # x and X unseen
    run = tmp_path / "run"
    command = ["train", "seq2seq", "--data", str(data), "--data.test", str(test), "--steps", "1"]
    assert cli.main([*command, "--run-dir", str(run), *TINY]) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    metrics = json.loads(captured.out)["metrics"]
    assert metrics["unknown_source_tokens"] == 1 and metrics["unknown_target_tokens"] == 1
    assert f"{test} (model at step 1)" in captured.err
    assert metrics["exact_accuracy"] <= 0.5  # X A cannot be predicted: X is not in the vocabulary
