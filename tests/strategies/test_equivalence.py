"""Every strategy against the sequential reference, and the reference against a hand loop.

One parametrized test runs every cell configuration with every registered strategy that can run
it, over random shapes, odd lengths, padded batches and optional initial states, and compares
outputs, final states and the gradients of the inputs, the initial state and every parameter
with ``sequential`` within the tolerance of the dtype. Iterative strategies (Newton), which stop
at a residual tolerance, are left to their own tests (``conftest.fast_strategies``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from conftest import (
    CELL_CONFIGS,
    DTYPE_NAMES,
    assert_all_close,
    assert_close,
    assert_states_close,
    build_cell,
    fast_strategies,
    random_state,
)

from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES


@dataclass(frozen=True)
class Shape:
    batch_size: int
    steps: int
    input_size: int
    hidden_size: int
    lengths: tuple[int, ...] | None = None
    initial_state: bool = False

    def id(self) -> str:
        text = f"B{self.batch_size}-T{self.steps}-H{self.hidden_size}"
        return text + ("-len" if self.lengths else "") + ("-h0" if self.initial_state else "")


SHAPES = [
    Shape(1, 1, 3, 4),
    Shape(2, 1, 3, 3, initial_state=True),
    Shape(3, 7, 5, 6, lengths=(7, 1, 4), initial_state=True),
    Shape(3, 37, 4, 16, lengths=(37, 20, 1)),
    # every sequence shorter than the padded batch, with a tie
    Shape(4, 37, 3, 4, lengths=(30, 12, 30, 2), initial_state=True),
    Shape(2, 37, 4, 16, initial_state=True),
]
FLOAT32_SHAPES = [Shape(3, 37, 4, 16, lengths=(37, 20, 1), initial_state=True)]


def equivalence_cases() -> list:
    cases = []
    for config in CELL_CONFIGS:
        strategies = fast_strategies(build_cell(config, 2, 3))
        for dtype, shapes in [(torch.float64, SHAPES), (torch.float32, FLOAT32_SHAPES)]:
            for strategy in strategies:
                for shape in shapes:
                    case_id = f"{config}-{strategy}-{shape.id()}-{DTYPE_NAMES[dtype]}"
                    cases.append(pytest.param(config, strategy, shape, dtype, id=case_id))
    return cases


def loss_of(outputs, final_state, seed: int = 1):
    """A weighted sum of every output and final-state element, the same for every strategy."""
    generator = torch.Generator().manual_seed(seed)
    loss = (outputs * torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype)).sum()
    for field in final_state:
        weight = torch.randn(field.shape, generator=generator, dtype=field.dtype)
        loss = loss + (field * weight).sum()
    return loss


def run_with_gradients(strategy, cell, inputs, state, lengths):
    """Outputs, final state and gradients of inputs, initial state fields and parameters."""
    outputs, final_state = STRATEGIES[strategy](cell, inputs, state, lengths)
    wrt = [inputs, *(state or ()), *cell.parameters()]
    gradients = torch.autograd.grad(loss_of(outputs, final_state), wrt, allow_unused=True)
    return outputs, final_state, gradients


def gradient_names(cell, state) -> list[str]:
    names = ["grad of inputs"]
    names += [f"grad of initial state.{field}" for field in (state._fields if state else ())]
    return names + [f"grad of {name}" for name, _ in cell.named_parameters()]


@pytest.mark.parametrize(("config", "strategy", "shape", "dtype"), equivalence_cases())
def test_strategy_matches_sequential(config, strategy, shape, dtype):
    cell = build_cell(config, shape.input_size, shape.hidden_size, dtype)
    generator = torch.Generator().manual_seed(shape.steps)
    inputs = torch.randn(
        shape.batch_size, shape.steps, shape.input_size, dtype=dtype, generator=generator
    ).requires_grad_()
    state = random_state(cell, shape.batch_size, generator) if shape.initial_state else None
    lengths = None if shape.lengths is None else torch.tensor(shape.lengths)

    expected = run_with_gradients("sequential", cell, inputs, state, lengths)
    actual = run_with_gradients(strategy, cell, inputs, state, lengths)

    assert_close(actual[0], expected[0], "outputs", dtype)
    assert_states_close(actual[1], expected[1], "final state", dtype)
    assert_all_close(actual[2], expected[2], gradient_names(cell, state), dtype)


RECURRENT_CONFIGS = ["lstm", "lstm_proj", "gru", "elman_relu", "lstm_peephole", "jordan_out5"]
STACKS = [(2, True, False), (2, True, True), (3, False, True), (3, True, False)]


def recurrent_cases() -> list:
    cases = []
    for config in RECURRENT_CONFIGS:
        for strategy in fast_strategies(build_cell(config, 2, 3)):
            for num_layers, bidirectional, initial_state in STACKS:
                case_id = (
                    f"{config}-{strategy}-L{num_layers}-{'bi' if bidirectional else 'uni'}"
                    + ("-h0" if initial_state else "")
                    + "-f64"
                )
                cases.append(
                    pytest.param(
                        config, strategy, num_layers, bidirectional, initial_state, id=case_id
                    )
                )
    return cases


@pytest.mark.parametrize(
    ("config", "strategy", "num_layers", "bidirectional", "initial_state"), recurrent_cases()
)
def test_stacked_recurrent_matches_sequential(
    config, strategy, num_layers, bidirectional, initial_state
):
    name, options = CELL_CONFIGS[config]
    dtype = torch.float64
    torch.manual_seed(0)
    layers = {
        strategy_name: Recurrent(
            name,
            4,
            6,
            num_layers=num_layers,
            bidirectional=bidirectional,
            strategy=strategy_name,
            **options,
        ).to(dtype)
        for strategy_name in ("sequential", strategy)
    }
    layers[strategy].load_state_dict(layers["sequential"].state_dict())
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(3, 11, 4, dtype=dtype, generator=generator).requires_grad_()
    lengths = torch.tensor([5, 11, 1])
    states = None
    if initial_state:
        states = tuple(random_state(cell, 3, generator) for cell in layers["sequential"].cells)

    results = {}
    for strategy_name, layer in layers.items():
        outputs, finals = layer(inputs, states, lengths)
        loss = loss_of(outputs, [field for final in finals for field in final])
        wrt = [inputs, *(field for state in states or () for field in state)]
        wrt += list(layer.parameters())
        results[strategy_name] = (outputs, finals, torch.autograd.grad(loss, wrt))

    expected, actual = results["sequential"], results[strategy]
    assert_close(actual[0], expected[0], "outputs", dtype)
    assert len(actual[1]) == len(expected[1]) == len(layers[strategy].cells)
    for index, expected_final in enumerate(expected[1]):
        assert_states_close(actual[1][index], expected_final, f"final state[{index}]", dtype)
    names = ["grad of inputs"]
    names += [
        f"grad of initial state[{index}].{field}"
        for index, state in enumerate(states or ())
        for field in state._fields
    ]
    names += [f"grad of {name}" for name, _ in layers["sequential"].named_parameters()]
    assert_all_close(actual[2], expected[2], names, dtype)


@pytest.mark.parametrize("config", list(CELL_CONFIGS))
def test_sequential_equals_hand_loop_of_step(config):
    """The reference itself: ``sequential`` is ``cell.step`` applied one step after another."""
    dtype = torch.float64
    cell = build_cell(config, 3, 4, dtype)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(3, 6, 3, dtype=dtype, generator=generator)
    state = random_state(cell, 3, generator)

    outputs, final_state = STRATEGIES["sequential"](cell, inputs, state)

    expected_outputs = []
    expected_state = state
    for step in range(inputs.shape[1]):
        output, expected_state = cell.step(inputs[:, step], expected_state)
        expected_outputs.append(output)
    assert_close(outputs, torch.stack(expected_outputs, 1), "outputs", dtype)
    assert_states_close(final_state, expected_state, "final state", dtype)


@pytest.mark.parametrize("config", list(CELL_CONFIGS))
def test_sequential_with_lengths_equals_each_sequence_alone(config):
    """A padded batch with lengths gives each sequence what it gives run alone, truncated to
    its length; outputs past a sequence's end are exactly zero."""
    dtype = torch.float64
    cell = build_cell(config, 3, 4, dtype)
    generator = torch.Generator().manual_seed(4)
    lengths = [6, 2, 4, 1]
    inputs = torch.randn(4, 7, 3, dtype=dtype, generator=generator)
    state = random_state(cell, 4, generator)

    outputs, final_state = STRATEGIES["sequential"](cell, inputs, state, lengths)

    for row, length in enumerate(lengths):
        row_state = cell.state_type(*(field[row : row + 1] for field in state))
        alone_outputs, alone_state = STRATEGIES["sequential"](
            cell, inputs[row : row + 1, :length], row_state
        )
        assert_close(outputs[row : row + 1, :length], alone_outputs, f"outputs[{row}]", dtype)
        padding = outputs[row, length:]
        assert torch.equal(padding, torch.zeros_like(padding)), f"padded outputs[{row}] not zero"
        row_final = cell.state_type(*(field[row : row + 1] for field in final_state))
        assert_states_close(row_final, alone_state, f"final state[{row}]", dtype)
