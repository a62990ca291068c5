"""The cell protocol and the classic cells' mathematics, one step at a time."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import CELL_CONFIGS, assert_close, assert_states_close, build_cell, random_state
from torch import nn
from torch.func import functional_call

from rnnkit.cells import (
    CELLS,
    ElmanCell,
    GRUCell,
    HiddenState,
    JordanCell,
    LSTMCell,
    LSTMState,
    OutputState,
    make_cell,
)
from rnnkit.strategies import STRATEGIES

F64 = torch.float64


class StepOnce(nn.Module):
    """``cell.step`` as a module, so that ``functional_call`` can substitute the parameters.

    The sequence's noise (dropout masks, dropped weights) is drawn from a fixed seed inside
    the call, so every evaluation of gradcheck sees the same masks and gradients flow through
    the dropped recurrent weight."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, inputs, *state_fields):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.cell.begin_sequence(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
        output, state = self.cell.step(inputs, self.cell.state_type(*state_fields))
        return (output, *state)


class RunSequence(StepOnce):
    """The sequential reference over ``(B, T, D)`` inputs with lengths, as a module."""

    def forward(self, inputs, *state_fields):
        state = self.cell.state_type(*state_fields)
        outputs, final = STRATEGIES["sequential"](self.cell, inputs, state, [4, 2])
        return (outputs, *final)


def gradcheck_module(module: nn.Module, inputs, state) -> None:
    names = [name for name, _ in module.named_parameters()]
    parameters = [parameter.detach().clone().requires_grad_() for parameter in module.parameters()]
    fields = len(state)

    def function(*tensors):
        parameter_values = dict(zip(names, tensors[1 + fields :], strict=True))
        return functional_call(module, parameter_values, tensors[: 1 + fields])

    outputs = function(inputs, *state, *parameters)
    total = sum(output.sum() for output in outputs)
    gradients = torch.autograd.grad(total, parameters, allow_unused=True)
    unused = [name for name, gradient in zip(names, gradients, strict=True) if gradient is None]
    assert not unused, f"outputs do not depend on {unused}"
    assert torch.autograd.gradcheck(function, (inputs, *state, *parameters))


REGULARIZED = {
    "gru-zoneout-eval": ("gru", {"zoneout": 0.3}, False),
    "lstm_proj-zoneout-eval": ("lstm_proj", {"zoneout": 0.3}, False),
    "elman-dropout-train": ("elman", {"input_dropout": 0.3, "hidden_dropout": 0.3}, True),
    "lstm_proj-dropout-train": (
        "lstm_proj",
        {"input_dropout": 0.3, "hidden_dropout": 0.3, "weight_dropout": 0.3},
        True,
    ),
    "jordan_out5-dropout-train": (
        "jordan_out5",
        {"hidden_dropout": 0.3, "weight_dropout": 0.3},
        True,
    ),
    "gru-dropout-train": ("gru", {"hidden_dropout": 0.3, "weight_dropout": 0.3}, True),
}
GRADCHECK_CASES = [pytest.param(config, {}, False, id=config) for config in CELL_CONFIGS] + [
    pytest.param(*case, id=case_id) for case_id, case in REGULARIZED.items()
]


def gradcheck_hidden_size(config: str) -> int:
    """3 (odd, so no size coincides), or 4 for configs with heads (divisible by 2)."""
    return 4 if config.endswith("_heads") else 3


@pytest.mark.parametrize(("config", "options", "training"), GRADCHECK_CASES)
def test_step_passes_gradcheck(config, options, training):
    cell = build_cell(config, 2, gradcheck_hidden_size(config), F64, **options).train(training)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 2, dtype=F64, generator=generator, requires_grad=True)
    gradcheck_module(StepOnce(cell), inputs, random_state(cell, 2, generator))


# gradcheck through the layer-norm LSTMs takes 100-130 s each under load: marked slow.
SLOW_GRADCHECK = {"lstm_layernorm", "lstm_peephole_layernorm"}


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(config, marks=[pytest.mark.slow] if config in SLOW_GRADCHECK else [])
        for config in CELL_CONFIGS
    ],
)
def test_sequential_run_with_lengths_passes_gradcheck(config):
    cell = build_cell(config, 2, gradcheck_hidden_size(config), F64)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(2, 4, 2, dtype=F64, generator=generator, requires_grad=True)
    gradcheck_module(RunSequence(cell), inputs, random_state(cell, 2, generator))


@pytest.mark.parametrize("config", list(CELL_CONFIGS))
def test_step_is_recur_of_projected_inputs_and_projection_is_time_parallel(config):
    cell = build_cell(config, 3, 4, F64)
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(2, 5, 3, dtype=F64, generator=generator)
    state = random_state(cell, 2, generator)

    output, new_state = cell.step(inputs[:, 0], state)
    expected_output, expected_state = cell.recur(cell.project_inputs(inputs[:, 0]), state)
    assert_close(output, expected_output, "step output", F64)
    assert_states_close(new_state, expected_state, "step state", F64)

    projected = cell.project_inputs(inputs)
    for step in range(inputs.shape[1]):
        expected = cell.project_inputs(inputs[:, step])
        assert_close(projected[:, step], expected, f"project_inputs(x)[:, {step}]", F64)


