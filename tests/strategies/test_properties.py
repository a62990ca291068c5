"""Property-based tests: random shapes, lengths and initial states for every strategy that
accepts a few cells per family, against ``sequential`` in float64 (outputs and final states)."""

from __future__ import annotations

import warnings

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle_table import build_oracle_cell, random_oracle_state
from test_oracle import ACCEPTING, TOLERANCES, check_close, fresh_strategy

from rnnkit.strategies import STRATEGIES

# A few entries per family: classic, gated-linear, matrix-state, diagonal SSM, ParaRNN.
PROPERTY_CONFIGS = ["gru", "lstm_peephole", "mingru", "gla", "deltanet", "lru", "paragru"]
CASES = [(config, strategy) for config in PROPERTY_CONFIGS for strategy in ACCEPTING[config]]


@st.composite
def problems(draw):
    """(config, strategy, batch, steps, hidden, lengths or None, initial state?, seed)."""
    config, strategy = draw(st.sampled_from(CASES))
    batch = draw(st.integers(1, 4))
    steps = draw(st.integers(1, 24))
    hidden = draw(st.sampled_from([4, 6, 8]))
    lengths = draw(st.none() | st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
    return (
        config,
        strategy,
        batch,
        steps,
        hidden,
        lengths,
        draw(st.booleans()),
        draw(st.integers(0, 99)),
    )


@settings(max_examples=60, deadline=None)
@given(problems())
def test_random_problem_matches_sequential(problem):
    config, strategy, batch, steps, hidden, lengths, initial, seed = problem
    cell = build_oracle_cell(config, 3, hidden, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(batch, steps, 3, dtype=torch.float64, generator=generator)
    state = random_oracle_state(config, cell, batch, generator) if initial else None
    lengths = None if lengths is None else torch.tensor(lengths)
    runner = fresh_strategy(strategy, config)
    family = "newton" if strategy.startswith("newton") else "exact"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("error")  # a Newton fallback warning fails the example
        expected = STRATEGIES["sequential"](cell, inputs, state, lengths)
        actual = runner(cell, inputs, state, lengths)
    tolerance = TOLERANCES[(family, torch.float64)]
    check_close(actual[0], expected[0], f"{strategy} outputs", tolerance)
    for field, got, want in zip(expected[1]._fields, actual[1], expected[1], strict=True):
        check_close(got, want, f"{strategy} final state.{field}", tolerance)
