"""Gated DeltaNet against DeltaNet and its gate's definition (values against the sequential
reference for every strategy come from the oracle table)."""

from __future__ import annotations

import torch
from torch.nn import functional

from rnnkit.cells import DeltaNetCell, GatedDeltaNetCell
from rnnkit.strategies import STRATEGIES


def test_no_decay_is_deltanet():
    torch.manual_seed(0)
    gated = GatedDeltaNetCell(5, 8, num_heads=2).double()
    plain = DeltaNetCell(5, 8, num_heads=2).double()
    with torch.no_grad():
        gated.decay_log_rate.fill_(-float("inf"))  # rate 0: alpha = 1
        plain.weight_ih.copy_(gated.weight_ih[: plain.weight_ih.shape[0]])
        plain.bias_ih.copy_(gated.bias_ih[: plain.bias_ih.shape[0]])
        plain.weight_out.copy_(gated.weight_out)
        plain.bias_out.copy_(gated.bias_out)
    inputs = torch.randn(3, 11, 5, dtype=torch.float64)
    for strategy in ("sequential", "scan"):
        expected, expected_state = STRATEGIES[strategy](plain, inputs)
        got, got_state = STRATEGIES[strategy](gated, inputs)
        torch.testing.assert_close(got, expected, msg=lambda m, s=strategy: f"{s}: {m}")
        torch.testing.assert_close(got_state.memory, expected_state.memory)


def test_gate_is_mamba2s_decay_and_initialized_as_the_reference():
    torch.manual_seed(1)
    cell = GatedDeltaNetCell(4, 6, num_heads=3)
    rate = cell.decay_log_rate.exp()
    assert ((rate >= 1) & (rate <= 16)).all(), f"exp(decay_log_rate) outside [1, 16]: {rate}"
    step = functional.softplus(cell.decay_bias)
    assert ((step >= 1e-3 - 1e-9) & (step <= 0.1 + 1e-9)).all(), f"softplus(bias): {step}"
    projected = cell.project_inputs(torch.randn(2, 4))
    gate = projected[..., -3:]
    expected = -rate * functional.softplus(gate + cell.decay_bias)
    torch.testing.assert_close(cell.log_decay(projected), expected)
    assert (cell.log_decay(projected) < 0).all()
