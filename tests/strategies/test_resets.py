"""Resets (episode and document boundaries): ``resets (B, T)`` restarts a sequence from the
zero state before every step where it is True, under every strategy; the initial state given
starts the first segment only (so chunks with a carried state equal one run).

The oracle of the oracle: the sequential reference with resets equals each row's segments run
separately, the first from the initial state and the others from the zero state. Then every
registered strategy that accepts an ``ORACLE_TABLE`` entry equals the reference with resets in
float64 (outputs, final states and the gradients of the inputs, the initial state and every
parameter), with lengths and resets together, resets at step 0, consecutive resets, resets past
a row's length and a row without any. ``rnnkit.nn.Recurrent``, stacked and bidirectional, with
resets equals its segments run separately. Bad resets raise errors that name them.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from oracle_table import ORACLE_TABLE, build_oracle_cell, random_oracle_state
from test_oracle import (
    ACCEPTING,
    TOLERANCES,
    check_close,
    fresh_strategy,
    gradient_names,
    loss_of,
)
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError
from rnnkit.strategies.newton import NewtonStrategy
from rnnkit.strategies.segments import find_segments
from rnnkit.strategies.validation import check_resets

F64 = torch.float64
EXACT = TOLERANCES[("exact", F64)]
# (B, T, D, H); row 0 has no reset, row 1 one at step 0 (a no-op) and one inside, row 2 two in
# a row (a one-step segment) and one past its length, row 3 a last segment of one step.
BATCH, STEPS, INPUT_SIZE, HIDDEN_SIZE = 4, 9, 3, 4
LENGTHS = (9, 7, 5, 2)
RESET_STEPS = ((), (0, 4), (2, 3, 6), (1, 5))
# Strategies that take resets in their own change: a TypeError naming resets skips the case.


def make_resets(reset_steps=RESET_STEPS, steps: int = STEPS) -> torch.Tensor:
    """``(B, T)`` booleans, True at ``reset_steps[b]`` in row b."""
    resets = torch.zeros(len(reset_steps), steps, dtype=torch.bool)
    for row, row_steps in enumerate(reset_steps):
        resets[row, list(row_steps)] = True
    return resets


def segment_bounds(resets: torch.Tensor, length: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of one row: cut before every reset step within ``length``."""
    starts = [0] + [t for t in range(1, length) if bool(resets[t])]
    return list(zip(starts, starts[1:] + [length], strict=True))


def run_case(strategy, cell, inputs, state, lengths, resets):
    """Outputs, final state and the gradients of inputs, initial state and parameters."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a Newton fallback fails the case
        outputs, final_state = strategy(cell, inputs, state, lengths, resets=resets)
    wrt = [inputs, *(state or ()), *cell.parameters()]
    gradients = torch.autograd.grad(loss_of(outputs, final_state), wrt, allow_unused=True)
    return outputs, final_state, gradients


def run_segments_separately(cell, inputs, state, lengths, resets):
    """The oracle of the oracle: each row's segments one by one through ``sequential``, the
    first from the row's initial state, the others from the zero state; outputs zero past each
    length, the last segment's state."""
    run = STRATEGIES["sequential"]
    rows, finals = [], []
    for row in range(inputs.shape[0]):
        row_state = None if state is None else type(state)(*(f[row : row + 1] for f in state))
        pieces, final = [], None
        for start, end in segment_bounds(resets[row], int(lengths[row])):
            given = start == 0 and not bool(resets[row, 0])  # a step-0 reset starts from zero
            outputs, final = run(
                cell, inputs[row : row + 1, start:end], row_state if given else None
            )
            pieces.append(outputs)
        row_outputs = torch.cat(pieces, 1)
        padding = row_outputs.new_zeros(1, inputs.shape[1] - row_outputs.shape[1], cell.output_size)
        rows.append(torch.cat([row_outputs, padding], 1))
        finals.append(final)
    final_state = type(finals[0])(*(torch.cat(fields, 0) for fields in zip(*finals, strict=True)))
    return torch.cat(rows, 0), final_state


def make_inputs(config: str, initial: bool = True):
    """The cell of ``config``, inputs ``(B, T, D)`` and a random initial state (or None)."""
    cell = build_oracle_cell(config, INPUT_SIZE, HIDDEN_SIZE)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=F64, generator=generator)
    state = random_oracle_state(config, cell, BATCH, generator) if initial else None
    return cell, inputs.requires_grad_(), state


def check_results(actual, expected, cell, state, tolerance) -> None:
    check_close(actual[0], expected[0], "outputs", tolerance)
    for field, got, want in zip(expected[1]._fields, actual[1], expected[1], strict=True):
        check_close(got, want, f"final state.{field}", tolerance)
    for name, got, want in zip(gradient_names(cell, state), actual[2], expected[2], strict=True):
        if got is None or want is None:
            assert got is None and want is None, f"{name}: one is None"
        else:
            check_close(got, want, name, tolerance)


