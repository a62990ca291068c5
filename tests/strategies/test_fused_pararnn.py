"""The ``fused`` strategy against the sequential reference for ParaGRU (diagonal and with heads)
and ParaLSTM (``rnnkit/strategies/kernels/fused_pararnn.py``).

In float64: outputs, final states and the gradients of the inputs, the initial state and every
parameter, plain, with lengths and a random initial state, and with resets as well (including a
reset at step 0, a one-step segment and one past a row's length), also with the rows split over
one and three threads; ``bias=False``, one head per unit and four heads. In float32 the two agree
within 1e-4 of each tensor's largest value. ``auto`` picks ``fused`` for these cells.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_all_close
from oracle_table import build_oracle_cell, random_oracle_state
from torch import Tensor

from rnnkit.cells import make_cell
from rnnkit.strategies import STRATEGIES, choose

F64, F32 = torch.float64, torch.float32
BATCH, STEPS, INPUT_SIZE, HIDDEN_SIZE = 3, 37, 4, 16
LENGTHS = (37, 20, 1)
CONFIGS = ("paragru", "paragru_heads", "paralstm")
# variant -> (lengths and a random initial state, resets)
VARIANTS = {"": (False, False), "len-h0": (True, False), "len-h0-resets": (True, True)}
FLOAT32_RELATIVE = 1e-4


def case_id(config: str, variant: str, dtype: torch.dtype) -> str:
    """``paragru-fused-B3-T37-H16-len-h0-f64``."""
    shape = f"B{BATCH}-T{STEPS}-H{HIDDEN_SIZE}"
    return "-".join(
        filter(None, [config, "fused", shape, variant, {F64: "f64", F32: "f32"}[dtype]])
    )


def make_resets() -> Tensor:
    """``(B, T)``: row 0 restarts at 5, 6 (a one-step segment) and 30, row 1 at 10 and at 25
    (past its length), row 2 at step 0 only (a no-op)."""
    resets = torch.zeros(BATCH, STEPS, dtype=torch.bool)
    resets[0, [5, 6, 30]] = True
    resets[1, [10, 25]] = True
    resets[2, 0] = True
    return resets


def make_case(config: str, variant: str, dtype: torch.dtype):
    """The cell, inputs ``(B, T, D)``, initial state, lengths and resets of the variant."""
    with_lengths, with_resets = VARIANTS[variant]
    cell = build_oracle_cell(config, INPUT_SIZE, HIDDEN_SIZE, dtype)
    generator = torch.Generator().manual_seed(STEPS)
    inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=dtype, generator=generator)
    state = random_oracle_state(config, cell, BATCH, generator) if with_lengths else None
    lengths = torch.tensor(LENGTHS) if with_lengths else None
    resets = make_resets() if with_resets else None
    return cell, inputs.requires_grad_(), state, lengths, resets


def run_with_gradients(strategy: str, cell, inputs, state, lengths, resets) -> list:
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


@pytest.mark.parametrize(
    ("config", "variant"),
    [
        pytest.param(config, variant, id=case_id(config, variant, F64))
        for config in CONFIGS
        for variant in VARIANTS
    ],
)
def test_fused_matches_sequential(config, variant):
    cell, inputs, state, lengths, resets = make_case(config, variant, F64)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    assert_all_close(actual, expected, result_names(cell, state), F64)


@pytest.mark.parametrize(
    "config", [pytest.param(c, id=case_id(c, "len-h0-resets", F32)) for c in CONFIGS]
)
def test_fused_float32_agrees_with_sequential(config):
    cell, inputs, state, lengths, resets = make_case(config, "len-h0-resets", F32)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    for name, got, want in zip(result_names(cell, state), actual, expected, strict=True):
        assert got is not None and want is not None, f"{name}: a gradient is None"
        assert got.shape == want.shape, f"{name}: {tuple(got.shape)} != {tuple(want.shape)}"
        scale = want.detach().abs().max().clamp_min(torch.finfo(F32).tiny)
        error = float((got - want).detach().abs().max() / scale)
        assert error <= FLOAT32_RELATIVE, f"{name} differs: relative error {error:.2e}"


@pytest.mark.parametrize("config", CONFIGS)
def test_auto_chooses_fused(config):
    """No torch kernel and a nonlinear state: ``auto`` runs these cells with ``fused``."""
    name, reason = choose(build_oracle_cell(config, INPUT_SIZE, HIDDEN_SIZE))
    assert name == "fused", reason


def test_without_bias_and_with_one_head_per_unit():
    """``bias=False``, ``num_heads = H`` (1x1 blocks: the diagonal through the block loop) and
    four heads, with lengths."""
    for options in ({"bias": False}, {"num_heads": HIDDEN_SIZE}, {"num_heads": 4}):
        torch.manual_seed(0)
        cell = make_cell("paragru", INPUT_SIZE, HIDDEN_SIZE, **options).to(F64)
        inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=F64, requires_grad=True)
        expected = run_with_gradients("sequential", cell, inputs, None, LENGTHS, None)
        actual = run_with_gradients("fused", cell, inputs, None, LENGTHS, None)
        assert_all_close(actual, expected, result_names(cell, None), F64)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("config", ["paragru_heads", "paralstm"])
def test_rows_split_over_threads(config, threads):
    """One block of rows per thread (1 thread: one block; 3: one row each)."""
    previous_threads = torch.get_num_threads()
    cell, inputs, state, lengths, resets = make_case(config, "len-h0-resets", F64)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    torch.set_num_threads(threads)
    try:
        actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    finally:
        torch.set_num_threads(previous_threads)
    assert_all_close(actual, expected, result_names(cell, state), F64)
