"""ONNX export round trips: onnxruntime against the eager rnnkit module, at two sequence lengths
and two batch sizes, values to 1e-5; streaming with the returned state fed back."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import rnnkit.nn as rnn
from rnnkit.deploy import ExportError, export_onnx
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.recurrent_config import RecurrentConfig

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install .[dev])")
pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")

TOLERANCE = 1e-5
SHAPES = [(1, 2), (3, 7)]  # (batch, time)


def run_onnx(path, feeds: dict[str, torch.Tensor]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: value.numpy() for name, value in feeds.items()})


def export(module, path, **options) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(module, path, **options)


def assert_close(name: str, got: np.ndarray, expected: torch.Tensor) -> None:
    expected_array = expected.detach().numpy()
    assert got.shape == expected_array.shape, f"{name}: shape {got.shape} != {expected.shape}"
    difference = float(np.abs(got - expected_array).max())
    assert difference <= TOLERANCE, f"{name}: onnxruntime differs from eager by {difference:.2e}"


def flat_state(state) -> list[torch.Tensor]:
    return [field for cell_state in state for field in cell_state]


@pytest.mark.parametrize("batch,steps", SHAPES, ids=lambda value: str(value))
def test_gru_drop_in(tmp_path, batch, steps):
    torch.manual_seed(0)
    layer = rnn.GRU(4, 8).eval()  # (T, B, D) layout, torch's default
    inputs, h0 = torch.randn(steps, batch, 4), torch.randn(1, batch, 8)
    names = export(layer, tmp_path / "gru.onnx", batch_size=batch)
    assert names == ["input", "h0"]
    output, hn = run_onnx(tmp_path / "gru.onnx", {"input": inputs, "h0": h0})
    expected_output, expected_hn = layer(inputs, h0)
    assert_close("output", output, expected_output)
    assert_close("hn", hn, expected_hn)


@pytest.mark.parametrize("batch,steps", SHAPES, ids=lambda value: str(value))
def test_stacked_lstm_with_projection(tmp_path, batch, steps):
    torch.manual_seed(1)
    layer = rnn.LSTM(4, 8, num_layers=2, proj_size=3, batch_first=True).eval()
    inputs = torch.randn(batch, steps, 4)
    h0, c0 = torch.randn(2, batch, 3), torch.randn(2, batch, 8)
    export(layer, tmp_path / "lstm.onnx", batch_size=batch)
    got = run_onnx(tmp_path / "lstm.onnx", {"input": inputs, "h0": h0, "c0": c0})
    expected_output, (expected_h, expected_c) = layer(inputs, (h0, c0))
    for name, value, expected in zip(
        ("output", "hn", "cn"), got, (expected_output, expected_h, expected_c), strict=True
    ):
        assert_close(name, value, expected)


@pytest.mark.parametrize("batch,steps", SHAPES, ids=lambda value: str(value))
@pytest.mark.parametrize("cell,strategy", [("gru", "native"), ("mingru", "scan")])
def test_bidirectional_with_lengths(tmp_path, cell, strategy, batch, steps):
    torch.manual_seed(2)
    layer = rnn.Recurrent(cell, 4, 8, num_layers=2, bidirectional=True, strategy=strategy).eval()
    inputs = torch.randn(batch, steps, 4)
    lengths = torch.arange(steps, steps - batch, -1).clamp(min=1)  # the longest first, padded
    state = [layer.layer_cells()[0].initial_state(batch) for _ in range(4)]
    state = [type(s)(*(torch.randn_like(field) for field in s)) for s in state]
    names = export(layer, tmp_path / "layer.onnx", with_lengths=True, batch_size=batch)
    feeds = dict(zip(names, [inputs, lengths, *flat_state(state)], strict=True))
    got = run_onnx(tmp_path / "layer.onnx", feeds)
    outputs, final = layer(inputs, state, lengths=lengths)
    expected = [outputs, *flat_state(final)]
    for name, value, reference in zip(["outputs", *names[2:]], got, expected, strict=True):
        assert_close(name, value, reference)


@pytest.mark.parametrize("batch,steps", SHAPES, ids=lambda value: str(value))
@pytest.mark.parametrize("cell", ["gla", "mingru", "gated_deltanet"])
def test_linear_cell_under_scan(tmp_path, cell, batch, steps):
    torch.manual_seed(3)
    layer = rnn.Recurrent(cell, 4, 8, strategy="scan").eval()
    inputs = torch.randn(batch, steps, 4)
    initial = layer.layer_cells()[0].initial_state(batch)
    state = [type(initial)(*(0.5 * torch.randn_like(field) for field in initial))]
    names = export(layer, tmp_path / "linear.onnx", batch_size=batch)
    got = run_onnx(tmp_path / "linear.onnx", dict(zip(names, [inputs, *state[0]], strict=True)))
    outputs, final = layer(inputs, state)
    for name, value, reference in zip(names, got, [outputs, *flat_state(final)], strict=True):
        assert_close(name, value, reference)


def test_streaming_two_chunks_equal_one_pass(tmp_path):
    torch.manual_seed(4)
    config = LanguageModelConfig(
        embedding_size=8, recurrent=RecurrentConfig(cell="lstm", hidden_size=16, num_layers=2)
    )
    model = LanguageModel(config, vocabulary_size=11).eval()
    names = export(model, tmp_path / "lm.onnx", batch_size=2)
    tokens = torch.randint(0, 11, (2, 9))
    zeros = [torch.zeros(2, 16) for _ in range(4)]
    first = run_onnx(tmp_path / "lm.onnx", dict(zip(names, [tokens[:, :4], *zeros], strict=True)))
    carried = [torch.from_numpy(value) for value in first[1:]]
    second = run_onnx(
        tmp_path / "lm.onnx", dict(zip(names, [tokens[:, 4:], *carried], strict=True))
    )
    logits, final = model(tokens)
    assert_close("logits", np.concatenate([first[0], second[0]], axis=1), logits)
    for index, (value, reference) in enumerate(zip(second[1:], flat_state(final), strict=True)):
        assert_close(f"final state {index}", value, reference)


@pytest.mark.parametrize(
    "cell,strategy,named",
    [
        ("lstm", "fused", "fused"),
        ("paragru", "newton", "newton"),
        ("mingru", "scan:compiled", "scan:compiled"),
    ],
)
def test_untraceable_strategy_raises(tmp_path, cell, strategy, named):
    layer = rnn.Recurrent(cell, 4, 8, strategy=strategy)
    with pytest.raises(ExportError, match=f"strategy '{named}' cannot be traced.*sequential"):
        export_onnx(layer, tmp_path / "never.onnx")
    assert not (tmp_path / "never.onnx").exists()


@pytest.mark.parametrize("pooling", ["last", "attention"])
def test_sequence_classifier(tmp_path, pooling):
    from rnnkit.models.sequence_classifier import SequenceClassifier, SequenceClassifierConfig

    torch.manual_seed(5)
    recurrent = RecurrentConfig(cell="gru", hidden_size=8, bidirectional=True)
    config = SequenceClassifierConfig(recurrent=recurrent, pooling=pooling)
    model = SequenceClassifier(config, input_size=3, num_classes=4).eval()
    model.set_normalization(torch.tensor([0.5, -1.0, 2.0]), torch.tensor([2.0, 1.0, 0.5]))
    for batch, steps in SHAPES:
        inputs = torch.randn(batch, steps, 3)
        lengths = torch.arange(steps, steps - batch, -1).clamp(min=1)
        names = export(model, tmp_path / "classifier.onnx", batch_size=batch)
        assert names == ["inputs", "lengths"]
        (logits,) = run_onnx(tmp_path / "classifier.onnx", {"inputs": inputs, "lengths": lengths})
        assert_close(f"logits B{batch} T{steps}", logits, model(inputs, lengths))