@pytest.mark.parametrize("config", list(ORACLE_TABLE))
def test_reference_with_resets_equals_segments_run_separately(config):
    cell, inputs, state = make_inputs(config)
    lengths, resets = torch.tensor(LENGTHS), make_resets()
    expected = run_case(run_segments_separately, cell, inputs, state, lengths, resets)
    actual = run_case(STRATEGIES["sequential"], cell, inputs, state, lengths, resets)
    check_results(actual, expected, cell, state, EXACT)


def strategy_cases() -> list:
    """Every accepting strategy with ``len-h0``; ``zero`` too for the strategies without a
    ``:`` (the variants share their resets code with ``scan`` and ``newton``; this keeps the
    file's runtime down)."""
    cases = []
    for config, strategies in ACCEPTING.items():
        for strategy in strategies:
            variants = ["len-h0"] if ":" in strategy else ["len-h0", "zero"]
            for variant in variants:
                case_id = f"{config}-{strategy}-B{BATCH}-T{STEPS}-H{HIDDEN_SIZE}-{variant}-f64"
                cases.append(pytest.param(config, strategy, variant, id=case_id))
    return cases


@pytest.mark.parametrize(("config", "strategy", "variant"), strategy_cases())
def test_strategy_with_resets_matches_sequential(config, strategy, variant):
    """``len-h0``: lengths, resets and a random initial state; ``zero``: full lengths, the zero
    initial state and resets in every row but the first."""
    cell, inputs, state = make_inputs(config, initial=variant == "len-h0")
    if variant == "len-h0":
        lengths, resets = torch.tensor(LENGTHS), make_resets()
    else:
        lengths, resets = None, make_resets(((), (0, 8), (1, 2, 5), (4,)))
    runner = fresh_strategy(strategy, config)
    expected = run_case(STRATEGIES["sequential"], cell, inputs, state, lengths, resets)
    actual = run_case(runner, cell, inputs, state, lengths, resets)
    if isinstance(runner, NewtonStrategy):
        for report in runner.reports:
            assert report.converged and report.fallback_from is None, f"{strategy}: {report}"
    family = "newton" if isinstance(runner, NewtonStrategy) else "exact"
    check_results(actual, expected, cell, state, TOLERANCES[(family, F64)])


def first_accepted(strategy: str) -> str:
    """The first ``ORACLE_TABLE`` entry ``strategy`` accepts (``lstm`` for ``sequential`` and
    ``auto``); skips a strategy that accepts none here (``scan:triton`` without a GPU)."""
    if strategy in ("sequential", "auto"):
        return "lstm"
    config = next((c for c, names in ACCEPTING.items() if strategy in names), None)
    if config is None:
        pytest.skip(f"strategy {strategy!r} runs no ORACLE_TABLE entry on this machine")
    return config


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_resets_that_reset_nothing_change_nothing(strategy):
    """No True value, or True only past each length: the same as no resets; True at step 0:
    the same as starting those rows from the zero state."""
    config = first_accepted(strategy)
    cell, inputs, state = make_inputs(config)
    runner = fresh_strategy(strategy, config)
    lengths = torch.tensor(LENGTHS)
    with torch.no_grad():
        expected = runner(cell, inputs, state, lengths)
        for resets in (make_resets(((),) * BATCH), make_resets(((), (8,), (5,), (2, 3)))):
            actual = runner(cell, inputs, state, lengths, resets=resets)
            check_close(actual[0], expected[0], "outputs", EXACT)
            for field, got, want in zip(expected[1]._fields, actual[1], expected[1], strict=True):
                check_close(got, want, f"final state.{field}", EXACT)
        first_rows = torch.tensor([True, False, True, False])[:, None]
        zero_started = type(state)(*(torch.where(first_rows, 0.0, field) for field in state))
        expected = runner(cell, inputs, zero_started, lengths)
        actual = runner(cell, inputs, state, lengths, resets=make_resets(((0,), (), (0,), ())))
        check_close(actual[0], expected[0], "outputs with resets at step 0", EXACT)


