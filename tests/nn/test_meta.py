"""Forward on meta tensors gives the shapes, dtypes and device torch.nn gives, with no values."""

from __future__ import annotations

import pytest
import torch

import rnnkit.nn

LAYERS = {"LSTM": rnnkit.nn.LSTM, "GRU": rnnkit.nn.GRU, "RNN": rnnkit.nn.RNN}


@pytest.mark.parametrize("strategy", ["auto", "sequential"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_drop_in_forward_on_meta_matches_torch_shapes(name, strategy):
    layer = LAYERS[name](3, 4, num_layers=2, device="meta", strategy=strategy)
    reference = getattr(torch.nn, name)(3, 4, num_layers=2, device="meta")
    inputs = torch.empty(5, 2, 3, device="meta")
    hx = torch.empty(2, 2, 4, device="meta")
    hx = (hx, hx) if name == "LSTM" else hx
    outputs, hidden = layer(inputs, hx)
    expected, expected_hidden = reference(inputs, hx)
    assert outputs.is_meta and outputs.shape == expected.shape
    fields = hidden if name == "LSTM" else (hidden,)
    expected_fields = expected_hidden if name == "LSTM" else (expected_hidden,)
    for field, expected_field in zip(fields, expected_fields, strict=True):
        assert field.is_meta and field.shape == expected_field.shape


@pytest.mark.parametrize("cell", ["gru", "lstm", "mingru"])
def test_recurrent_forward_and_step_on_meta(cell):
    layer = rnnkit.nn.Recurrent(cell, 3, 4, num_layers=2).to("meta")
    outputs, states = layer(torch.empty(2, 5, 3, device="meta"))
    assert outputs.is_meta and outputs.shape == (2, 5, 4)
    assert all(field.is_meta for state in states for field in state)
    output, _ = layer.step(torch.empty(2, 3, device="meta"), states)
    assert output.is_meta and output.shape == (2, 4)
