"""``Recurrent``: any registered cell by name, class or instance, any strategy, stacked and
bidirectional, batch-first or not, padded with lengths or packed."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import CELL_CONFIGS, assert_close, assert_states_close, build_cell, random_state
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from rnnkit.cells import CELLS, GRUCell, JordanCell, LSTMCell
from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES

F64 = torch.float64


def recurrent(config: str, seed: int = 0, **arguments) -> Recurrent:
    name, options = CELL_CONFIGS[config]
    torch.manual_seed(seed)
    return Recurrent(name, 3, 4, **{**options, **arguments}).to(F64)


@pytest.mark.parametrize("config", list(CELL_CONFIGS))
def test_one_layer_by_name_runs_its_cell_with_its_strategy(config):
    layer = recurrent(config, strategy="sequential")
    (cell,) = layer.cells
    name, options = CELL_CONFIGS[config]
    assert isinstance(cell, CELLS[name])
    inputs = torch.randn(2, 6, 3, dtype=F64)
    state = random_state(cell, 2, torch.Generator().manual_seed(0))
    outputs, finals = layer(inputs, (state,), [6, 3])
    expected_outputs, expected_state = STRATEGIES["sequential"](cell, inputs, state, [6, 3])
    assert outputs.shape == (2, 6, cell.output_size) == (2, 6, layer.output_size)
    assert_close(outputs, expected_outputs, "outputs", F64)
    assert len(finals) == 1
    assert_states_close(finals[0], expected_state, "final state", F64)


@pytest.mark.parametrize("cell_class", [LSTMCell, GRUCell, JordanCell])
def test_by_class_equals_by_name(cell_class):
    name = next(name for name, registered in CELLS.items() if registered is cell_class)
    torch.manual_seed(0)
    by_class = Recurrent(cell_class, 3, 4, num_layers=2, bidirectional=True, bias=False)
    torch.manual_seed(0)
    by_name = Recurrent(name, 3, 4, num_layers=2, bidirectional=True, bias=False)
    assert all(type(cell) is cell_class and not cell.bias for cell in by_class.cells)
    inputs = torch.randn(2, 5, 3)
    outputs, finals = by_class(inputs)
    expected_outputs, expected_finals = by_name(inputs)
    assert torch.equal(outputs, expected_outputs)
    for index, (final, expected) in enumerate(zip(finals, expected_finals, strict=True)):
        assert_states_close(final, expected, f"final state[{index}]", torch.float32)


def test_by_instance_uses_that_cell():
    cell = build_cell("lstm_peephole", 3, 4, F64)
    layer = Recurrent(cell, 3, 4, strategy="sequential")
    assert layer.cells[0] is cell
    inputs = torch.randn(2, 5, 3, dtype=F64)
    expected, _ = STRATEGIES["sequential"](cell, inputs)
    assert_close(layer(inputs)[0], expected, "outputs", F64)


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ({"input_size": 4}, r"cell has input_size=3, hidden_size=4; expected input_size=4"),
        ({"num_layers": 2}, r"a Cell instance builds one layer in one direction"),
        ({"bidirectional": True}, r"a Cell instance builds one layer in one direction"),
        ({"proj_size": 2}, r"a Cell instance builds one layer in one direction"),
    ],
)
def test_by_instance_rejects_what_it_cannot_build(arguments, match):
    arguments = {"input_size": 3, "hidden_size": 4, **arguments}
    with pytest.raises(ValueError, match=match):
        Recurrent(LSTMCell(3, 4), **arguments)


def test_cell_of_another_type_is_rejected():
    names = re.escape(str(sorted(CELLS)))
    with pytest.raises(TypeError, match=rf"cell must be a name in {names}.*got int"):
        Recurrent(3, 3, 4)


@pytest.mark.parametrize("config", ["lstm_proj", "gru", "jordan_out5", "lstm_layernorm"])
def test_time_major_input_is_the_transpose_of_batch_first(config):
    batch_first = recurrent(config, num_layers=2, bidirectional=True)
    time_major = recurrent(config, num_layers=2, bidirectional=True, batch_first=False)
    time_major.load_state_dict(batch_first.state_dict())
    inputs = torch.randn(3, 6, 3, dtype=F64)
    lengths = [6, 2, 5]
    expected_outputs, expected_finals = batch_first(inputs, lengths=lengths)
    outputs, finals = time_major(inputs.transpose(0, 1), lengths=lengths)
    assert outputs.shape == (6, 3, time_major.output_size)
    assert_close(outputs.transpose(0, 1), expected_outputs, "outputs", F64)
    for index, (final, expected) in enumerate(zip(finals, expected_finals, strict=True)):
        assert_states_close(final, expected, f"final state[{index}]", F64)


@pytest.mark.parametrize("config", ["lstm", "gru", "jordan_out5", "lstm_peephole"])
@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
def test_packed_sequence_equals_padded_with_lengths(config, enforce_sorted):
    layer = recurrent(config, num_layers=2, bidirectional=True)
    lengths = [6, 4, 4, 1] if enforce_sorted else [4, 6, 1, 4]
    generator = torch.Generator().manual_seed(0)
    padded = torch.randn(4, 6, 3, dtype=F64, generator=generator)
    states = tuple(random_state(cell, 4, generator) for cell in layer.cells)
    expected_outputs, expected_finals = layer(padded, states, lengths)
    packed = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=enforce_sorted)
    outputs, finals = layer(packed, states)
    assert isinstance(outputs, PackedSequence)
    expected_packed = pack_padded_sequence(
        expected_outputs, lengths, batch_first=True, enforce_sorted=enforce_sorted
    )
    assert_close(outputs.data, expected_packed.data, "packed outputs", F64)
    assert torch.equal(outputs.batch_sizes, expected_packed.batch_sizes)
    for index, (final, expected) in enumerate(zip(finals, expected_finals, strict=True)):
        assert_states_close(final, expected, f"final state[{index}]", F64)
    with pytest.raises(
        ValueError,
        match=r"lengths must be None when inputs is a PackedSequence \(it carries its own\), got",
    ):
        layer(packed, lengths=lengths)


@pytest.mark.parametrize("config", ["lstm_proj", "gru", "jordan_out5", "elman_relu"])
def test_reverse_direction_reads_each_sequence_backwards_within_its_length(config):
    """The reverse cell's half of the outputs is what the cell gives on each sequence
    reversed alone, reversed back; its final state is the one after the sequence's first step."""
    layer = recurrent(config, bidirectional=True, strategy="sequential")
    reverse_cell = layer.cells[1]
    inputs = torch.randn(3, 6, 3, dtype=F64)
    lengths = [6, 2, 4]
    outputs, finals = layer(inputs, lengths=lengths)
    size = reverse_cell.output_size
    for row, length in enumerate(lengths):
        alone = inputs[row : row + 1, :length].flip(1)
        alone_outputs, alone_final = STRATEGIES["sequential"](reverse_cell, alone)
        expected = alone_outputs.flip(1)
        assert_close(outputs[row : row + 1, :length, size:], expected, f"reverse[{row}]", F64)
        assert not outputs[row, length:].any(), f"padded outputs[{row}] not zero"
        final = type(alone_final)(*(field[row : row + 1] for field in finals[1]))
        assert_states_close(final, alone_final, f"reverse final state[{row}]", F64)


