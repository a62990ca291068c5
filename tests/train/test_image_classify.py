"""``rnnkit train image-classify``: pLSTM over the grid and a cell over the rows, through the
command line, resumed and evaluated; the data and the model's checks."""

from __future__ import annotations

import json

import pytest
import torch

from rnnkit import cli
from rnnkit.cells.plstm import PLSTM2D
from rnnkit.data.benchmarks import sequential_digits
from rnnkit.models.image_classifier import ImageClassifier, ImageClassifierConfig
from rnnkit.train.tasks import TASKS
from rnnkit.train.tasks.image_classify import DigitImagesConfig, load_images

TINY = [
    "--model.hidden_size=8",
    "--model.num_layers=1",
    "--model.num_heads=2",
    "--trainer.batch_size=4",
    "--evaluation.sequences=12",
    "--evaluation.batch_size=5",
]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("cell", ["plstm", "lstm"])
def test_trains_resumes_and_evaluates_through_the_command_line(cell, tmp_path, capsys):
    assert "image-classify" in TASKS
    run = tmp_path / cell
    arguments = ["train", "image-classify", "--run-dir", str(run), f"--model.cell={cell}", *TINY]
    assert cli.main([*arguments, "--steps", "2"]) == 0
    output = capsys.readouterr().out
    assert "after 2 steps" in output and "test set: loss" in output
    assert ("pLSTM (P-mode" in output) == (cell == "plstm")
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["cell"] == cell
    assert cli.main(["train", "image-classify", "--resume", str(run), "--steps", "3"]) == 0
    assert "after 3 steps" in capsys.readouterr().out
    assert cli.main(["eval", str(run), "--json"]) == 0
    document = json.loads(capsys.readouterr().out.splitlines()[0])
    metrics = document["metrics"]
    assert document["task"] == "image-classify" and document["step"] == 3
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["loss"] > 0
    # accuracy is a multiple of 1 / 12 (the scored images), so it was computed on all of them
    assert abs(metrics["accuracy"] * 12 - round(metrics["accuracy"] * 12)) < 1e-9


def test_d_mode_and_fewer_directions_through_the_command_line(tmp_path, capsys):
    run = tmp_path / "d"
    extra = ["--model.mode=D", "--model.num_directions=2", "--model.pooling=mean", "--steps", "1"]
    assert cli.main(["train", "image-classify", "--run-dir", str(run), *TINY, *extra]) == 0
    assert "pLSTM (D-mode, 2 corner scans" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["model"]["pooling"] == "mean"


def test_cell_options_reach_a_row_reading_cell(tmp_path, capsys):
    run = tmp_path / "gla"
    extra = ["--model.cell=gla", "--model.options.num_heads=2", "--steps", "1"]
    assert cli.main(["train", "image-classify", "--run-dir", str(run), *TINY, *extra]) == 0
    assert "gla x 1 reading one row per step" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["model"]["options"] == {"num_heads": 2}


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_pooling_of_the_grid(pooling):
    torch.manual_seed(0)
    config = ImageClassifierConfig(hidden_size=8, num_heads=2, pooling=pooling)
    encoder = ImageClassifier(config, (8, 8, 1), 10).encoder
    images = torch.rand(2, 8, 8, 1)
    hidden = encoder.embed(images)
    hidden = hidden + encoder.layers[0](encoder.norms[0](hidden))
    pooled = hidden.amax((1, 2)) if pooling == "max" else hidden.mean((1, 2))
    torch.testing.assert_close(encoder(images), encoder.final_norm(pooled))


def test_images_are_the_sequential_digits_split_as_grids():
    data = DigitImagesConfig(test_fraction=0.25)
    images, labels = load_images(data, "test")
    pixels = sequential_digits.load_split(data.source(), "test")
    assert images.shape == (len(labels), 8, 8, 1)
    assert torch.equal(images[:, 2, 5, 0], pixels.inputs[:, 2 * 8 + 5, 0])  # row-major
    assert torch.equal(labels, pixels.targets)
    train_count = len(load_images(data, "train")[1])
    assert train_count + len(labels) == 1797


def test_model_uses_the_grid_layers_and_checks_shapes():
    torch.manual_seed(0)
    config = ImageClassifierConfig(hidden_size=8, num_layers=2, num_heads=2, num_directions=3)
    model = ImageClassifier(config, (8, 8, 1), 10)
    layers = [module for module in model.modules() if isinstance(module, PLSTM2D)]
    assert len(layers) == 2 and all(layer.directions == (0, 1, 2) for layer in layers)
    assert model(torch.rand(3, 8, 8, 1)).shape == (3, 10)
    with pytest.raises(ValueError, match="images must be"):
        model(torch.rand(3, 8, 8))
    rows = ImageClassifier(ImageClassifierConfig(cell="gru", hidden_size=8), (8, 8, 1), 10)
    assert rows(torch.rand(2, 8, 8, 1)).shape == (2, 10)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"cell": "nope"}, "unknown cell"),
        ({"mode": "Q"}, "mode"),
        ({"num_directions": 5}, "num_directions"),
        ({"cell": "plstm", "options": {"x": 1}}, "options"),
        ({"cell": "lstm", "options": {"bogus": 1}}, "bogus"),
        ({"pooling": "min"}, "pooling"),
    ],
)
def test_config_rejects_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        ImageClassifierConfig(**settings)
