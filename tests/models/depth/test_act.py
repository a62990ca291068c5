"""Adaptive computation time: the halting rule against a readable per-item loop of Graves's
formulas (N, R, p^n, rho = N + R), with its gradients, the step limit and padding."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rnnkit.models.depth import AdaptiveComputationTime
from rnnkit.models.depth.act_cell import AdaptiveComputationCell


def transition_states(initial: Tensor, weight: Tensor, steps: int) -> list[Tensor]:
    """``s^n = tanh(s^(n-1) W)`` for n = 1..steps, each ``(items, D)``."""
    states, state = [], initial
    for _ in range(steps):
        state = torch.tanh(state @ weight)
        states.append(state)
    return states


def reference_halting(probabilities: list[Tensor], threshold: float, max_steps: int):
    """Graves's formulas, one item at a time: per item the weights p^1..p^M, N, R and rho."""
    items = probabilities[0].shape[0]
    weights = [[probabilities[0].new_zeros(()) for _ in range(max_steps)] for _ in range(items)]
    steps, remainders, costs = [], [], []
    for item in range(items):
        total = probabilities[0].new_zeros(())
        halting_step = max_steps  # N = min(M, first n with sum h^1..h^n >= 1 - epsilon)
        for n in range(1, max_steps + 1):
            if float((total + probabilities[n - 1][item]).detach()) >= threshold:
                halting_step = n
                break
            if n < max_steps:
                total = total + probabilities[n - 1][item]
        remainder = 1 - sum(
            (probabilities[n - 1][item] for n in range(1, halting_step)),
            start=probabilities[0].new_zeros(()),
        )
        for n in range(1, halting_step):
            weights[item][n - 1] = probabilities[n - 1][item]
        weights[item][halting_step - 1] = remainder
        steps.append(halting_step)
        remainders.append(remainder)
        costs.append(halting_step + remainder)
    return weights, steps, torch.stack(remainders), torch.stack(costs)


def run_halting(act: AdaptiveComputationTime, states: list[Tensor], active: Tensor | None = None):
    """Drive ``Halting`` over precomputed states: the weights per step, the bookkeeping and the
    halting probabilities the unit gave."""
    halting = act.start(states[0][:, 0], active)
    weights, probabilities = [], []
    for state in states:
        probability = act.probability(state)
        probabilities.append(probability)
        weights.append(halting.update(probability))
    return torch.stack(weights, 1), halting, probabilities


@pytest.mark.parametrize("bias", [-2.0, 0.0, 1.0])
@pytest.mark.parametrize("max_steps", [1, 3, 6])
def test_weights_steps_and_ponder_cost_match_the_formulas(bias, max_steps):
    torch.manual_seed(0)
    act = AdaptiveComputationTime(8, max_steps, epsilon=0.05, halting_bias=bias).double()
    states = transition_states(torch.randn(11, 8).double(), torch.randn(8, 8).double(), max_steps)
    weights, halting, probabilities = run_halting(act, states)
    expected_weights, expected_steps, expected_remainders, expected_costs = reference_halting(
        probabilities, 1 - 0.05, max_steps
    )
    expected = torch.stack([torch.stack(row) for row in expected_weights])  # (items, M)
    torch.testing.assert_close(weights, expected, msg="halting weights p^n")
    torch.testing.assert_close(weights.sum(1), torch.ones(11).double(), msg="sum of p^n")
    assert halting.steps.tolist() == [float(n) for n in expected_steps]
    assert max(expected_steps) <= max_steps
    torch.testing.assert_close(halting.remainder, expected_remainders, msg="remainder R")
    torch.testing.assert_close(halting.ponder_cost(), expected_costs, msg="ponder cost N + R")
    assert halting.all_halted()


