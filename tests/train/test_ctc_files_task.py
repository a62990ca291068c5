"""``rnnkit train ctc --data FEATURES.npz``, ``eval --data`` and ``predict`` end to end."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from rnnkit import cli
from rnnkit.data.files import DataFileError
from rnnkit.decoding.metrics import edit_distance
from rnnkit.train.tasks import TASKS
from rnnkit.train.tasks.ctc_files import evaluate_file

TINY = [
    "--model.channels=4",
    "--model.conv_layers=1",
    "--model.height_poolings=1",
    "--model.recurrent.hidden_size=8",
    "--trainer.batch_size=4",
    "--decoding.examples=4",
    "--decoding.beam_width=2",
]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def write_features(path, count, seed=0, **extra):
    """Frames of 4 features where label k lights feature k at frames 2, 5, 8, ..."""
    generator = np.random.default_rng(seed)
    frames = generator.normal(size=(count, 14, 4)).astype(np.float32)
    lengths = generator.integers(10, 15, size=count)
    labels = []
    for row in range(count):
        text = "".join(generator.choice(list("abc"), size=generator.integers(1, 4)))
        for position, symbol in enumerate(text):
            frames[row, 2 + 3 * position, "abc".index(symbol)] += 3.0
        labels.append(text)
    np.savez(path, X=frames, lengths=lengths, labels=np.array(labels), **extra)
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ctc")
    data = write_features(folder / "train.npz", 40)
    run = folder / "run"
    command = ["train", "ctc", "--data", str(data), "--steps", "3", "--run-dir", str(run)]
    assert cli.main([*command, *TINY]) == 0
    return run, folder


def test_training_reports_every_decoder_on_the_test_split(trained_run, capsys):
    run, _ = trained_run
    assert "ctc" in TASKS
    assert cli.main(["eval", str(run), "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["task"] == "ctc" and document["step"] == 3
    for decoder in ("greedy", "beam", "beam_ngram"):
        metrics = {f"{decoder}_{name}" for name in ("label_error_rate", "sequence_error_rate")}
        assert metrics <= set(document["metrics"])
    assert "the test split of" in captured.err and "nats/label" in captured.err


def test_predict_round_trips_with_the_greedy_scores_of_eval(trained_run, capsys):
    run, folder = trained_run
    data = write_features(folder / "other.npz", 7, seed=5)
    assert cli.main(["eval", str(run), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    output = folder / "out.tsv"
    assert cli.main(["predict", str(run), "--data", str(data), "--output", str(output)]) == 0
    assert "wrote 7 predictions" in capsys.readouterr().out
    rows = list(csv.DictReader(output.open(), delimiter="\t"))
    assert [int(row["index"]) for row in rows] == list(range(7))
    references = [str(label) for label in np.load(data)["labels"]]
    read = [row["label"] for row in rows]
    edits = sum(edit_distance(r, h) for r, h in zip(references, read, strict=True))
    total = sum(len(reference) for reference in references)
    assert metrics["greedy_label_error_rate"] == pytest.approx(edits / total)
    exact = np.mean([r == h for r, h in zip(references, read, strict=True)])
    assert metrics["greedy_exact_accuracy"] == pytest.approx(exact)


def test_predict_needs_no_labels(trained_run, capsys):
    run, folder = trained_run
    frames = np.zeros((2, 5, 4), dtype=np.float32)
    data = folder / "unlabelled.npz"
    np.savez(data, X=frames, lengths=np.array([5, 3]))
    output = folder / "unlabelled.csv"
    assert cli.main(["predict", str(run), "--data", str(data), "--output", str(output)]) == 0
    rows = list(csv.reader(output.open()))
    assert rows[0] == ["index", "label"] and len(rows) == 3
    assert all(set(row[1]) <= set("abc") for row in rows[1:])


def test_eval_refuses_symbols_and_feature_counts_the_run_never_saw(trained_run, tmp_path):
    run, _ = trained_run
    frames = np.zeros((2, 6, 4), dtype=np.float32)
    unknown = tmp_path / "unknown.npz"
    np.savez(unknown, X=frames, lengths=np.array([6, 6]), labels=np.array(["ab", "ad"]))
    with pytest.raises(DataFileError, match=r"example 1: symbols \['d'\] are not in the alphabet"):
        evaluate_file(run, unknown, io.StringIO())
    wide = tmp_path / "wide.npz"
    np.savez(wide, X=np.zeros((2, 6, 5)), lengths=np.array([6, 6]), labels=np.array(["a", "b"]))
    with pytest.raises(DataFileError, match="expected 4 features per frame"):
        evaluate_file(run, wide, io.StringIO())


def test_a_malformed_training_file_stops_with_the_example(tmp_path, capsys):
    data = tmp_path / "bad.npz"
    np.savez(data, X=np.zeros((2, 3, 4)), lengths=np.array([3, 3]), labels=np.array(["ab", "aab"]))
    command = [
        "train",
        "ctc",
        "--data",
        str(data),
        "--steps",
        "1",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    assert cli.main([*command, *TINY]) == 1
    error = capsys.readouterr().err
    assert f"{data}: array 'lengths': example 1: 3 labels need at least 4 frames" in error


def test_halving_the_frames_checks_the_labels_against_the_halved_count(tmp_path, capsys):
    data = tmp_path / "short.npz"
    np.savez(
        data, X=np.zeros((3, 4, 4)), lengths=np.array([4, 4, 4]), labels=np.array(["ab", "a", "b"])
    )
    command = [
        "train",
        "ctc",
        "--data",
        str(data),
        "--steps",
        "1",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    assert cli.main([*command, *TINY, "--model.halve_width=true", "--data.test_fraction=0"]) == 0
    data_long = tmp_path / "long.npz"
    np.savez(
        data_long,
        X=np.zeros((3, 4, 4)),
        lengths=np.array([4, 4, 4]),
        labels=np.array(["abc", "a", "b"]),
    )
    capsys.readouterr()
    command = ["train", "ctc", "--data", str(data_long), "--run-dir", str(tmp_path / "r2")]
    assert cli.main([*command, "--steps", "1", *TINY, "--model.halve_width=true"]) == 1
    assert "example 0: 3 labels need at least 3 frames" in capsys.readouterr().err
