"""The Newton strategy against the sequential reference: values, final states and gradients."""

from __future__ import annotations

import pytest
import torch

import rnnkit
from rnnkit.nn import Recurrent
from rnnkit.strategies import (
    STRATEGIES,
    NewtonStrategy,
    StrategyUnsupportedError,
    make_strategy,
)
from rnnkit.strategies.kernels.affine import affine_scan_chunked, affine_scan_loop

# quasi-Newton may fall back on the strongly coupled dense cells: correct, reported, warned
pytestmark = pytest.mark.filterwarnings("ignore:rnnkit newton:RuntimeWarning")

# quasi-Newton stops on the residual (1e-10): its error is residual-limited
TOLERANCE = {"newton": 1e-9, "newton:quasi": 1e-7, "newton:damped": 1e-9}


def weighted_loss(outputs, state):
    weights = torch.linspace(0.5, 1.5, outputs.shape[1], dtype=outputs.dtype)
    return (outputs * weights[None, :, None]).sum() + sum((field**2).sum() for field in state)


def compare(strategy, cell, inputs, state, lengths, runner=None):
    """``runner`` (default: a fresh ``strategy``) against sequential within ``TOLERANCE``."""
    runner = make_strategy(strategy) if runner is None else runner
    tensors = [inputs, *state, *cell.parameters()]
    outputs, final = STRATEGIES["sequential"](cell, inputs, state, lengths)
    expected = torch.autograd.grad(weighted_loss(outputs, final), tensors)
    got_outputs, got_final = runner(cell, inputs, state, lengths)
    got = torch.autograd.grad(weighted_loss(got_outputs, got_final), tensors)
    tolerance = TOLERANCE[strategy]
    torch.testing.assert_close(
        got_outputs, outputs, rtol=tolerance, atol=tolerance, msg=lambda m: f"outputs differ: {m}"
    )
    for name, value, reference in zip(final._fields, got_final, final, strict=True):
        torch.testing.assert_close(
            value,
            reference,
            rtol=tolerance,
            atol=tolerance,
            msg=lambda m, name=name: f"final state {name} differs: {m}",
        )
    names = [
        "inputs",
        *(f"initial {f}" for f in final._fields),
        *(n for n, _ in cell.named_parameters()),
    ]
    for name, value, reference in zip(names, got, expected, strict=True):
        torch.testing.assert_close(
            value,
            reference,
            rtol=tolerance,
            atol=tolerance,
            msg=lambda m, name=name: f"gradient of {name} differs: {m}",
        )


def make_case(name, options, batch, steps, hidden=4, seed=0):
    torch.manual_seed(seed)
    cell = rnnkit.make_cell(name, 3, hidden, **options).double()
    inputs = torch.randn(batch, steps, 3, dtype=torch.float64, requires_grad=True)
    state = cell.initial_state(batch)
    state = type(state)(*(torch.randn_like(f).mul(0.5).requires_grad_(True) for f in state))
    return cell, inputs, state


@pytest.mark.parametrize(("name", "hidden"), [("paragru", 16), ("paralstm", 8), ("gru", 3)])
def test_newton_long_sequences(name, hidden):
    cell, inputs, state = make_case(name, {}, 2, 2000, hidden=hidden, seed=2)
    strategy = make_strategy("newton")
    compare("newton", cell, inputs, state, torch.tensor([2000, 1234]), strategy)
    report = strategy.reports[-1]
    assert report.converged and report.fallback_from is None
    assert report.iterations < 30


def test_reports_iterations_and_residual():
    strategy = NewtonStrategy()
    cell, inputs, state = make_case("paragru", {}, 2, 50)
    strategy(cell, inputs, state)
    report = strategy.reports[-1]
    assert report.cell == "ParaGRUCell" and report.steps == 50
    assert 1 <= report.iterations <= 50 and report.residual <= 1e-10 and report.converged
    assert strategy.fallbacks == 0