@pytest.mark.parametrize("strategy", ["sequential", "native", "fused", "scan", "newton"])
@pytest.mark.parametrize("config", ["lstm", "gru", "mingru", "slstm"])
def test_chunks_with_the_carried_state_equal_one_run_with_resets(config, strategy):
    """Full = chunked with resets: a reset restarts from zero, not from the chunk's state."""
    cell, inputs, state = make_inputs(config)
    resets = torch.zeros(inputs.shape[:2], dtype=torch.bool)
    resets[0, 2] = resets[1, 6] = resets[2, 7] = True  # before and after the chunk boundary
    resets[1, 4] = True  # on it: the second chunk's step 0
    run = STRATEGIES[strategy]
    try:
        with torch.no_grad():
            expected, expected_final = run(cell, inputs, state, None, resets)
            first, carried = run(cell, inputs[:, :4], state, None, resets[:, :4])
            second, final = run(cell, inputs[:, 4:], carried, None, resets[:, 4:])
    except StrategyUnsupportedError:
        pytest.skip(f"{strategy} does not run {config}")
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if strategy == "newton" else {}
    torch.testing.assert_close(torch.cat([first, second], 1), expected, **tolerance)
    for got, want in zip(final, expected_final, strict=True):
        torch.testing.assert_close(got, want, **tolerance)


def test_find_segments_cuts_rows_at_resets_within_lengths():
    segments = find_segments(make_resets(), torch.tensor(LENGTHS))
    assert segments.rows.tolist() == [0, 1, 1, 2, 2, 2, 3, 3]
    assert segments.starts.tolist() == [0, 0, 4, 0, 2, 3, 0, 1]
    assert segments.lengths.tolist() == [9, 4, 3, 2, 1, 2, 1, 1]
    assert segments.last.tolist() == [0, 2, 5, 7]


# (config, strategy) pairs for two bidirectional layers: every strategy family and linear form
RECURRENT_CASES = [
    ("lstm", "sequential"),
    ("lstm", "native"),
    ("lstm", "newton"),
    ("gru", "native"),
    ("mingru", "scan"),
    ("lru", "scan:chunked"),
    ("selective_ssm", "scan"),
    ("gla", "scan"),
    ("deltanet", "scan"),
    ("aaren", "scan"),
    ("paragru", "newton"),
]


def build_layer(config: str, strategy: str) -> Recurrent:
    """Two bidirectional layers of ``config`` run by ``strategy``, parameters perturbed."""
    name, options = ORACLE_TABLE[config]
    torch.manual_seed(0)
    layer = Recurrent(
        name,
        INPUT_SIZE,
        HIDDEN_SIZE,
        num_layers=2,
        bidirectional=True,
        strategy=strategy,
        **options,
    ).to(F64)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return layer


def layer_segments_separately(layer, inputs, states, lengths, resets):
    """Each row's segments through ``layer`` one by one: forward cells start the first segment
    from the row's initial states and the others from zero, reverse cells start the last
    segment (their first) from them; forward cells end in the last segment's state, reverse
    cells in the first segment's."""
    rows, finals = [], []
    for row in range(inputs.shape[0]):
        row_states = tuple(type(s)(*(f[row : row + 1] for f in s)) for s in states)
        pieces, segment_finals = [], []
        bounds = segment_bounds(resets[row], int(lengths[row]))
        for index, (start, end) in enumerate(bounds):
            # a reset at step 0 is a boundary before the sequence: forward cells start from zero
            first_forward = index == 0 and not bool(resets[row, 0])
            given = [first_forward, index == len(bounds) - 1] * (len(row_states) // 2)
            segment_states = tuple(
                state if use else type(state)(*(torch.zeros_like(f) for f in state))
                for state, use in zip(row_states, given, strict=True)
            )
            outputs, final = layer(inputs[row : row + 1, start:end], segment_states)
            pieces.append(outputs)
            segment_finals.append(final)
        row_outputs = torch.cat(pieces, 1)
        padding = row_outputs.new_zeros(
            1, inputs.shape[1] - row_outputs.shape[1], row_outputs.shape[2]
        )
        rows.append(torch.cat([row_outputs, padding], 1))
        finals.append([segment_finals[-1 if index % 2 == 0 else 0][index] for index in range(4)])
    final_states = tuple(
        type(finals[0][index])(
            *(torch.cat(f, 0) for f in zip(*(r[index] for r in finals), strict=True))
        )
        for index in range(4)
    )
    return torch.cat(rows, 0), final_states


def layer_results(run, layer, inputs, states):
    outputs, finals = run()
    loss = loss_of(outputs, [field for final in finals for field in final])
    wrt = [inputs, *(field for state in states for field in state), *layer.parameters()]
    return outputs, finals, torch.autograd.grad(loss, wrt, allow_unused=True)


@pytest.mark.parametrize(
    ("config", "strategy"),
    [
        pytest.param(*case, id=f"{case[0]}-{case[1]}-L2-bi-B4-T9-H4-len-h0-f64")
        for case in RECURRENT_CASES
    ],
)
def test_stacked_bidirectional_with_resets_equals_segments_run_separately(config, strategy):
    layer = build_layer(config, strategy)
    reference = build_layer(config, "sequential")
    reference.load_state_dict(layer.state_dict())
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=F64, generator=generator)
    inputs.requires_grad_()
    states = tuple(random_oracle_state(config, cell, BATCH, generator) for cell in layer.cells)
    lengths, resets = torch.tensor(LENGTHS), make_resets()
    actual = layer_results(lambda: layer(inputs, states, lengths, resets), layer, inputs, states)
    expected = layer_results(
        lambda: layer_segments_separately(reference, inputs, states, lengths, resets),
        reference,
        inputs,
        states,
    )
    tolerance = TOLERANCES[("newton" if strategy.startswith("newton") else "exact", F64)]
    check_close(actual[0], expected[0], "outputs", tolerance)
    for index, (got_state, want_state) in enumerate(zip(actual[1], expected[1], strict=True)):
        for field, got, want in zip(want_state._fields, got_state, want_state, strict=True):
            check_close(got, want, f"final state[{index}].{field}", tolerance)
    names = ["grad of inputs"]
    names += [f"grad of initial state[{i}].{f}" for i, s in enumerate(states) for f in s._fields]
    names += [f"grad of {name}" for name, _ in layer.named_parameters()]
    for name, got, want in zip(names, actual[2], expected[2], strict=True):
        if got is None or want is None:
            assert got is None and want is None, f"{name}: one is None"
        else:
            check_close(got, want, name, tolerance)


