"""The ``fused`` strategy against the sequential reference, for every cell with a fused kernel.

Per configuration of the LSTM (bias or not, peepholes, layer norm, ``proj_size``), the GRU (bias
or not), Elman (tanh, relu) and Jordan (``output_size`` != ``hidden_size``) in float64: outputs,
final states and the gradients of the inputs, the initial state and every parameter, with
lengths and random initial states, with resets, and with recurrent regularization (input and
hidden dropout, DropConnect, zoneout) in training mode (the same seed before each run, so both
strategies draw the same masks) and in evaluation mode. In float32 the two agree within 1e-4
relative. Cells without a kernel and half-precision cells are refused with the reason.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_all_close, build_cell, random_state
from oracle_table import build_oracle_cell
from torch import Tensor

from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError

F64, F32 = torch.float64, torch.float32
BATCH, STEPS, INPUT_SIZE, HIDDEN_SIZE = 3, 37, 4, 16
LENGTHS = (37, 20, 1)
# entries of the oracle table (tests/oracle_table.py) with a fused kernel
CONFIGS = (
    "lstm",
    "lstm_nobias",
    "lstm_proj",
    "lstm_peephole",
    "lstm_layernorm",
    "lstm_peephole_layernorm",
    "gru",
    "gru_nobias",
    "elman",
    "elman_relu",
    "jordan",
    "jordan_out5",
)
REGULARIZATION = {
    "input_dropout": 0.2,
    "hidden_dropout": 0.3,
    "weight_dropout": 0.25,
    "zoneout": 0.3,
}
# variant -> (lengths and a random initial state, resets, regularization: None, "train", "eval")
VARIANTS = {
    "": (False, False, None),
    "len-h0": (True, False, None),
    "len-h0-resets": (True, True, None),
    "len-h0-resets-train": (True, True, "train"),
    "len-h0-resets-eval": (True, True, "eval"),
}
FLOAT32_RELATIVE = 1e-4
SEED = 7  # set before each run: the regularization masks of both strategies are the same


def case_id(config: str, variant: str, dtype: torch.dtype) -> str:
    """``gru-fused-B3-T37-H16-len-h0-f64``."""
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
    """The cell (in the variant's mode), inputs ``(B, T, D)``, initial state, lengths, resets."""
    with_lengths, with_resets, regularization = VARIANTS[variant]
    options = REGULARIZATION if regularization else {}
    cell = build_cell(config, INPUT_SIZE, HIDDEN_SIZE, dtype, **options)
    cell.train(regularization != "eval")
    generator = torch.Generator().manual_seed(STEPS)
    inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=dtype, generator=generator)
    state = random_state(cell, BATCH, generator) if with_lengths else None
    lengths = torch.tensor(LENGTHS) if with_lengths else None
    resets = make_resets() if with_resets else None
    return cell, inputs.requires_grad_(), state, lengths, resets


def run_with_gradients(strategy: str, cell, inputs, state, lengths, resets):
    """Outputs, final state and the gradients of a weighted sum of both with respect to the
    inputs, the initial state (when given) and every parameter, in that order."""
    torch.manual_seed(SEED)
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
    if VARIANTS[variant][2] == "train":
        assert cell.noise is not None and cell.noise.hidden_mask is not None, "no masks drawn"
    assert_all_close(actual, expected, result_names(cell, state), F64)


@pytest.mark.parametrize(
    "config", [pytest.param(c, id=case_id(c, "len-h0-resets-train", F32)) for c in CONFIGS]
)
def test_fused_float32_agrees_with_sequential(config):
    """Errors relative to each tensor's largest value, not elementwise: with layer norm the
    float32 reference is itself off from float64 by 1e-4 of that value on single elements
    (measured; fused is closer), more than an elementwise 1e-4 allows."""
    cell, inputs, state, lengths, resets = make_case(config, "len-h0-resets-train", F32)
    expected = run_with_gradients("sequential", cell, inputs, state, lengths, resets)
    actual = run_with_gradients("fused", cell, inputs, state, lengths, resets)
    for name, got, want in zip(result_names(cell, state), actual, expected, strict=True):
        if got is None or want is None:
            assert got is None and want is None, f"{name}: one is None"
            continue
        assert got.shape == want.shape, f"{name}: {tuple(got.shape)} != {tuple(want.shape)}"
        scale = want.detach().abs().max().clamp_min(torch.finfo(F32).tiny)
        error = float((got - want).detach().abs().max() / scale)
        assert error <= FLOAT32_RELATIVE, f"{name} differs: relative error {error:.2e}"


@pytest.mark.parametrize(
    ("config", "dtype", "reason"),
    [
        pytest.param("mingru", F64, "has no fused kernel", id="mingru-fused-f64"),
        pytest.param("gru", torch.float16, "float32 and float64", id="gru-fused-f16"),
        pytest.param("lstm", torch.bfloat16, "float32 and float64", id="lstm-fused-bf16"),
    ],
)
def test_fused_refuses_with_the_reason(config, dtype, reason):
    cell = build_oracle_cell(config, INPUT_SIZE, HIDDEN_SIZE, dtype)
    inputs = torch.zeros(1, 2, INPUT_SIZE, dtype=dtype)
    with pytest.raises(StrategyUnsupportedError, match=reason):
        STRATEGIES["fused"](cell, inputs)
