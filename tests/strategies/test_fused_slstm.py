"""The ``fused`` sLSTM kernel against the sequential reference.

For the oracle entries ``slstm``, ``slstm_heads`` and ``slstm_sigmoid`` in float64: outputs,
final states and the gradients of the inputs, the initial state and every parameter, from the
zero state (the empty memory's first step), with lengths and random initial states, and with
resets. Ties of the stabilizer's max (``log f_t + m_{t-1} == i~_t`` at every step) take the
gradient torch autograd gives the cell. In float32 the two agree within 1e-4 relative; inputs in
the thousands overflow neither.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_all_close
from oracle_table import build_oracle_cell, random_oracle_state
from torch import Tensor

from rnnkit.strategies import STRATEGIES

F64, F32 = torch.float64, torch.float32
BATCH, STEPS, INPUT_SIZE, HIDDEN_SIZE = 3, 37, 4, 16
LENGTHS = (37, 20, 1)
CONFIGS = ("slstm", "slstm_heads", "slstm_sigmoid")
# variant -> (lengths and a random initial state, resets)
VARIANTS = {"": (False, False), "len-h0": (True, False), "len-h0-resets": (True, True)}
FLOAT32_RELATIVE = 1e-4


def case_id(config: str, variant: str, dtype: torch.dtype) -> str:
    """``slstm_heads-fused-B3-T37-H16-len-h0-f64``."""
    shape = f"B{BATCH}-T{STEPS}-H{HIDDEN_SIZE}"
    return "-".join(
        filter(None, [config, "fused", shape, variant, {F64: "f64", F32: "f32"}[dtype]])
    )


def make_resets() -> Tensor:
    """``(B, T)``: row 0 restarts at 5, 6 (a one-step segment) and 30, row 1 at 10 and at 25
    (past its length), row 2 at step 0 only (it starts from the zero state)."""
    resets = torch.zeros(BATCH, STEPS, dtype=torch.bool)
    resets[0, [5, 6, 30]] = True
    resets[1, [10, 25]] = True
    resets[2, 0] = True
    return resets


def make_case(config: str, variant: str, dtype: torch.dtype, scale: float = 1.0):
    """The cell, inputs ``(B, T, D)`` times ``scale``, initial state, lengths, resets."""
    with_lengths, with_resets = VARIANTS[variant]
    cell = build_oracle_cell(config, INPUT_SIZE, HIDDEN_SIZE, dtype)
    generator = torch.Generator().manual_seed(STEPS)
    inputs = scale * torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=dtype, generator=generator)
    state = random_oracle_state(config, cell, BATCH, generator) if with_lengths else None
    lengths = torch.tensor(LENGTHS) if with_lengths else None
    resets = make_resets() if with_resets else None
    return cell, inputs.requires_grad_(), state, lengths, resets


def run_with_gradients(strategy: str, cell, inputs, state, lengths, resets):
    """Outputs, final state and the gradients of a weighted sum of both with respect to the
    inputs, the initial state (when given) and every parameter, in that order."""
    outputs, final_state = STRATEGIES[strategy](cell, inputs, state, lengths, resets=resets)
    generator = torch.Generator().manual_seed(1)
    loss = sum(
        (tensor * torch.randn(tensor.shape, generator=generator, dtype=F64).to(tensor)).sum()
        for tensor in (outputs, *final_state)
    )
    wrt = [inputs, *(state or ()), *cell.parameters()]
    gradients = torch.autograd.grad(loss, wrt, allow_unused=True)
    return [outputs, *final_state, *gradients]


def result_names(cell, state) -> list[str]:
    names = ["outputs", *(f"final state.{field}" for field in cell.state_type._fields)]
    names.append("grad of inputs")
    names += [f"grad of initial state.{field}" for field in (state._fields if state else ())]
    return names + [f"grad of {name}" for name, _ in cell.named_parameters()]


def assert_relative_close(actual, expected, names, relative: float) -> None:
    """Each tensor within ``relative`` of the largest magnitude of the expected one (at least
    1: a gradient that is zero up to float32 underflow, 1e-38, has no relative error)."""
    for name, got, want in zip(names, actual, expected, strict=True):
        assert got.shape == want.shape, f"{name}: {tuple(got.shape)} != {tuple(want.shape)}"
        assert torch.isfinite(got).all(), f"{name} is not finite"
        scale = want.detach().abs().max().clamp_min(1.0)
        error = float((got - want).detach().abs().max() / scale)
        assert error <= relative, f"{name} differs: relative error {error:.2e}"


@pytest.mark.parametrize(
    ("config", "variant"),
    [
        pytest.param(config, variant, id=case_id(config, variant, F64))
        for config in CONFIGS
        for variant in VARIANTS
    ],
)
def test_fused_slstm_matches_sequential(config, variant):
    cell, inputs, state, lengths, resets = make_case(config, variant, F64)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    assert_all_close(actual, expected, result_names(cell, state), F64)


@pytest.mark.parametrize("config", [pytest.param(c, id=f"{c}-fused-ties-f64") for c in CONFIGS])
def test_fused_slstm_ties_of_the_stabilizer(config):
    """With ``f~ = 0`` (exponential gate), constant ``i~ = 1`` and ``m_0 = 1``, ``log f_t +
    m_{t-1} == i~_t`` exactly at every step: the max's gradient goes where autograd sends it."""
    cell, inputs, state, lengths, resets = make_case(config, "len-h0-resets", F64)
    hidden = HIDDEN_SIZE
    with torch.no_grad():
        cell.weight_ih[: 2 * hidden].zero_()  # i~ and f~ independent of the inputs
        cell.bias_ih[:hidden] = 1.0
        cell.bias_ih[hidden : 2 * hidden] = 0.0 if config != "slstm_sigmoid" else 40.0
        cell.weight_hh.unflatten(1, (4, cell.head_size))[:, :2].zero_()
        state.m.fill_(1.0)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    assert_all_close(actual, expected, result_names(cell, state), F64)


@pytest.mark.parametrize(
    "config", [pytest.param(c, id=case_id(c, "len-h0-resets", F32)) for c in CONFIGS]
)
def test_fused_slstm_float32_agrees_with_sequential(config):
    cell, inputs, state, lengths, resets = make_case(config, "len-h0-resets", F32)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    assert_relative_close(actual, expected, result_names(cell, state), FLOAT32_RELATIVE)


@pytest.mark.parametrize(
    ("config", "dtype"),
    [
        pytest.param(config, dtype, id=f"{config}-fused-large-inputs-{name}")
        for config in CONFIGS
        for dtype, name in ((F32, "f32"), (F64, "f64"))
    ],
)
def test_fused_slstm_large_inputs_do_not_overflow(config, dtype):
    """Inputs in the thousands: every result finite and as the sequential reference's."""
    cell, inputs, state, lengths, resets = make_case(config, "len-h0-resets", dtype, 3000.0)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    assert float(actual[4].detach().abs().max()) > 1000, "the stabilizer should be large"
    relative = FLOAT32_RELATIVE if dtype == F32 else 1e-10
    assert_relative_close(actual, expected, result_names(cell, state), relative)


@pytest.mark.parametrize(
    "threads", [pytest.param(t, id=f"slstm_heads-fused-threads{t}") for t in (1, 2)]
)
def test_fused_slstm_rows_split_over_threads(threads):
    """One thread runs every row; two split the batch (1 and 2 rows): both match sequential."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cell, inputs, state, lengths, resets = make_case("slstm_heads", "len-h0-resets", F64)
        actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    finally:
        torch.set_num_threads(previous)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    assert_all_close(actual, expected, result_names(cell, state), F64)