# config -> (output_size, state_sizes, state type) for input_size 3, hidden_size 4
SIZES = {
    "elman": (4, (4,), HiddenState),
    "elman_relu": (4, (4,), HiddenState),
    "jordan": (4, (4,), OutputState),
    "jordan_out5": (5, (5,), OutputState),
    "lstm": (4, (4, 4), LSTMState),
    "lstm_nobias": (4, (4, 4), LSTMState),
    "lstm_proj": (2, (2, 4), LSTMState),
    "lstm_peephole": (4, (4, 4), LSTMState),
    "lstm_layernorm": (4, (4, 4), LSTMState),
    "lstm_peephole_layernorm": (4, (4, 4), LSTMState),
    "gru": (4, (4,), HiddenState),
    "gru_nobias": (4, (4,), HiddenState),
    "elman_heads": (4, (4,), HiddenState),
    "lstm_heads": (4, (4, 4), LSTMState),
    "gru_heads": (4, (4,), HiddenState),
}


def test_sizes_table_covers_every_config():
    assert set(SIZES) == set(CELL_CONFIGS)


@pytest.mark.parametrize("config", list(CELL_CONFIGS))
def test_output_size_state_sizes_and_initial_state(config):
    output_size, state_sizes, state_type = SIZES[config]
    cell = build_cell(config, 3, 4, F64)
    assert cell.output_size == output_size
    assert cell.state_sizes() == state_sizes
    assert cell.state_type is state_type

    state = cell.initial_state(3)
    assert type(state) is state_type
    for field, size in zip(state, state_sizes, strict=True):
        assert field.shape == (3, size)
        assert field.dtype == F64, "initial_state must default to the parameters' dtype"
        assert not field.any()
    assert all(field.dtype == torch.float32 for field in cell.initial_state(2, dtype=torch.float32))
    assert all(field.device.type == "cpu" for field in cell.initial_state(2, device="cpu"))

    output, new_state = cell.step(torch.randn(3, 3, dtype=F64), state)
    assert output.shape == (3, output_size)
    assert [tuple(field.shape) for field in new_state] == [(3, size) for size in state_sizes]
    assert torch.equal(output, new_state[0]), "y_t is the first field of the new state"


@pytest.mark.parametrize("config", ["elman", "jordan_out5", "lstm_proj", "gru"])
def test_flatten_state_round_trip(config):
    cell = build_cell(config, 3, 4, F64)
    state = random_state(cell, 2, torch.Generator().manual_seed(3))
    flat = cell.flatten_state(state)
    assert flat.shape == (2, sum(cell.state_sizes()))
    assert torch.equal(flat, torch.cat(tuple(state), -1))
    assert_states_close(cell.unflatten_state(flat), state, "unflattened state", F64)


def test_state_field_names():
    assert LSTMState._fields == ("h", "c")
    assert HiddenState._fields == ("h",)
    assert OutputState._fields == ("y",)


def test_cells_registry():
    classic = {"elman": ElmanCell, "jordan": JordanCell, "lstm": LSTMCell, "gru": GRUCell}
    assert {name: CELLS[name] for name in classic} == classic
    for name, cell_class in CELLS.items():
        cell = make_cell(name, 3, 4)
        assert type(cell) is cell_class, f"make_cell({name!r}) built {type(cell).__name__}"
        assert (cell.input_size, cell.hidden_size) == (3, 4)
    cell = make_cell("gru", 3, 4, bias=False)
    assert isinstance(cell, GRUCell)
    assert (cell.input_size, cell.hidden_size, cell.bias) == (3, 4, False)


def test_unknown_cell_name_lists_the_registered_ones():
    registered = re.escape(", ".join(sorted(CELLS)))
    match = rf"unknown cell 'transformer'; registered cells: {registered}$"
    with pytest.raises(ValueError, match=match):
        make_cell("transformer", 3, 4)


@pytest.mark.parametrize(
    ("name", "arguments", "options", "match"),
    [
        ("elman", (0, 4), {}, r"input_size must be a positive integer, got 0"),
        ("gru", (3, -1), {}, r"hidden_size must be a positive integer, got -1"),
        ("lstm", (3, 2.5), {}, r"hidden_size must be a positive integer, got 2.5"),
        ("jordan", (3, True), {}, r"hidden_size must be a positive integer, got True"),
        ("lstm", (3, 4), {"proj_size": 4}, r"proj_size has to be smaller than hidden_size"),
        ("lstm", (3, 4), {"proj_size": -1}, r"proj_size must be a positive integer, got -1"),
        ("lstm", (3, 4), {"forget_bias": 1.0, "bias": False}, r"forget_bias needs bias=True"),
        ("elman", (3, 4), {"nonlinearity": "sigmoid"}, r"Unknown nonlinearity 'sigmoid'"),
        ("jordan", (3, 4), {"output_size": 0}, r"output_size must be a positive integer, got 0"),
        ("gru", (3, 4), {"zoneout": 1.0}, r"zoneout must be a probability in \[0, 1\), got 1.0"),
        ("lstm", (3, 4), {"input_dropout": -0.1}, r"input_dropout must be a probability"),
        ("elman", (3, 4), {"weight_dropout": "0.5"}, r"weight_dropout must be a probability"),
    ],
)
def test_constructor_rejects_bad_arguments(name, arguments, options, match):
    with pytest.raises(ValueError, match=match):
        make_cell(name, *arguments, **options)


