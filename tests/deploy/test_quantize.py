"""int8 dynamic quantization: outputs close to float, weights smaller, custom cells' matrices int8;
``rnnkit export`` and ``rnnkit quantize`` on a tiny trained char-LM run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnnkit import cli
from rnnkit.data import bundled_path
from rnnkit.deploy.int8_weight import Int8DynamicWeight
from rnnkit.deploy.quantize import (
    TorchRecurrent,
    quantize_int8,
    serialized_bytes,
    torch_layer_reason,
)
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.nn import Recurrent
from rnnkit.train.tasks.charlm import load_trained

# int8 weights with one scale per tensor: logits of these small random models move by about
# 1% of their largest magnitude; 5% catches a wrong gate order or a missing layer (O(100%)).
RELATIVE_TOLERANCE = 0.05


def language_model(cell: str, **options) -> LanguageModel:
    torch.manual_seed(0)
    recurrent = RecurrentConfig(cell=cell, hidden_size=64, num_layers=2, options=options)
    return LanguageModel(LanguageModelConfig(embedding_size=16, recurrent=recurrent), 30).eval()


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman", "mingru", "slstm"])
def test_quantized_logits_close_to_float_and_smaller(cell):
    model = language_model(cell)
    quantized = quantize_int8(model)
    tokens = torch.randint(0, 30, (3, 40))
    with torch.no_grad():
        expected, expected_state = model(tokens)
        got, state = quantized(tokens)
        step_expected, _ = model.step(tokens[:, 0], expected_state)
        step_got, _ = quantized.step(tokens[:, 0], state)
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) <= RELATIVE_TOLERANCE * scale, "logits"
    assert float((step_got - step_expected).abs().max()) <= RELATIVE_TOLERANCE * scale, "step"
    assert serialized_bytes(quantized) < serialized_bytes(model)
    assert float(torch.nn.functional.cross_entropy(got[0], expected[0].argmax(-1))) < 10
    native = cell in ("lstm", "gru", "elman")
    assert isinstance(quantized.recurrent, TorchRecurrent) == native
    if not native:  # custom cells: int8 input projections (tests/deploy/test_quantize_cells.py)
        assert isinstance(quantized.recurrent.layer_cells()[0].weight_ih, Int8DynamicWeight)
    assert isinstance(model.recurrent, Recurrent), "the float model must be left unchanged"


def test_torch_layer_keeps_weights_and_states_exactly():
    """Before quantization, the torch.nn rebuild of a bidirectional stack equals Recurrent."""
    torch.manual_seed(1)
    layer = Recurrent("gru", 5, 7, num_layers=2, bidirectional=True).eval()
    rebuilt = TorchRecurrent(layer)
    inputs = torch.randn(2, 6, 5)
    state = tuple(type(s)(*(torch.randn_like(f) for f in s)) for s in layer(inputs)[1])
    expected, expected_state = layer(inputs, state)
    got, got_state = rebuilt(inputs, state)
    torch.testing.assert_close(got, expected, msg="outputs")
    for index, (a, b) in enumerate(zip(got_state, expected_state, strict=True)):
        torch.testing.assert_close(a.h, b.h, msg=f"state {index}")


def test_projection_and_peepholes_stay_float():
    assert torch_layer_reason(Recurrent("lstm", 4, 8, proj_size=3)) is not None
    assert torch_layer_reason(Recurrent("lstm", 4, 8, peephole=True)) is not None
    quantized = quantize_int8(language_model("lstm", proj_size=8))
    assert isinstance(quantized.recurrent, Recurrent)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy")
    text = folder / "small.txt"
    text.write_text(bundled_path().read_text(encoding="utf-8")[:4000], encoding="utf-8")
    command = ["train", "charlm", "--data", str(text), "--steps", "2", "--run-dir"]
    tiny = [
        "--model.embedding_size=8",
        "--model.recurrent.hidden_size=16",
        "--trainer.batch_size=4",
        "--bptt.window=16",
        "--sample.length=5",
    ]
    assert cli.main([*command, str(folder / "run"), *tiny]) == 0
    return folder / "run"


def test_cli_export_charlm_round_trip(tiny_run, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript")
    output = tmp_path / "charlm.onnx"
    command = ["export", str(tiny_run), "--format", "onnx", "--output", str(output)]
    assert cli.main([*command, "--batch-size", "2"]) == 0
    _, model, _, _ = load_trained(tiny_run)
    tokens = torch.randint(0, model.vocabulary_size, (2, 11))
    state = [torch.randn(2, 16), torch.randn(2, 16)]
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    feeds = {"tokens": tokens.numpy(), "state0_h": state[0].numpy(), "state0_c": state[1].numpy()}
    logits, h, c = session.run(None, feeds)
    cell_state = model.recurrent.layer_cells()[0].state_type(*state)
    expected, (final,) = model(tokens, [cell_state])
    for name, got, reference in (
        ("logits", logits, expected),
        ("h", h, final.h),
        ("c", c, final.c),
    ):
        assert np.abs(got - reference.detach().numpy()).max() <= 1e-5, name


def test_cli_export_charlm_torchscript(tiny_run, tmp_path):
    output = tmp_path / "charlm.pt"
    command = ["export", str(tiny_run), "--format", "torchscript", "--output", str(output)]
    assert cli.main(command) == 0
    _, model, _, _ = load_trained(tiny_run)
    tokens = torch.randint(0, model.vocabulary_size, (3, 7))
    logits, state = torch.jit.load(str(output))(tokens, [torch.zeros(3, 16)] * 2)
    expected, (final,) = model(tokens)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0, msg="logits")
    torch.testing.assert_close(state[1], final.c, atol=1e-5, rtol=0, msg="c")


def test_cli_quantize_charlm(tiny_run, tmp_path, capsys):
    output = tmp_path / "charlm.int8.pt"
    assert cli.main(["quantize", str(tiny_run), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    assert "MB int8" in printed and "validation loss" in printed
    quantized = torch.load(output, weights_only=False)
    assert isinstance(quantized.recurrent, TorchRecurrent)


def test_cli_export_refuses_other_tasks(tmp_path, capsys):
    run = tmp_path / "run"
    command = ["train", "add", "--steps", "1", "--run-dir", str(run), "--trainer.batch_size=4"]
    assert cli.main(command) == 0
    assert cli.main(["export", str(run), "--output", str(tmp_path / "x.onnx")]) == 1
    assert "rnnkit export and quantize take runs of charlm, classify" in capsys.readouterr().err