def test_time_major_and_packed_resets_equal_batch_first():
    """``batch_first=False`` takes ``resets (T, B)``; a PackedSequence its padded layout."""
    batch_first = build_layer("lstm", "native")
    time_major = build_layer("lstm", "native")
    time_major.batch_first = False
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=F64, generator=generator)
    lengths, resets = torch.tensor(LENGTHS), make_resets()
    with torch.no_grad():
        expected, expected_finals = batch_first(inputs, None, lengths, resets)
        outputs, finals = time_major(inputs.transpose(0, 1), None, lengths, resets.T)
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        packed_outputs, packed_finals = batch_first(packed, None, None, resets[:, : max(LENGTHS)])
    check_close(outputs.transpose(0, 1), expected, "time-major outputs", EXACT)
    check_close(
        packed_outputs.data,
        pack_padded_sequence(expected, lengths, batch_first=True, enforce_sorted=False).data,
        "packed outputs",
        EXACT,
    )
    for index, (want, got, got_packed) in enumerate(
        zip(expected_finals, finals, packed_finals, strict=True)
    ):
        for field in want._fields:
            check_close(
                getattr(got, field),
                getattr(want, field),
                f"time-major final state[{index}].{field}",
                EXACT,
            )
            check_close(
                getattr(got_packed, field),
                getattr(want, field),
                f"packed final state[{index}].{field}",
                EXACT,
            )


RESET_ERRORS = {
    "list": ([[False] * STEPS] * BATCH, TypeError, r"resets must be a torch.Tensor .* got list"),
    "shape": (
        torch.zeros(BATCH, STEPS + 1, dtype=torch.bool),
        ValueError,
        rf"resets must have shape \(batch, time\) = \({BATCH}, {STEPS}\), "
        rf"got shape \({BATCH}, {STEPS + 1}\)",
    ),
    "rank-1": (torch.zeros(STEPS, dtype=torch.bool), ValueError, r"got shape \(9,\)"),
    "dtype": (
        torch.zeros(BATCH, STEPS, dtype=torch.int64),
        TypeError,
        r"resets must have dtype torch.bool, got torch.int64",
    ),
}


@pytest.mark.parametrize("case", list(RESET_ERRORS))
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_bad_resets_raise_naming_them(strategy, case):
    resets, error, match = RESET_ERRORS[case]
    config = first_accepted(strategy)
    cell, inputs, _ = make_inputs(config, initial=False)
    runner = fresh_strategy(strategy, config)
    with pytest.raises(error, match=match):
        runner(cell, inputs, None, None, resets=resets)


def test_bad_resets_raise_in_recurrent_and_check_resets():
    layer = build_layer("lstm", "sequential")
    layer.batch_first = False
    inputs = torch.zeros(STEPS, BATCH, INPUT_SIZE, dtype=F64)
    with pytest.raises(ValueError, match=r"resets must have shape \(time, batch\) = \(9, 4\)"):
        layer(inputs, resets=torch.zeros(BATCH, STEPS, dtype=torch.bool))
    with pytest.raises(TypeError, match="resets must have dtype torch.bool"):
        check_resets(torch.zeros(BATCH, STEPS), BATCH, STEPS)
