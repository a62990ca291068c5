"""A PackedSequence goes straight into the fused kernel: equal to torch.nn (values, gradients),
sorted and unsorted, stacked and bidirectional, with no pad or pack on the way (float64)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close
from torch.nn.utils.rnn import pack_padded_sequence

import rnnkit.nn
import rnnkit.nn.packing

F64 = torch.float64
MODES = {"LSTM": {}, "GRU": {}, "RNN_TANH": {}, "RNN_RELU": {"nonlinearity": "relu"}}


def make_pair(mode: str, **arguments):
    class_name = "RNN" if mode.startswith("RNN") else mode
    arguments = {**MODES[mode], **arguments}
    torch.manual_seed(0)
    reference = getattr(torch.nn, class_name)(**arguments).to(F64)
    torch.manual_seed(0)
    layer = getattr(rnnkit.nn, class_name)(**arguments).to(F64)
    return reference, layer


def no_padding(*args, **kwargs):
    raise AssertionError("a packed input went through a pad/pack round trip")


def fields(hidden):
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


@pytest.mark.parametrize("with_hx", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("layout", [(1, False), (2, False), (2, True)], ids=["L1", "L2", "L2-bi"])
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("mode", list(MODES))
def test_packed_input_equals_torch_without_padding(
    monkeypatch, mode, enforce_sorted, layout, with_hx
):
    num_layers, bidirectional = layout
    projection = {"proj_size": 2} if mode == "LSTM" and num_layers == 2 else {}
    arguments = dict(input_size=3, hidden_size=4, num_layers=num_layers, **projection)
    reference, layer = make_pair(mode, bidirectional=bidirectional, **arguments)
    lengths = torch.tensor([5, 4, 2]) if enforce_sorted else torch.tensor([2, 5, 4])
    padded = torch.randn(5, 3, 3, dtype=F64, requires_grad=True)  # (T, B, D)
    packed = pack_padded_sequence(padded, lengths, enforce_sorted=enforce_sorted)
    count = num_layers * (2 if bidirectional else 1)
    hx = None
    if with_hx:
        output_size = projection.get("proj_size", 4)
        h0 = torch.randn(count, 3, output_size, dtype=F64, requires_grad=True)
        hx = (h0, torch.randn(count, 3, 4, dtype=F64, requires_grad=True)) if mode == "LSTM" else h0
    expected, expected_hidden = reference(packed, hx)
    for name in ("unpack", "repack"):
        monkeypatch.setattr(rnnkit.nn.packing, name, no_padding)
    monkeypatch.setattr(rnnkit.nn.torch_compat, "unpack", no_padding)
    monkeypatch.setattr(rnnkit.nn.torch_compat, "repack", no_padding)
    got, got_hidden = layer(packed, hx)
    assert torch.equal(got.batch_sizes, expected.batch_sizes), "batch_sizes differ"
    for name in ("sorted_indices", "unsorted_indices"):
        want = getattr(expected, name)
        have = getattr(got, name)
        assert (want is None and have is None) or torch.equal(have, want), f"{name} differs"
    assert_close(got.data, expected.data, "output data", F64)
    for index, (have, want) in enumerate(
        zip(fields(got_hidden), fields(expected_hidden), strict=True)
    ):
        assert_close(have, want, f"hidden[{index}]", F64)
    loss = got.data.square().sum() + sum(field.square().sum() for field in fields(got_hidden))
    expected_loss = expected.data.square().sum() + sum(
        field.square().sum() for field in fields(expected_hidden)
    )
    leaves = [padded, *([] if hx is None else fields(hx))]
    # the packing of the inputs is shared by both graphs
    got_gradients = torch.autograd.grad(loss, [*leaves, *layer.parameters()], retain_graph=True)
    expected_gradients = torch.autograd.grad(expected_loss, [*leaves, *reference.parameters()])
    names = ["input", *(f"hx[{i}]" for i in range(len(leaves) - 1))]
    names += [name for name, _ in layer.named_parameters()]
    for name, have, want in zip(names, got_gradients, expected_gradients, strict=True):
        assert_close(have, want, f"gradient of {name}", F64)


def test_packed_input_with_a_non_native_strategy_still_equals_torch():
    reference, layer = make_pair("GRU", input_size=3, hidden_size=4)
    layer = rnnkit.nn.GRU(3, 4, strategy="sequential").to(F64)
    layer.load_state_dict(reference.state_dict())
    packed = pack_padded_sequence(
        torch.randn(5, 3, 3, dtype=F64), torch.tensor([2, 5, 4]), enforce_sorted=False
    )
    expected, expected_hidden = reference(packed)
    got, got_hidden = layer(packed)
    assert_close(got.data, expected.data, "output data", F64)
    assert_close(got_hidden, expected_hidden, "hidden", F64)


def test_packed_hx_shape_error_is_torchs():
    _, layer = make_pair("GRU", input_size=3, hidden_size=4)
    packed = pack_padded_sequence(torch.randn(5, 3, 3, dtype=F64), torch.tensor([5, 4, 2]))
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 3, 4\), got \[2, 3, 4\]"):
        layer(packed, torch.zeros(2, 3, 4, dtype=F64))
