"""Explicit state through a stacked layer: ``Recurrent`` run whole equals the same sequence run in
chunks with the per-layer states carried, and equals each cell's ``step`` one step at a time.
(The same for a single cell under every strategy is in ``tests/strategies/test_oracle.py``.)"""

from __future__ import annotations

import pytest
import torch
from conftest import (
    CELL_CONFIGS,
    assert_close,
    assert_states_close,
    build_cell,
    fast_strategies,
    random_state,
)

from rnnkit.nn import Recurrent

F64 = torch.float64
CHUNKS = (5, 1, 13)
STEPS = sum(CHUNKS)


def strategy_cases(configs) -> list:
    return [
        pytest.param(config, strategy, id=f"{config}-{strategy}")
        for config in configs
        for strategy in ["sequential", *fast_strategies(build_cell(config, 2, 3))]
    ]


def run_in_chunks(run, inputs, state):
    """``run(chunk, state) -> (outputs, state)`` over consecutive chunks of ``CHUNKS`` steps."""
    outputs, start = [], 0
    for size in CHUNKS:
        chunk_outputs, state = run(inputs[:, start : start + size], state)
        outputs.append(chunk_outputs)
        start += size
    return torch.cat(outputs, 1), state


@pytest.mark.parametrize(
    ("config", "strategy"), strategy_cases(["lstm", "lstm_proj", "gru", "elman", "jordan_out5"])
)
def test_stacked_recurrent_whole_equals_chunks_equals_steps(config, strategy):
    name, options = CELL_CONFIGS[config]
    torch.manual_seed(0)
    layer = Recurrent(name, 3, 4, num_layers=3, strategy=strategy, **options).to(F64)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(2, STEPS, 3, dtype=F64, generator=generator)
    states = tuple(random_state(cell, 2, generator) for cell in layer.cells)

    whole_outputs, whole_states = layer(inputs, states)
    chunk_outputs, chunk_states = run_in_chunks(layer, inputs, states)
    step_outputs = []
    step_states = list(states)
    for step in range(STEPS):
        layer_input = inputs[:, step]
        for index, cell in enumerate(layer.cells):
            layer_input, step_states[index] = cell.step(layer_input, step_states[index])
        step_outputs.append(layer_input)

    assert_close(chunk_outputs, whole_outputs, "chunked outputs", F64)
    assert_close(torch.stack(step_outputs, 1), whole_outputs, "stepped outputs", F64)
    for index, whole_state in enumerate(whole_states):
        assert_states_close(chunk_states[index], whole_state, f"chunked state[{index}]", F64)
        assert_states_close(step_states[index], whole_state, f"stepped state[{index}]", F64)
