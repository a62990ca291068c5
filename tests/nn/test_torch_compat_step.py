"""``step`` on the drop-ins: one token at a time equals ``forward`` over the sequence (f64)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close as assert_close_at

import rnnkit.nn

F64 = torch.float64


def assert_close(actual, expected, name):
    assert_close_at(actual, expected, name, F64)


MODES = {"LSTM": {}, "GRU": {}, "RNN_TANH": {}, "RNN_RELU": {"nonlinearity": "relu"}}


def make_layer(mode: str, **arguments):
    class_name = "RNN" if mode.startswith("RNN") else mode
    torch.manual_seed(0)
    return getattr(rnnkit.nn, class_name)(**MODES[mode], **arguments).to(F64)


def random_hx(mode: str, layers: int, batch_shape: tuple, hidden: int, output: int):
    h = torch.randn(layers, *batch_shape, output, dtype=F64)
    return (h, torch.randn(layers, *batch_shape, hidden, dtype=F64)) if mode == "LSTM" else h


def fields(hidden):
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["TBD", "BTD"])
@pytest.mark.parametrize("mode", list(MODES))
def test_step_equals_forward_step_by_step(mode, batch_first, with_hx):
    projection = {"proj_size": 3} if mode == "LSTM" else {}
    layer = make_layer(
        mode, input_size=4, hidden_size=5, num_layers=2, batch_first=batch_first, **projection
    )
    inputs = torch.randn(3, 6, 4, dtype=F64)  # (B, T, D)
    hx = random_hx(mode, 2, (3,), 5, 3 if projection else 5) if with_hx else None
    expected, expected_hidden = layer(inputs if batch_first else inputs.transpose(0, 1), hx)
    expected = expected if batch_first else expected.transpose(0, 1)
    hidden = hx
    for t in range(inputs.shape[1]):
        output, hidden = layer.step(inputs[:, t], hidden)
        assert_close(output, expected[:, t], name=f"output at step {t}")
    for index, (got, want) in enumerate(zip(fields(hidden), fields(expected_hidden), strict=True)):
        assert_close(got, want, name=f"hidden[{index}]")


@pytest.mark.parametrize("mode", list(MODES))
def test_unbatched_step_equals_unbatched_forward(mode):
    layer = make_layer(mode, input_size=4, hidden_size=5)
    inputs = torch.randn(6, 4, dtype=F64)  # (T, D)
    hx = random_hx(mode, 1, (), 5, 5)
    expected, expected_hidden = layer(inputs, hx)
    hidden = hx
    for t in range(inputs.shape[0]):
        output, hidden = layer.step(inputs[t], hidden)
        assert output.shape == (5,)
        assert_close(output, expected[t], name=f"output at step {t}")
    for index, (got, want) in enumerate(zip(fields(hidden), fields(expected_hidden), strict=True)):
        assert_close(got, want, name=f"hidden[{index}]")


def test_step_gradients_equal_forward_gradients():
    layer = make_layer("LSTM", input_size=4, hidden_size=5, num_layers=2, batch_first=True)
    inputs = torch.randn(2, 5, 4, dtype=F64, requires_grad=True)
    output, _ = layer(inputs)
    expected = torch.autograd.grad(output.square().sum(), [inputs, *layer.parameters()])
    hidden, total = None, 0
    for t in range(inputs.shape[1]):
        step_output, hidden = layer.step(inputs[:, t], hidden)
        total = total + step_output.square().sum()
    got = torch.autograd.grad(total, [inputs, *layer.parameters()])
    names = ["inputs", *(name for name, _ in layer.named_parameters())]
    for name, got_gradient, expected_gradient in zip(names, got, expected, strict=True):
        assert_close(got_gradient, expected_gradient, name=f"gradient of {name}")


def test_step_refuses_bidirectional_layers():
    layer = make_layer("GRU", input_size=4, hidden_size=5, bidirectional=True)
    with pytest.raises(ValueError, match="unidirectional layer"):
        layer.step(torch.randn(2, 4, dtype=F64))


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        (torch.randn(2, 3, 4, dtype=F64), ValueError, r"shape \(B, 4\) or \(4,\), got 3-D"),
        (torch.randn(2, 7, dtype=F64), RuntimeError, "Expected 4, got 7"),
    ],
    ids=["3d-input", "wrong-features"],
)
def test_step_input_errors(inputs, error, message):
    layer = make_layer("LSTM", input_size=4, hidden_size=5)
    with pytest.raises(error, match=message):
        layer.step(inputs)


def test_step_hx_shape_error_is_forwards():
    layer = make_layer("GRU", input_size=4, hidden_size=5, num_layers=2)
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(2, 3, 5\), got \[1, 3, 5\]"):
        layer.step(torch.randn(3, 4, dtype=F64), torch.zeros(1, 3, 5, dtype=F64))
