"""Every strategy validates its arguments before it runs: errors name the argument, what was
expected and what was got."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import build_cell, fast_strategies

from rnnkit.cells import CELLS, LSTMState, make_cell
from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError, get_strategy

F64 = torch.float64


@pytest.fixture
def lstm():
    """An LSTM cell (input_size 4, hidden_size 6, proj_size 3)."""
    return make_cell("lstm", 4, 6, proj_size=3).to(F64)


# the strategies that can run that cell (scan strategies, for linear cells, refuse it)
STRATEGY_NAMES = ["sequential", *fast_strategies(make_cell("lstm", 4, 6, proj_size=3).double())]


def good_inputs(batch_size: int = 3, steps: int = 5):
    return torch.randn(batch_size, steps, 4, dtype=F64)


INPUT_ERRORS = {
    "rank-2": (
        torch.zeros(3, 4, dtype=F64),
        ValueError,
        r"inputs must have shape \(batch, time, 4\), got a 2-D tensor of shape \(3, 4\)",
    ),
    "rank-4": (
        torch.zeros(3, 5, 4, 1, dtype=F64),
        ValueError,
        r"inputs must have shape \(batch, time, 4\), got a 4-D tensor",
    ),
    "feature-size": (
        torch.zeros(3, 5, 7, dtype=F64),
        ValueError,
        r"inputs must have 4 features \(input_size\), got 7 in shape \(3, 5, 7\)",
    ),
    "dtype": (
        torch.zeros(3, 5, 4),
        TypeError,
        r"inputs must have the cell's dtype torch.float64, got torch.float32",
    ),
    "integer": (
        torch.zeros(3, 5, 4, dtype=torch.int64),
        TypeError,
        r"inputs must have the cell's dtype torch.float64, got torch.int64",
    ),
    "nan": (
        torch.zeros(3, 5, 4, dtype=F64).index_fill(1, torch.tensor([2]), float("nan")),
        ValueError,
        r"inputs contain NaN or infinite values",
    ),
    "infinite": (
        torch.full((3, 5, 4), float("-inf"), dtype=F64),
        ValueError,
        r"inputs contain NaN or infinite values",
    ),
    "zero-steps": (
        torch.zeros(3, 0, 4, dtype=F64),
        ValueError,
        r"inputs must have at least one time step, got shape \(3, 0, 4\)",
    ),
    "not-a-tensor": ([[[0.0] * 4]], TypeError, r"inputs must be a torch.Tensor, got list"),
}


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("case", list(INPUT_ERRORS))
def test_bad_inputs(lstm, strategy, case):
    inputs, error, match = INPUT_ERRORS[case]
    with pytest.raises(error, match=match):
        STRATEGIES[strategy](lstm, inputs)


def test_bad_inputs_through_recurrent():
    layer = Recurrent("gru", 4, 6, num_layers=2).to(F64)
    with pytest.raises(ValueError, match=r"inputs must have 4 features \(input_size\), got 7"):
        layer(torch.zeros(3, 5, 7, dtype=F64))
    with pytest.raises(ValueError, match=r"inputs contain NaN"):
        layer(torch.full((3, 5, 4), float("nan"), dtype=F64))


STATE_ERRORS = {
    "h-batch": (
        lambda: LSTMState(torch.zeros(2, 3, dtype=F64), torch.zeros(3, 6, dtype=F64)),
        r"state.h must have shape \(3, 3\), got \(2, 3\)",
    ),
    "c-size": (
        lambda: LSTMState(torch.zeros(3, 3, dtype=F64), torch.zeros(3, 3, dtype=F64)),
        r"state.c must have shape \(3, 6\), got \(3, 3\)",
    ),
    "h-rank": (
        lambda: (torch.zeros(1, 3, 3, dtype=F64), torch.zeros(3, 6, dtype=F64)),
        r"state.h must have shape \(3, 3\), got \(1, 3, 3\)",
    ),
    "one-field": (
        lambda: (torch.zeros(3, 3, dtype=F64),),
        r"state must be a LSTMState\('h', 'c'\) of 2 tensors, got tuple of length 1",
    ),
    "three-fields": (
        lambda: [torch.zeros(3, 3, dtype=F64)] * 3,
        r"state must be a LSTMState\('h', 'c'\) of 2 tensors, got list of length 3",
    ),
    "bare-tensor": (
        lambda: torch.zeros(3, 3, dtype=F64),
        r"state must be a LSTMState\('h', 'c'\) of 2 tensors",
    ),
    "not-a-tensor": (
        lambda: (torch.zeros(3, 3, dtype=F64), [0.0] * 6),
        r"state.c must have shape \(3, 6\), got list",
    ),
    "nan-h": (
        lambda: (torch.full((3, 3), float("nan"), dtype=F64), torch.zeros(3, 6, dtype=F64)),
        r"state.h contains NaN or infinite values",
    ),
    "infinite-c": (
        lambda: (torch.zeros(3, 3, dtype=F64), torch.zeros(3, 6, dtype=F64).fill_(float("inf"))),
        r"state.c contains NaN or infinite values",
    ),
}


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("case", list(STATE_ERRORS))
def test_bad_state(lstm, strategy, case):
    make_state, match = STATE_ERRORS[case]
    with pytest.raises(ValueError, match=match):
        STRATEGIES[strategy](lstm, good_inputs(), make_state())


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_state_of_wrong_dtype(lstm, strategy):
    state = LSTMState(torch.zeros(3, 3), torch.zeros(3, 6))
    with pytest.raises((TypeError, ValueError), match=r"state.h.*float64.*float32"):
        STRATEGIES[strategy](lstm, good_inputs(), state)


LENGTH_ERRORS = {
    "zero": ([5, 0, 2], ValueError, r"lengths must be at least 1, got a length of 0"),
    "negative": ([5, -1, 2], ValueError, r"lengths must be at least 1, got a length of -1"),
    "too-long": (
        [5, 6, 2],
        ValueError,
        r"lengths must not exceed the 5 time steps of inputs, got a length of 6",
    ),
    "too-few": (
        [5, 2],
        ValueError,
        r"lengths must have one entry per sequence, shape \(3,\), got shape \(2,\)",
    ),
    "too-many": (
        torch.tensor([5, 2, 1, 1]),
        ValueError,
        r"lengths must have one entry per sequence, shape \(3,\), got shape \(4,\)",
    ),
    "2-d": (
        torch.tensor([[5, 2, 1]]),
        ValueError,
        r"lengths must have one entry per sequence, shape \(3,\), got shape \(1, 3\)",
    ),
    "float-list": ([5.0, 2.0, 1.0], TypeError, r"lengths must be integers, got torch.float32"),
    "float-tensor": (
        torch.tensor([5.0, 2.0, 1.0], dtype=F64),
        TypeError,
        r"lengths must be integers, got torch.float64",
    ),
    "bool": (torch.tensor([True, True, True]), TypeError, r"lengths must be integers"),
}


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
@pytest.mark.parametrize("case", list(LENGTH_ERRORS))
def test_bad_lengths(lstm, strategy, case):
    lengths, error, match = LENGTH_ERRORS[case]
    with pytest.raises(error, match=match):
        STRATEGIES[strategy](lstm, good_inputs(), None, lengths)


@pytest.mark.parametrize("strategy", STRATEGY_NAMES)
def test_good_lengths_in_any_integer_form(lstm, strategy):
    inputs = good_inputs()
    expected, _ = STRATEGIES[strategy](lstm, inputs, None, [5, 2, 1])
    for lengths in ([5, 2, 1], (5, 2, 1), torch.tensor([5, 2, 1], dtype=torch.int32)):
        outputs, _ = STRATEGIES[strategy](lstm, inputs, None, lengths)
        assert torch.equal(outputs, expected), f"lengths given as {type(lengths).__name__}"


def test_bad_lengths_through_recurrent():
    layer = Recurrent("lstm", 4, 6, num_layers=2, bidirectional=True).to(F64)
    with pytest.raises(ValueError, match=r"lengths must not exceed the 5 time steps"):
        layer(good_inputs(), lengths=[5, 9, 1])


def test_unknown_strategy_name_lists_the_registered_ones():
    registered = re.escape(", ".join(sorted(STRATEGIES)))
    assert {"sequential", "native", "auto"} <= set(STRATEGIES)
    match = rf"unknown strategy 'fastest'; registered strategies: {registered}$"
    with pytest.raises(ValueError, match=match):
        get_strategy("fastest")
    assert get_strategy("sequential") is STRATEGIES["sequential"]


def test_unknown_cell_name_lists_the_registered_ones():
    registered = re.escape(", ".join(sorted(CELLS)))
    with pytest.raises(ValueError, match=rf"unknown cell 'lstmx'; registered cells: {registered}$"):
        make_cell("lstmx", 4, 6)


@pytest.mark.parametrize(
    ("config", "options", "match"),
    [
        ("jordan", {}, r"cell JordanCell has no torch fused kernel"),
        ("lstm_peephole", {}, r"peephole connections are not supported"),
        ("lstm_layernorm", {}, r"layer normalization is not supported"),
        ("gru", {"zoneout": 0.1}, r"zoneout is not supported"),
        ("elman", {"hidden_dropout": 0.1}, r"recurrent dropout in training is not supported"),
    ],
)
def test_native_names_why_it_cannot_run_a_cell(config, options, match):
    cell = build_cell(config, 4, 6, F64, **options)
    with pytest.raises(StrategyUnsupportedError, match=r"strategy 'native' cannot run this cell"):
        STRATEGIES["native"](cell, good_inputs())
    with pytest.raises(ValueError, match=match):  # StrategyUnsupportedError is a ValueError
        STRATEGIES["native"](cell, good_inputs())


def test_native_refusal_through_recurrent():
    layer = Recurrent("jordan", 4, 6, strategy="native").to(F64)
    with pytest.raises(StrategyUnsupportedError, match=r"JordanCell has no torch fused kernel"):
        layer(good_inputs())


def test_length_mask_marks_the_steps_before_each_length():
    from rnnkit.strategies.validation import length_mask

    mask = length_mask(torch.tensor([1, 3, 2]), 4, "cpu")
    expected = torch.tensor(
        [[True, False, False, False], [True, True, True, False], [True, True, False, False]]
    )
    assert torch.equal(mask, expected)
    assert length_mask(None, 4, "cpu") is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.complex64]
)
def test_all_finite_finds_every_non_finite_value(dtype, value):
    from rnnkit.strategies.validation import all_finite

    values = torch.randn(5, 7).to(dtype)
    assert all_finite(values) and all_finite(values[:0])
    values[2, 3] = value
    assert not all_finite(values), f"{value} in {dtype} not found"
