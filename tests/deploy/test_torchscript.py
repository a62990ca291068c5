"""TorchScript export: the saved file against the eager module, at two batch sizes and two
sequence lengths from one file; streaming in two chunks; what it refuses."""

from __future__ import annotations

import pytest
import torch

import rnnkit.nn as rnn
from rnnkit.deploy import ExportError
from rnnkit.deploy.torchscript import export_torchscript
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.recurrent_config import RecurrentConfig

TOLERANCE = 1e-5


def assert_close(name: str, got: torch.Tensor, expected: torch.Tensor) -> None:
    difference = float((got - expected.detach()).abs().max())
    assert got.shape == expected.shape, f"{name}: shape {tuple(got.shape)}"
    assert difference <= TOLERANCE, f"{name}: TorchScript differs from eager by {difference:.2e}"


def test_stacked_lstm_any_batch_and_length(tmp_path):
    torch.manual_seed(0)
    layer = rnn.LSTM(4, 8, num_layers=2).eval()  # (T, B, D)
    assert export_torchscript(layer, tmp_path / "lstm.pt") == ["h0", "c0"]
    loaded = torch.jit.load(str(tmp_path / "lstm.pt"))
    for batch, steps in [(1, 2), (3, 7)]:
        inputs = torch.randn(steps, batch, 4)
        h0, c0 = torch.randn(2, batch, 8), torch.randn(2, batch, 8)
        output, (h, c) = loaded(inputs, [h0, c0])
        expected, (expected_h, expected_c) = layer(inputs, (h0, c0))
        assert_close(f"output B{batch} T{steps}", output, expected)
        assert_close("hn", h, expected_h)
        assert_close("cn", c, expected_c)


def test_language_model_streams_in_chunks(tmp_path):
    torch.manual_seed(1)
    recurrent = RecurrentConfig(cell="gla", hidden_size=16, strategy="scan")
    model = LanguageModel(LanguageModelConfig(embedding_size=8, recurrent=recurrent), 13).eval()
    export_torchscript(model, tmp_path / "lm.pt")
    loaded = torch.jit.load(str(tmp_path / "lm.pt"))
    tokens = torch.randint(0, 13, (2, 9))
    state = [field for field in model.recurrent.layer_cells()[0].initial_state(2)]
    first, state = loaded(tokens[:, :5], state)
    second, state = loaded(tokens[:, 5:], state)
    logits, (final,) = model(tokens)
    assert_close("logits", torch.cat([first, second], 1), logits)
    assert_close("final state", state[0], final[0])


@pytest.mark.parametrize("lengths", [False, True])
def test_refuses_bidirectional_and_lengths(tmp_path, lengths):
    from rnnkit.models.sequence_classifier import SequenceClassifier, SequenceClassifierConfig

    if lengths:  # a classifier takes lengths
        module = SequenceClassifier(SequenceClassifierConfig(), input_size=3, num_classes=2)
    else:
        module = rnn.GRU(4, 8, bidirectional=True)
    with pytest.raises(ExportError, match="unidirectional model without lengths"):
        export_torchscript(module, tmp_path / "never.pt")
