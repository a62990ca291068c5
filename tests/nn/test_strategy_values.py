"""Strategies as values: fresh objects per name, options, per-cell diagnostics, memory guard."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells import LSTMCell
from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES, NewtonStrategy, make_strategy

F64 = torch.float64


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_make_strategy_returns_a_callable_for_every_name(name):
    assert callable(make_strategy(name))


def test_make_strategy_returns_a_fresh_newton_each_time():
    first, second = make_strategy("newton"), make_strategy("newton")
    assert first is not second
    assert make_strategy("newton:quasi").jacobian == "diagonal"
    assert make_strategy("newton:damped").damping is True


def test_make_strategy_passes_options_and_names_unknown_ones():
    strategy = make_strategy("newton", tolerance=1e-6, max_iterations=50)
    assert (strategy.tolerance, strategy.max_iterations) == (1e-6, 50)
    with pytest.raises(ValueError, match=r"'newton' got unknown option\(s\) tolerence.*takes:.*"
                       r"tolerance, max_iterations"):
        make_strategy("newton", tolerence=1e-6)
    with pytest.raises(ValueError, match="'sequential' got unknown option.*no options"):
        make_strategy("sequential", tolerance=1e-6)
    with pytest.raises(ValueError, match="unknown strategy 'newtn'"):
        make_strategy("newtn")


def test_make_strategy_returns_an_object_as_given():
    strategy = NewtonStrategy(tolerance=1e-8)
    assert make_strategy(strategy) is strategy


def test_calling_the_registry_entry_shares_no_state():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4).to(F64)
    STRATEGIES["newton"](cell, torch.randn(2, 5, 3, dtype=F64))
    assert not hasattr(STRATEGIES["newton"], "reports")


def test_each_cell_of_a_layer_keeps_its_own_newton_reports():
    torch.manual_seed(0)
    layer = Recurrent("gru", 3, 4, num_layers=2, strategy="newton").to(F64)
    layer(torch.randn(2, 7, 3, dtype=F64))
    first, second = layer.strategies
    assert first is not second
    reports = layer.strategy_reports()
    assert [len(cell_reports) for cell_reports in reports] == [1, 1]
    assert all(cell_reports[0].converged for cell_reports in reports)


def test_a_configured_object_is_copied_per_cell_and_described():
    torch.manual_seed(0)
    strategy = NewtonStrategy(tolerance=1e-9, max_iterations=40)
    layer = Recurrent("gru", 3, 4, num_layers=2, strategy=strategy).to(F64)
    assert layer.strategies[0] is strategy and layer.strategies[1] is not strategy
    assert layer.strategies[1].max_iterations == 40
    layer(torch.randn(2, 6, 3, dtype=F64))
    assert len(strategy.reports) == 1 and len(layer.strategies[1].reports) == 1
    assert "newton (tolerance=1e-09, max_iterations=40" in layer.describe_strategy()


def test_named_strategy_with_options_from_a_config():
    layer = Recurrent("gru", 3, 4, strategy="newton", strategy_options={"max_iterations": 7})
    assert layer.strategies[0].max_iterations == 7
    with pytest.raises(ValueError, match="unknown option"):
        Recurrent("gru", 3, 4, strategy="newton", strategy_options={"iterations": 7})


def test_drop_in_cells_keep_their_own_strategies():
    from rnnkit.nn import GRU

    layer = GRU(3, 4, num_layers=2, strategy="newton")
    assert layer.strategies[0] is not layer.strategies[1]


def test_newton_refuses_dense_jacobians_above_the_limit_before_allocating():
    cell = LSTMCell(512, 512)  # S = 2H = 1024: B*T*S*S*4 bytes = 8 GiB for B=32, T=64
    inputs = torch.randn(32, 64, 512)
    with pytest.raises(MemoryError, match=r"8\.00 GiB.*newton:quasi.*smaller"):
        make_strategy("newton")(cell, inputs)


def test_newton_memory_limit_is_configurable():
    torch.manual_seed(0)
    cell = LSTMCell(3, 4).to(F64)
    inputs = torch.randn(2, 5, 3, dtype=F64)
    with pytest.raises(MemoryError, match="memory_limit_bytes=100"):
        make_strategy("newton", memory_limit_bytes=100)(cell, inputs)
    make_strategy("newton", memory_limit_bytes=10**6)(cell, inputs)


@pytest.mark.parametrize("name", ["lstm", "gru", "elman", "mingru"])
def test_layer_step_equals_forward_over_the_sequence(name):
    torch.manual_seed(0)
    layer = Recurrent(name, 3, 4, num_layers=2, strategy="sequential").to(F64).eval()
    inputs = torch.randn(2, 6, 3, dtype=F64)
    expected, expected_states = layer(inputs)
    state = None
    outputs = []
    for inputs_t in inputs.unbind(1):
        output, state = layer.step(inputs_t, state)
        outputs.append(output)
    torch.testing.assert_close(torch.stack(outputs, 1), expected, msg="outputs")
    for got, want in zip(state, expected_states, strict=True):
        for got_field, want_field in zip(got, want, strict=True):
            torch.testing.assert_close(got_field, want_field, msg="final state")


def test_layer_step_refuses_bidirectional_layers():
    layer = Recurrent("gru", 3, 4, bidirectional=True)
    with pytest.raises(ValueError, match="step needs a unidirectional layer"):
        layer.step(torch.randn(2, 3))