def test_the_ponder_cost_gradient_reaches_the_halting_unit_through_the_remainder():
    torch.manual_seed(1)
    act = AdaptiveComputationTime(8, 5, epsilon=0.01, halting_bias=-1.0).double()
    states = transition_states(torch.randn(7, 8).double(), torch.randn(8, 8).double(), 5)
    _, halting, probabilities = run_halting(act, states)
    loss = act.loss(halting.ponder_cost())
    gradients = torch.autograd.grad(loss, (act.halting.weight, act.halting.bias), retain_graph=True)
    _, _, _, expected_costs = reference_halting(probabilities, 1 - 0.01, 5)
    expected = torch.autograd.grad(
        act.ponder_weight * expected_costs.mean(), (act.halting.weight, act.halting.bias)
    )
    for name, got, want in zip(("weight", "bias"), gradients, expected, strict=True):
        torch.testing.assert_close(got, want, msg=f"gradient of the halting unit's {name}")
        assert float(got.abs().sum()) > 0, name


def test_the_step_limit_halts_every_item_with_the_remainder():
    act = AdaptiveComputationTime(4, 3, halting_bias=-20.0).double()  # h ~ 0: never halts alone
    states = [torch.zeros(5, 4).double() for _ in range(3)]
    weights, halting, _ = run_halting(act, states)
    assert halting.steps.tolist() == [3.0] * 5 and halting.all_halted()
    torch.testing.assert_close(weights[:, -1], torch.ones(5).double(), atol=1e-7, rtol=0)
    four = torch.full((5,), 4.0).double()
    torch.testing.assert_close(halting.ponder_cost(), four, atol=1e-7, rtol=0)
    with pytest.raises(RuntimeError, match="halted after 3 steps"):
        halting.update(torch.zeros(5).double())


def test_a_confident_unit_halts_after_one_step():
    act = AdaptiveComputationTime(4, 6, halting_bias=20.0).double()  # h ~ 1 >= 1 - epsilon
    weights, halting, _ = run_halting(act, [torch.zeros(3, 4).double()] * 6)
    assert halting.steps.tolist() == [1.0] * 3
    torch.testing.assert_close(weights[:, 0], torch.ones(3).double())
    assert float(weights[:, 1:].detach().abs().sum()) == 0.0


def test_inactive_items_take_no_step_and_cost_nothing():
    torch.manual_seed(2)
    act = AdaptiveComputationTime(8, 4, halting_bias=0.0).double()
    states = transition_states(torch.randn(6, 8).double(), torch.randn(8, 8).double(), 4)
    active = torch.tensor([True, True, False, True, False, True])
    weights, halting, probabilities = run_halting(act, states, active)
    _, all_steps, _, all_costs = reference_halting(probabilities, 0.99, 4)
    assert float(weights[~active].detach().abs().sum()) == 0.0
    assert halting.steps[~active].tolist() == [0.0, 0.0]
    torch.testing.assert_close(halting.ponder_cost()[active], all_costs[active])
    torch.testing.assert_close(weights[active].sum(1), torch.ones(4).double())
    loss = act.loss(halting.ponder_cost(), active)
    torch.testing.assert_close(loss, act.ponder_weight * all_costs[active].mean())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_steps": 0}, "max_steps"),
        ({"max_steps": 2, "epsilon": 1.0}, "epsilon"),
        ({"max_steps": 2, "ponder_weight": -1.0}, "ponder_weight"),
    ],
)
def test_options_are_checked(options, message):
    with pytest.raises(ValueError, match=message):
        AdaptiveComputationTime(4, **options)