def layer_norm(values, gain, shift=None, eps=1e-5):
    """Ba et al. 2016: normalize over the last dimension, then scale and shift."""
    mean = values.mean(-1, keepdim=True)
    variance = ((values - mean) ** 2).mean(-1, keepdim=True)
    normalized = (values - mean) / torch.sqrt(variance + eps) * gain
    return normalized if shift is None else normalized + shift


def hand_lstm_step(cell, x, h, c):
    """The equations of the ``rnnkit.cells.lstm`` docstring, written out gate by gate."""
    size = cell.hidden_size
    input_part = x @ cell.weight_ih.T
    hidden_part = h @ cell.weight_hh.T
    if cell.layer_norm:
        input_part = layer_norm(input_part, cell.norm_input.weight)
        hidden_part = layer_norm(hidden_part, cell.norm_hidden.weight)
    gates = input_part + hidden_part
    if cell.bias:
        gates = gates + cell.bias_ih + cell.bias_hh
    i_pre, f_pre, g_pre, o_pre = (gates[:, k * size : (k + 1) * size] for k in range(4))
    if cell.peephole:
        i_pre = i_pre + cell.weight_ci * c
        f_pre = f_pre + cell.weight_cf * c
    c_new = torch.sigmoid(f_pre) * c + torch.sigmoid(i_pre) * torch.tanh(g_pre)
    if cell.peephole:
        o_pre = o_pre + cell.weight_co * c_new
    cell_out = c_new
    if cell.layer_norm:
        cell_out = layer_norm(c_new, cell.norm_cell.weight, cell.norm_cell.bias)
    h_new = torch.sigmoid(o_pre) * torch.tanh(cell_out)
    if cell.proj_size:
        h_new = h_new @ cell.weight_hr.T
    return h_new, c_new


@pytest.mark.parametrize(
    ("config", "options"),
    [
        ("lstm", {}),
        ("lstm_nobias", {}),
        ("lstm_proj", {}),
        ("lstm_peephole", {}),
        ("lstm_layernorm", {}),
        ("lstm_layernorm", {"bias": False}),
        ("lstm_peephole_layernorm", {}),
        ("lstm_peephole_layernorm", {"proj_size": 3}),
    ],
)
def test_lstm_matches_hand_written_equations(config, options):
    cell = build_cell(config, 3, 5, F64, **options)
    generator = torch.Generator().manual_seed(5)
    h, c = random_state(cell, 2, generator)
    state = LSTMState(h, c)
    for step in range(3):
        x = torch.randn(2, 3, dtype=F64, generator=generator)
        output, state = cell.step(x, state)
        h, c = hand_lstm_step(cell, x, h, c)
        assert_close(state.c, c, f"c at step {step}", F64)
        assert_close(state.h, h, f"h at step {step}", F64)
        assert_close(output, h, f"output at step {step}", F64)


@pytest.mark.parametrize("config", ["jordan", "jordan_out5"])
def test_jordan_matches_hand_written_equations(config):
    cell = build_cell(config, 3, 4, F64)
    generator = torch.Generator().manual_seed(6)
    (y,) = state = random_state(cell, 2, generator)
    for step in range(3):
        x = torch.randn(2, 3, dtype=F64, generator=generator)
        output, state = cell.step(x, state)
        pre_activation = x @ cell.weight_ih.T + cell.bias_ih + y @ cell.weight_hh.T + cell.bias_hh
        hidden = torch.tanh(pre_activation)
        y = torch.tanh(hidden @ cell.weight_ho.T + cell.bias_ho)
        assert_close(output, y, f"y at step {step}", F64)
        assert_close(state.y, y, f"state.y at step {step}", F64)


@pytest.mark.parametrize("layer_norm", [False, True])
def test_forget_bias_initializes_the_forget_slice(layer_norm):
    torch.manual_seed(0)
    cell = LSTMCell(3, 4, forget_bias=1.0, layer_norm=layer_norm)
    for _ in range(2):  # at construction and after reset_parameters
        forget = slice(4, 8)
        assert torch.equal(cell.bias_ih[forget], torch.ones(4))
        assert torch.equal(cell.bias_hh[forget], torch.zeros(4))
        others = torch.cat([cell.bias_ih[:4], cell.bias_ih[8:], cell.bias_hh[:4], cell.bias_hh[8:]])
        assert others.abs().max() <= 0.5, "other gate biases keep the U(-1/sqrt(H), 1/sqrt(H)) init"
        assert others.unique().numel() == others.numel()
        cell.reset_parameters()


def test_without_forget_bias_the_forget_slice_is_uniform():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4)
    forget = cell.bias_ih[4:8]
    assert forget.abs().max() <= 0.5
    assert forget.unique().numel() == 4