def test_fallback_finishes_sequentially_and_is_reported():
    strategy = NewtonStrategy(max_iterations=2)
    cell, inputs, state = make_case("gru", {}, 3, 60, hidden=5, seed=3)
    with torch.no_grad():
        cell.weight_hh.mul_(4)  # strongly coupled: not solved in 2 iterations
    with pytest.warns(RuntimeWarning, match="did not converge in 2 iterations"):
        outputs, final = strategy(cell, inputs, state, [60, 31, 7])
    report = strategy.reports[-1]
    assert not report.converged and report.fallback_from is not None
    assert 2 <= report.fallback_from < 60
    assert strategy.fallbacks == 1
    expected, expected_final = STRATEGIES["sequential"](cell, inputs, state, [60, 31, 7])
    torch.testing.assert_close(outputs, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(final.h, expected_final.h, rtol=1e-12, atol=1e-12)
    gradient = torch.autograd.grad(outputs.sum(), inputs)[0]
    expected_gradient = torch.autograd.grad(expected.sum(), inputs)[0]
    torch.testing.assert_close(gradient, expected_gradient, rtol=1e-9, atol=1e-9)


def test_refuses_what_it_cannot_run():
    cell = rnnkit.make_cell("gru", 3, 4, zoneout=0.1).double()
    with pytest.raises(StrategyUnsupportedError, match="newton.*zoneout in training"):
        STRATEGIES["newton"](cell, torch.randn(2, 5, 3, dtype=torch.float64))
    cell.eval()  # zoneout's expectation is deterministic: fine in evaluation
    outputs, _ = STRATEGIES["newton"](cell, torch.randn(2, 5, 3, dtype=torch.float64))
    assert outputs.shape == (2, 5, 4)
    with pytest.raises(ValueError, match="jacobian must be 'exact' or 'diagonal'"):
        NewtonStrategy(jacobian="full")
    with pytest.raises(ValueError, match="max_iterations must be a positive integer"):
        NewtonStrategy(max_iterations=0)


def test_stacked_bidirectional_layers_with_lengths():
    torch.manual_seed(4)
    layers = {
        strategy: Recurrent(
            "paralstm", 3, 5, num_layers=2, bidirectional=True, strategy=strategy
        ).double()
        for strategy in ("sequential", "newton")
    }
    layers["newton"].load_state_dict(layers["sequential"].state_dict())
    inputs = torch.randn(3, 19, 3, dtype=torch.float64, requires_grad=True)
    results = {}
    for strategy, layer in layers.items():
        outputs, states = layer(inputs, lengths=[19, 5, 12])
        loss = weighted_loss(outputs, [field for state in states for field in state])
        results[strategy] = (outputs, torch.autograd.grad(loss, [inputs, *layer.parameters()]))
    torch.testing.assert_close(results["newton"][0], results["sequential"][0])
    for got, expected in zip(results["newton"][1], results["sequential"][1], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_chunks_with_carried_state_equal_the_whole():
    cell, inputs, state = make_case("paragru", {"num_heads": 2}, 2, 30)
    whole, whole_final = STRATEGIES["newton"](cell, inputs, state)
    pieces, carried = [], state
    for chunk in inputs.split([11, 1, 18], 1):
        outputs, carried = STRATEGIES["newton"](cell, chunk, carried)
        pieces.append(outputs)
    torch.testing.assert_close(torch.cat(pieces, 1), whole, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(carried.h, whole_final.h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("steps", [1, 6, 41])
def test_affine_scan_chunked_matches_loop(steps, reverse):
    generator = torch.Generator().manual_seed(steps)
    jacobians = 0.5 * torch.randn(2, steps, 3, 3, generator=generator, dtype=torch.float64)
    offsets = torch.randn(2, steps, 3, generator=generator, dtype=torch.float64)
    initial = torch.randn(2, 3, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        affine_scan_chunked(jacobians, offsets, initial, reverse),
        affine_scan_loop(jacobians, offsets, initial, reverse),
    )
    hand = initial
    times = range(steps - 1, -1, -1) if reverse else range(steps)
    for t in times:
        hand = jacobians[:, t] @ hand.unsqueeze(-1)
        hand = hand.squeeze(-1) + offsets[:, t]
    last = 0 if reverse else steps - 1
    torch.testing.assert_close(
        affine_scan_loop(jacobians, offsets, initial, reverse)[:, last], hand
    )


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_cell_jacobian_equals_autograd(name):
    torch.manual_seed(5)
    variants = [{}, {"num_heads": 2}] if name == "paragru" else [{}]
    for options in variants:
        cell = rnnkit.make_cell(name, 3, 4, **options).double()
        projected = cell.project_inputs(torch.randn(6, 3, dtype=torch.float64))
        flat = torch.randn(6, sum(cell.state_sizes()), dtype=torch.float64)

        def step(state, inputs, cell=cell):
            new_state = cell.recur(inputs[None], cell.unflatten_state(state[None]))[1]
            return cell.flatten_state(new_state)[0]

        dense = torch.func.vmap(torch.func.jacrev(step))(flat, projected)
        given = cell.state_jacobian(projected, cell.unflatten_state(flat))
        if cell.jacobian_structure == "diagonal":
            torch.testing.assert_close(given, dense.diagonal(dim1=-2, dim2=-1))
        else:
            size = cell.jacobian_block_size
            blocks = torch.stack(
                [
                    dense[:, g * size : (g + 1) * size, g * size : (g + 1) * size]
                    for g in range(given.shape[1])
                ],
                1,
            )
            torch.testing.assert_close(given, blocks)
            off_block = dense.clone()
            for g in range(given.shape[1]):
                off_block[:, g * size : (g + 1) * size, g * size : (g + 1) * size] = 0
            assert off_block.abs().max() == 0


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_compiled_kernels_equal_the_cells_torch_code(name):
    from rnnkit.strategies.kernels import pararnn_cpu
    from rnnkit.strategies.newton import _functional_vjp
    from rnnkit.strategies.newton_linear import evaluate, jacobian

    torch.manual_seed(6)
    cell = rnnkit.make_cell(name, 3, 5).double()
    fused = pararnn_cpu.lookup(cell, torch.device("cpu"), torch.float64)
    assert fused is not None
    projected = cell.project_inputs(torch.randn(2, 9, 3, dtype=torch.float64)).detach()
    previous = torch.randn(2, 9, sum(cell.state_sizes()), dtype=torch.float64)
    next_states, values = fused.linearize(cell, projected.flatten(0, 1), previous.flatten(0, 1))
    torch.testing.assert_close(
        next_states.unflatten(0, (2, 9)), evaluate(cell, projected, previous)[1]
    )
    torch.testing.assert_close(
        values.unflatten(0, (2, 9)), jacobian(cell, projected, previous, False).values
    )
    adjoint = torch.randn_like(previous)
    got = fused.vjp(cell, projected.flatten(0, 1), previous.flatten(0, 1), adjoint.flatten(0, 1))
    expected = _functional_vjp(cell, projected.clone(), previous, adjoint, None)
    torch.testing.assert_close(got[0].unflatten(0, (2, 9)), expected[0])
    torch.testing.assert_close(got[1].unflatten(0, (2, 9)), expected[1])
    for parameter_name, value in got[2].items():
        torch.testing.assert_close(value, expected[2][parameter_name])
    assert (
        pararnn_cpu.lookup(
            rnnkit.make_cell("paragru", 3, 4, num_heads=2), torch.device("cpu"), torch.float32
        )
        is None
    )


@pytest.mark.parametrize("reverse", [False, True])
def test_compiled_block_scan_matches_loop(reverse):
    from rnnkit.strategies.kernels.affine import affine_scan_blocks

    generator = torch.Generator().manual_seed(7)
    jacobians = 0.5 * torch.randn(5, 33, 2, 2, generator=generator, dtype=torch.float64)
    offsets = torch.randn(5, 33, 2, generator=generator, dtype=torch.float64)
    initial = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(
        affine_scan_blocks(jacobians, offsets, initial, reverse),
        affine_scan_loop(jacobians, offsets, initial, reverse),
    )


@pytest.mark.parametrize("name", ["paragru", "paralstm"])
def test_float32_compiled_kernels_stay_close_to_the_reference(name):
    """float32 kernels use a polynomial exp (relative error < 3e-7)."""
    torch.manual_seed(8)
    layers = {s: Recurrent(name, 8, 16, strategy=s) for s in ("sequential", "newton")}
    layers["newton"].load_state_dict(layers["sequential"].state_dict())
    inputs = torch.randn(4, 300, 8)
    with torch.no_grad():
        expected, _ = layers["sequential"](inputs)
        got, _ = layers["newton"](inputs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_compiled_iteration_equals_the_torch_code():
    """``iterate``: f and J at ``shift(states)``, the offsets and the residual in one pass."""
    from rnnkit.strategies.kernels import pararnn_cpu
    from rnnkit.strategies.newton_linear import evaluate, jacobian, multiply, shift

    torch.manual_seed(9)
    cell = rnnkit.make_cell("paragru", 3, 5).double()
    fused = pararnn_cpu.lookup(cell, torch.device("cpu"), torch.float64)
    assert fused is not None and fused.iterate is not None
    batch, steps = 3, 11
    projected = cell.project_inputs(torch.randn(batch, steps, 3, dtype=torch.float64)).detach()
    states = torch.randn(batch, steps, 5, dtype=torch.float64)
    initial = torch.randn(batch, 5, dtype=torch.float64)
    next_states, values, offsets, residual = fused.iterate(
        cell, projected.flatten(0, 1), states.flatten(0, 1), initial, steps
    )
    previous = shift(states, initial)
    expected_next = evaluate(cell, projected, previous)[1]
    expected_jacobian = jacobian(cell, projected, previous, False)
    expected_offsets = expected_next - multiply(expected_jacobian, previous)
    torch.testing.assert_close(next_states.unflatten(0, (batch, steps)), expected_next)
    torch.testing.assert_close(values.unflatten(0, (batch, steps)), expected_jacobian.values)
    torch.testing.assert_close(offsets.unflatten(0, (batch, steps)), expected_offsets)
    assert residual == pytest.approx(
        float((states - expected_next).abs().max().detach()), rel=1e-12
    )


def test_compiled_iteration_is_what_newton_runs_without_lengths(monkeypatch):
    from rnnkit.strategies import newton

    calls = []
    original = newton._iterate
    monkeypatch.setattr(newton, "_iterate", lambda *a: calls.append(1) or original(*a))
    cell, inputs, state = make_case("paragru", {}, 2, 40)
    compare("newton", cell, inputs, state, None)
    assert calls, "the compiled Newton iteration did not run"
    calls.clear()
    compare("newton", cell, inputs, state, [40, 17])
    assert not calls, "with lengths the padded path must run"


@pytest.mark.parametrize("lengths", [None, [30, 12]], ids=["whole", "lengths"])
def test_non_finite_states_are_not_reported_converged(lengths):
    # a NaN weight makes every state NaN; the compiled residual must not call that converged
    strategy = NewtonStrategy(max_iterations=3)
    cell, inputs, state = make_case("paragru", {}, 2, 30)
    with torch.no_grad():
        cell.weight_hh[0, 1] = float("nan")
    with pytest.warns(RuntimeWarning, match="did not converge"):
        outputs, _ = strategy(cell, inputs, state, lengths)
    report = strategy.reports[-1]
    assert not report.converged and report.fallback_from == 0
    expected, _ = STRATEGIES["sequential"](cell, inputs, state, lengths)
    assert torch.equal(outputs.isnan(), expected.isnan())
