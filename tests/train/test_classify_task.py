"""``rnnkit train classify``: the model's pooling against references, the split, the
normalization, and the command line end to end (train, eval, eval --data, predict)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from rnnkit import cli
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.sequence_classifier import SequenceClassifier, SequenceClassifierConfig
from rnnkit.nn import Recurrent
from rnnkit.train.metrics import read_metrics
from rnnkit.train.tasks import TASKS, classify
from rnnkit.train.tasks.classify_data import (
    Scored,
    SequenceFilesConfig,
    normalization,
    sorted_classes,
    stratified_split,
)

TINY = ["--model.recurrent.hidden_size=8", "--trainer.batch_size=4", "--trainer.log_interval=1"]


def classifier(cell: str, pooling: str, bidirectional: bool, size: int = 3) -> SequenceClassifier:
    torch.manual_seed(0)
    recurrent = RecurrentConfig(cell=cell, hidden_size=5, bidirectional=bidirectional)
    config = SequenceClassifierConfig(recurrent=recurrent, pooling=pooling)
    return SequenceClassifier(config, input_size=size, num_classes=4).double()


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("pooling", ["last", "mean", "attention"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_logits_and_gradients_do_not_depend_on_padding(cell, pooling, bidirectional):
    model = classifier(cell, pooling, bidirectional)
    lengths = torch.tensor([5, 2, 4])
    inputs = torch.randn(3, 5, 3, dtype=torch.float64)
    padding = torch.arange(5)[None, :, None] >= lengths[:, None, None]
    inputs = torch.where(padding, torch.full_like(inputs, 1e3), inputs).requires_grad_()
    logits = model(inputs, lengths)
    logits.square().sum().backward()
    assert inputs.grad is not None
    assert inputs.grad[padding.expand_as(inputs)].abs().max() == 0
    for row, length in enumerate(lengths.tolist()):
        alone = inputs.detach()[row : row + 1, :length].clone().requires_grad_()
        alone_logits = model(alone, torch.tensor([length]))
        assert_close(logits[row : row + 1], alone_logits, msg=f"logits of sequence {row}")
        alone_logits.square().sum().backward()
        assert_close(inputs.grad[row, :length], alone.grad[0], msg=f"input gradient {row}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_bidirectional_last_pooling_reads_each_direction_after_the_whole_sequence(cell):
    model = classifier(cell, "last", bidirectional=True)
    sequence = torch.randn(1, 6, 3, dtype=torch.float64)
    pooled = model.pooled(sequence, torch.tensor([6]))
    forward, backward = (Recurrent(cell, 3, 5).double() for _ in range(2))
    forward.cells[0].load_state_dict(model.recurrent.cells[0].state_dict())
    backward.cells[0].load_state_dict(model.recurrent.cells[1].state_dict())
    forward_outputs, _ = forward(sequence)
    backward_outputs, _ = backward(sequence.flip(1))  # the reversed sequence, read forwards
    assert_close(pooled[:, :5], forward_outputs[:, -1], msg="forward half")
    assert_close(pooled[:, 5:], backward_outputs[:, -1], msg="backward half")


def test_mean_and_attention_pooling_against_their_formulas():
    sequence = torch.randn(1, 4, 3, dtype=torch.float64)
    mean_model = classifier("gru", "mean", bidirectional=False)
    outputs, _ = mean_model.recurrent(sequence)
    assert_close(mean_model.pooled(sequence, torch.tensor([4])), outputs.mean(1))
    model = classifier("gru", "attention", bidirectional=False)
    outputs, _ = model.recurrent(sequence)
    assert model.attention is not None
    scores = model.attention.score(torch.tanh(model.attention.project(outputs)))[..., 0]
    weights = torch.exp(scores) / torch.exp(scores).sum()
    assert_close(model.pooled(sequence, torch.tensor([4])), (weights[..., None] * outputs).sum(1))
    padded = torch.cat([sequence, torch.zeros(1, 2, 3, dtype=torch.float64)], 1)
    padded_weights = model.attention.weights(model.recurrent(padded)[0], torch.tensor([4]))
    assert_close(padded_weights[:, :4], weights)
    assert padded_weights[0, 4:].abs().max() == 0


def test_inputs_are_normalized_by_the_buffers():
    model = classifier("lstm", "last", bidirectional=False)
    inputs = torch.randn(2, 3, 3, dtype=torch.float64) * 4 + 2
    lengths = torch.tensor([3, 2])
    plain = model(inputs.sub(2).div(4), lengths)
    model.set_normalization(torch.full((3,), 2.0), torch.full((3,), 4.0))
    assert_close(model(inputs, lengths), plain)
    assert "feature_mean" in model.state_dict()  # saved with the weights


def test_stratified_split_holds_out_each_class_by_seed():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"]
    training, validation = stratified_split(labels, 0.2, seed=3)
    assert sorted(training + validation) == list(range(16))
    held = [labels[index] for index in validation]
    assert held.count("a") == 2 and held.count("b") == 1 and held.count("c") == 0
    assert stratified_split(labels, 0.2, seed=3) == (training, validation)
    assert stratified_split(labels, 0.2, seed=4) != (training, validation)
    with pytest.raises(ValueError, match="holds none out"):
        stratified_split(["a", "b"], 0.2, seed=0)
    assert sorted_classes(["10", "9", "1"]) == ["1", "9", "10"]
    assert sorted_classes(["b", "a", "10"]) == ["10", "a", "b"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"layout": "tall"}, "layout must be one of auto, wide, long"),
        ({"missing": "drop"}, "missing must be one of error, interpolate, zero"),
        ({"validation_fraction": 0.0}, "validation_fraction must be above 0"),
        ({"validation_fraction": 1.0}, "validation_fraction: expected [0, 1)"),
        ({"train": "data.txt"}, "train: expected a .ts, .csv, .tsv, .npz file"),
        ({"test": "data.json"}, "test: expected a .ts, .csv, .tsv, .npz file"),
    ],
)
def test_data_settings_are_checked(fields, message):
    with pytest.raises(ValueError) as caught:
        SequenceFilesConfig(**fields)
    assert message in str(caught.value)
    with pytest.raises(ValueError, match="pooling must be one of last, mean, attention"):
        SequenceClassifierConfig(pooling="max")


def test_metrics_against_scikit_learn():
    from sklearn.metrics import confusion_matrix, f1_score

    generator = torch.Generator().manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(40, 5, generator=generator), -1)
    log_probs[:, 4] = -50.0  # class 4 never predicted
    targets = torch.randint(0, 3, (40,), generator=generator)  # classes 3 and 4 never true
    targets[:2] = 4  # ... but 4 is true twice, never predicted: its F1 is 0
    scored = Scored(log_probs, targets)
    predictions = log_probs.argmax(-1)
    metrics = scored.metrics()
    assert metrics["macro_f1"] == pytest.approx(f1_score(targets, predictions, average="macro"))
    assert metrics["accuracy"] == pytest.approx(float((predictions == targets).double().mean()))
    assert metrics["loss"] == pytest.approx(float(-log_probs[torch.arange(40), targets].mean()))
    expected = confusion_matrix(targets, predictions, labels=list(range(5)))
    assert scored.confusion().tolist() == expected.tolist()


def write_wide(path, rows: list[tuple[str, list[float]]]) -> None:
    width = max(len(values) for _, values in rows)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", *(f"t{step}" for step in range(width))])
        for label, values in rows:
            writer.writerow([label, *values, *[""] * (width - len(values))])


def ramps(count: int, seed: int, labels: tuple[str, ...] = ("up", "down")):
    """Noisy rising or falling ramps of 3 to 7 steps, labels taking turns."""
    generator = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        label = labels[index % len(labels)]
        length = int(generator.integers(3, 8))
        slope = 1.0 if label == "up" else -1.0
        values = slope * np.arange(length) + 10 + generator.normal(0, 0.3, length)
        rows.append((label, [round(float(value), 4) for value in values]))
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classify")
    write_wide(folder / "train.csv", ramps(20, seed=0))
    write_wide(folder / "test.csv", ramps(9, seed=1))
    write_wide(folder / "unseen.csv", ramps(3, seed=2, labels=("up", "sideways")))
    return folder


@pytest.fixture(scope="module")
def trained_run(files):
    run = files / "run"
    arguments = ["--data", str(files / "train.csv"), "--test", str(files / "test.csv")]
    assert (
        cli.main(["train", "classify", *arguments, "--steps", "3", "--run-dir", str(run), *TINY])
        == 0
    )
    return run


def test_the_task_is_registered():
    assert TASKS["classify"].predict_file is not None
    assert TASKS["classify"].evaluate_file is not None


def test_normalization_is_fitted_on_the_training_split_only(files):
    config = classify.ClassifyConfig(data=SequenceFilesConfig(train=str(files / "train.csv")))
    task = classify.build(config, None)
    rows = ramps(20, seed=0)
    training, _ = stratified_split([label for label, _ in rows], 0.2, seed=0)
    mean, std = normalization([np.array(rows[index][1])[:, None] for index in training])
    assert_close(task.metadata()["mean"], mean.tolist())
    assert_close(task.metadata()["std"], std.tolist())
    assert task.classes == ["down", "up"]


def test_train_writes_metrics_and_the_confusion_matrix(trained_run):
    for name in ("config.json", "checkpoint.json", "metrics.jsonl", "loss.png"):
        assert (trained_run / name).exists(), name
    assert (trained_run / "confusion_matrix.png").stat().st_size > 1000
    validation = [
        r for r in read_metrics(trained_run / "metrics.jsonl") if r["kind"] == "validation"
    ]
    assert validation[-1]["step"] == 3
    for key in ("loss", "accuracy", "macro_f1"):
        assert math.isfinite(validation[-1][key]), key


def test_eval_scores_test_then_any_file(trained_run, files, capsys):
    assert cli.main(["eval", str(trained_run), "--json"]) == 0
    default = json.loads(capsys.readouterr().out)["metrics"]
    assert cli.main(["eval", str(trained_run), "--data", str(files / "test.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == default
    assert 0.0 <= default["accuracy"] <= 1.0 and 0.0 <= default["macro_f1"] <= 1.0


@pytest.mark.parametrize("suffix", [".csv", ".tsv"])
def test_predict_round_trips(trained_run, files, suffix, capsys):
    output = files / f"predictions{suffix}"
    assert (
        cli.main(
            [
                "predict",
                str(trained_run),
                "--data",
                str(files / "test.csv"),
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert "wrote 9 predictions" in capsys.readouterr().out
    with output.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    assert [int(row["index"]) for row in rows] == list(range(9))
    probabilities = torch.tensor(
        [[float(row["probability_down"]), float(row["probability_up"])] for row in rows]
    )
    assert_close(probabilities.sum(1), torch.ones(9), atol=1e-5, rtol=0)
    assert [row["predicted"] for row in rows] == [
        ["down", "up"][i] for i in probabilities.argmax(1)
    ]
    _, task, _ = classify._load(trained_run)
    scored, _ = task.score_file(files / "test.csv")
    assert_close(probabilities, scored.log_probs.exp(), atol=1e-5, rtol=1e-5)
    truth = [label for label, _ in ramps(9, seed=1)]
    accuracy = np.mean([row["predicted"] == label for row, label in zip(rows, truth, strict=True)])
    assert accuracy == pytest.approx(scored.metrics()["accuracy"])


def test_a_label_training_never_saw_is_refused(trained_run, files, capsys):
    unseen = str(files / "unseen.csv")
    assert cli.main(["eval", str(trained_run), "--data", unseen]) == 1
    error = capsys.readouterr().err
    assert f"{unseen}: line 3: label 'sideways' was never seen in training" in error
    run = files / "refused"
    arguments = ["--data", str(files / "train.csv"), "--test", unseen, "--run-dir", str(run)]
    assert cli.main(["train", "classify", *arguments, "--steps", "1", *TINY]) == 1
    assert (
        "label 'sideways' was never seen in training (its classes: down, up)"
        in capsys.readouterr().err
    )
    assert not (run / "checkpoint.json").exists()


def test_files_of_another_shape_and_no_data_are_refused(trained_run, files, capsys):
    wide = files / "two_features.npz"
    np.savez(wide, X=np.zeros((2, 4, 2)), y=np.array(["up", "down"]))
    assert cli.main(["eval", str(trained_run), "--data", str(wide)]) == 1
    assert "2 features per step, the model was trained on 1" in capsys.readouterr().err
    assert cli.main(["train", "classify", "--steps", "1", "--run-dir", str(files / "none")]) == 1
    assert "classify needs a training file: --data TRAIN" in capsys.readouterr().err


def test_resume_and_eval_without_test_use_the_validation_split(files, capsys):
    run = files / "no_test"
    arguments = ["--data", str(files / "train.csv"), "--run-dir", str(run), *TINY]
    assert cli.main(["train", "classify", *arguments, "--steps", "2"]) == 0
    assert cli.main(["train", "classify", "--resume", str(run), "--steps", "3"]) == 0
    assert "continuing from step 2" in capsys.readouterr().out
    assert cli.main(["eval", str(run)]) == 0
    assert "validation split of" in capsys.readouterr().out


def write_long(path, rows: list[tuple[str, list[float]]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "time", "x", "squared", "label"])
        for index, (label, values) in enumerate(rows):
            for step, value in reversed(list(enumerate(values))):
                writer.writerow([f"s{index}", step, value, value * value / 100, label])


def write_ts(path, rows: list[tuple[str, list[float]]]) -> None:
    lines = ["@problemName ramps", "@univariate true", "@classLabel true down up", "@data"]
    lines += [",".join(map(str, values)) + f":{label}" for label, values in rows]
    path.write_text("\n".join(lines) + "\n")


def write_npz(path, rows: list[tuple[str, list[float]]]) -> None:
    width = max(len(values) for _, values in rows)
    features = np.zeros((len(rows), width, 1))
    for index, (_, values) in enumerate(rows):
        features[index, : len(values), 0] = values
    lengths = np.array([len(values) for _, values in rows])
    np.savez(path, X=features, lengths=lengths, y=np.array([label for label, _ in rows]))


@pytest.mark.parametrize(
    ("name", "writer", "options"),
    [
        ("train.ts", write_ts, ["--model.recurrent.bidirectional=true"]),
        ("train.npz", write_npz, ["--model.recurrent.cell=gru", "--model.pooling=attention"]),
        ("long.csv", write_long, ["--model.pooling=mean", "--model.recurrent.bidirectional=true"]),
    ],
)
def test_every_format_trains_with_any_pooling(files, name, writer, options, capsys):
    path = files / name
    writer(path, ramps(12, seed=5))
    run = files / f"run-{name}"
    arguments = ["--data", str(path), "--run-dir", str(run), "--steps", "2", *TINY, *options]
    assert cli.main(["train", "classify", *arguments]) == 0
    assert f"{path}: 12 read" in capsys.readouterr().out
    output = files / f"predictions-{name}.csv"
    assert cli.main(["predict", str(run), "--data", str(path), "--output", str(output)]) == 0
    assert len(output.read_text().splitlines()) == 13