@pytest.mark.parametrize(
    ("config", "arguments", "expected"),
    [
        ("lstm", {}, 4),
        ("lstm_proj", {"bidirectional": True}, 4),
        ("jordan_out5", {"num_layers": 2}, 5),
        ("jordan_out5", {"bidirectional": True, "num_layers": 2}, 10),
        ("gru", {"bidirectional": True}, 8),
    ],
)
def test_output_size(config, arguments, expected):
    layer = recurrent(config, **arguments)
    assert layer.output_size == expected
    outputs, finals = layer(torch.randn(2, 3, 3, dtype=F64))
    assert outputs.shape == (2, 3, expected)
    assert len(finals) == layer.num_layers * layer.num_directions == len(layer.cells)


def test_describe_strategy():
    layer = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True)
    assert layer.describe_strategy() == "\n".join(
        f"layer {layer_index}{direction}: auto -> native "
        "(torch's fused 'lstm' kernel computes this cell)"
        for layer_index in (0, 1)
        for direction in ("", " reverse")
    )
    peephole = Recurrent("lstm", 3, 4, peephole=True)
    assert peephole.describe_strategy().startswith(
        "layer 0: auto -> fused "
        "(peephole connections are not supported by torch's fused LSTM kernel"
    )
    assert Recurrent("jordan", 3, 4).describe_strategy().startswith("layer 0: auto -> fused")
    explicit = Recurrent("gru", 3, 4, num_layers=2, strategy="sequential")
    assert explicit.describe_strategy() == "layer 0: sequential\nlayer 1: sequential"


def test_describe_strategy_follows_the_training_mode():
    layer = Recurrent("gru", 3, 4, hidden_dropout=0.2)
    assert "auto -> native" in layer.eval().describe_strategy()
    assert "auto -> fused (recurrent dropout in training" in layer.train().describe_strategy()


def test_dropout_between_layers_only_in_training():
    layer = recurrent("gru", num_layers=2, dropout=0.5)
    inputs = torch.randn(2, 5, 3, dtype=F64)
    layer.eval()
    first, second = layer(inputs)[0], layer(inputs)[0]
    assert torch.equal(first, second)
    layer.train()
    assert not torch.allclose(layer(inputs)[0], first)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"cell": "transformer"}, ValueError, r"unknown cell 'transformer'; registered cells"),
        ({"strategy": "magic"}, ValueError, r"unknown strategy 'magic'; registered strategies"),
        ({"num_layers": 0}, ValueError, r"num_layers must be a positive integer, got 0"),
        ({"dropout": 1.0}, ValueError, r"dropout must be a probability in \[0, 1\), got 1.0"),
        ({"hidden_size": 0}, ValueError, r"hidden_size must be a positive integer, got 0"),
        ({"cell": "gru", "proj_size": 2}, TypeError, r"proj_size"),
    ],
)
def test_constructor_errors(arguments, error, match):
    arguments = {"cell": "lstm", "input_size": 3, "hidden_size": 4, **arguments}
    with pytest.raises(error, match=match):
        Recurrent(**arguments)


def test_state_count_mismatch():
    layer = Recurrent("lstm", 3, 4, num_layers=2, bidirectional=True)
    states = [cell.initial_state(2) for cell in layer.cells]
    with pytest.raises(ValueError, match=r"one state per layer and direction \(4\), got 3"):
        layer(torch.randn(2, 5, 3), states[:3])


def test_state_of_a_layer_is_checked_by_the_strategy():
    layer = Recurrent("lstm", 3, 4, num_layers=2, proj_size=2).to(F64)
    states = [cell.initial_state(2) for cell in layer.cells]
    states[1] = type(states[1])(torch.zeros(2, 4, dtype=F64), states[1].c)
    with pytest.raises(ValueError, match=r"state.h must have shape \(2, 2\), got \(2, 4\)"):
        layer(torch.randn(2, 5, 3, dtype=F64), states)