def reference_act_rnn(model: AdaptiveComputationCell, inputs: Tensor, lengths: list[int]):
    """Graves's ACT RNN one sequence and one time step at a time: outputs, final states,
    P(x) and N(t) per sequence."""
    cell, act = model.cell, model.act
    threshold = 1 - act.epsilon
    results = []
    for row, length in enumerate(lengths):
        state = cell.initial_state(1, dtype=inputs.dtype)
        outputs, steps, cost = [], [], inputs.new_zeros(())
        for time in range(length):
            total, ponder_outputs, ponder_states, weights = inputs.new_zeros(()), [], [], []
            ponder_state = state
            for n in range(1, act.max_steps + 1):
                flag = inputs.new_tensor([[1.0 if n == 1 else 0.0]])
                output, ponder_state = cell.step(
                    torch.cat((inputs[row : row + 1, time], flag), -1), ponder_state
                )
                probability = act.probability(cell.flatten_state(ponder_state))[0]
                ponder_outputs.append(output)
                ponder_states.append(ponder_state)
                if float((total + probability).detach()) >= threshold or n == act.max_steps:
                    weights.append(1 - total)  # R
                    break
                weights.append(probability)
                total = total + probability
            outputs.append(sum(w * y for w, y in zip(weights, ponder_outputs, strict=True)))
            state = type(state)(
                *(
                    sum(w * s[field] for w, s in zip(weights, ponder_states, strict=True))
                    for field in range(len(state))
                )
            )
            steps.append(len(weights))
            cost = cost + len(weights) + weights[-1]
        results.append((outputs, state, cost, steps))
    return results


@pytest.mark.parametrize("cell", ["lstm", "gru", "gla", "mingru"])
def test_an_act_cell_matches_the_reference_loop_with_lengths(cell):
    torch.manual_seed(3)
    options = {"num_heads": 2} if cell == "gla" else {}
    model = AdaptiveComputationCell(
        cell, 3, 4, max_steps=4, epsilon=0.05, halting_bias=-0.5, **options
    ).double()
    inputs = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    lengths = [5, 2, 4]
    result = model(inputs, lengths=torch.tensor(lengths))
    expected = reference_act_rnn(model, inputs, lengths)
    for row, (outputs, state, cost, steps) in enumerate(expected):
        length = lengths[row]
        torch.testing.assert_close(
            result.outputs[row, :length], torch.cat(outputs), msg=f"{cell} outputs, row {row}"
        )
        assert float(result.outputs[row, length:].detach().abs().sum()) == 0.0
        for field, (got, want) in enumerate(zip(result.state, state, strict=True)):
            torch.testing.assert_close(got[row], want[0], msg=f"{cell} state field {field}")
        torch.testing.assert_close(result.ponder_cost[row], cost, msg=f"{cell} ponder cost")
        assert result.steps[row].tolist() == [float(n) for n in steps] + [0.0] * (5 - length)
        assert max(steps) <= 4
    assert float(result.steps.max()) > 1  # the test ponders more than one step somewhere
    total = result.outputs.sum() + model.loss(result.ponder_cost)
    reference_total = sum(torch.cat(o).sum() for o, *_ in expected) + model.act.ponder_weight * (
        torch.stack([c for _, _, c, _ in expected]).mean()
    )
    parameters = [inputs, *model.parameters()]
    got = torch.autograd.grad(total, parameters, retain_graph=True, allow_unused=True)
    want = torch.autograd.grad(reference_total, parameters, allow_unused=True)
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        if b is None:
            assert a is None or float(a.abs().sum()) == 0.0
            continue
        torch.testing.assert_close(a, b, msg=f"{cell} gradient of parameter {index}")
    assert float(got[-2].abs().sum()) > 0  # halting unit weight (the last module registered)


def test_an_act_cell_continues_from_a_carried_state():
    torch.manual_seed(4)
    model = AdaptiveComputationCell("lstm", 3, 4, max_steps=3, halting_bias=-0.5).double()
    inputs = torch.randn(2, 6, 3, dtype=torch.float64)
    whole = model(inputs)
    first = model(inputs[:, :2])
    second = model(inputs[:, 2:], first.state)
    torch.testing.assert_close(torch.cat((first.outputs, second.outputs), 1), whole.outputs)
    for got, want in zip(second.state, whole.state, strict=True):
        torch.testing.assert_close(got, want, msg="final state")
    torch.testing.assert_close(first.ponder_cost + second.ponder_cost, whole.ponder_cost)
    torch.testing.assert_close(model(inputs[:, :0]).ponder_cost, torch.zeros(2).double())
