"""Negative eigenvalues for the delta-rule cells (Grazzi et al. 2025,
https://arxiv.org/abs/2411.12537): with ``allow_negative_eigenvalues`` ``beta = 2 sigmoid(.)``,
so the state transition of a step can have an eigenvalue near -1, under every strategy; without
it DeltaNet's transition ``I - beta k k^T`` has none below 0. (Values and gradients against
``sequential`` come from the oracle table's ``*_negative`` entries.)"""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells import DeltaNetCell, MatrixState, make_cell
from rnnkit.strategies import STRATEGIES

F64 = torch.float64
CELLS = {
    "deltanet": {"num_heads": 2},
    "gated_deltanet": {"num_heads": 2},
    "deltaproduct": {"num_heads": 2, "num_householder": 3, "gate": True},
}


def beta_rows(cell) -> slice:
    """The rows of ``weight_ih`` and ``bias_ih`` that give beta (after q, k and v)."""
    start = sum(cell.sizes[:3])
    return slice(start, start + cell.sizes[3])


def one_step_transition(cell, strategy: str) -> torch.Tensor:
    """``d S_1 / d S_0`` of one step of ``strategy``, ``(N, N)`` for a state of N numbers."""
    inputs = torch.randn(1, 1, cell.input_size, dtype=F64)
    memory = torch.randn(1, cell.state_sizes()[0], dtype=F64)

    def step(flat: torch.Tensor) -> torch.Tensor:
        return STRATEGIES[strategy](cell, inputs, MatrixState(flat))[1].memory

    return torch.autograd.functional.jacobian(step, memory)[0, :, 0]


def writing_cell(name: str, negative: bool, seed: int = 0):
    """The cell ``name`` in float64, every beta pre-activation near 40 (beta = 2 or 1), the
    memory barely decaying where there is a gate."""
    torch.manual_seed(seed)
    cell = make_cell(name, 3, 4, allow_negative_eigenvalues=negative, **CELLS[name]).double()
    with torch.no_grad():
        cell.weight_ih[beta_rows(cell)] *= 0.01
        cell.bias_ih[beta_rows(cell)] = 40.0
        if name != "deltanet":
            cell.decay_log_rate.fill_(-20.0)  # alpha = exp(-2e-9 softplus(.)): about 1
    return cell


@pytest.mark.parametrize("strategy", ["sequential", "scan"])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_an_eigenvalue_near_minus_one_is_reachable_only_with_the_option(name, strategy):
    eigenvalues = torch.linalg.eigvals(one_step_transition(writing_cell(name, True), strategy))
    real = eigenvalues[eigenvalues.imag.abs() < 1e-9].real
    assert real.min() < -0.999, f"{name}: no eigenvalue near -1 with the option: {eigenvalues}"
    assert eigenvalues.abs().max() < 1 + 1e-9, f"{name}: transition not bounded: {eigenvalues}"
    if name == "deltaproduct":  # products of several factors may have other spectra without it
        return
    eigenvalues = torch.linalg.eigvals(one_step_transition(writing_cell(name, False), strategy))
    assert eigenvalues.imag.abs().max() < 1e-9 and eigenvalues.real.min() > -1e-9, eigenvalues


@pytest.mark.parametrize("name", sorted(CELLS))
def test_beta_is_twice_the_sigmoid(name):
    torch.manual_seed(1)
    plain = make_cell(name, 3, 4, **CELLS[name]).double()
    negative = make_cell(name, 3, 4, allow_negative_eigenvalues=True, **CELLS[name]).double()
    negative.load_state_dict(plain.state_dict())
    rate = torch.randn(5, 2, dtype=F64) * 4
    torch.testing.assert_close(negative.write_rates(rate), 2 * torch.sigmoid(rate))
    torch.testing.assert_close(plain.write_rates(rate), torch.sigmoid(rate))
    assert "allow_negative_eigenvalues=True" in repr(negative)


def parity_counter(negative: bool) -> DeltaNetCell:
    """A one-number DeltaNet set by hand: q = k = 1, v = 0, beta = (2) sigmoid(60 x - 30), so a
    bit x = 1 multiplies the memory by 1 - beta (-1 with the option, 0 without) and x = 0 keeps
    it."""
    cell = DeltaNetCell(
        1,
        1,
        feature_map="identity",
        output_projection=False,
        allow_negative_eigenvalues=negative,
    ).double()
    assert cell.bias_ih is not None
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[0.0], [0.0], [0.0], [60.0]]))  # rows q, k, v, beta
        cell.bias_ih.copy_(torch.tensor([1.0, 1.0, 0.0, -30.0]))
    return cell


@pytest.mark.parametrize("strategy", ["sequential", "scan"])
def test_a_hand_set_deltanet_counts_parity_only_with_the_option(strategy):
    bits = torch.randint(0, 2, (4, 50, 1), generator=torch.Generator().manual_seed(3)).double()
    signs = 1 - 2 * (bits.cumsum(1) % 2)  # (-1)^(number of ones so far)
    start = MatrixState(torch.ones(4, 1, dtype=F64))
    outputs, _ = STRATEGIES[strategy](parity_counter(True), bits, start)
    torch.testing.assert_close(outputs, signs, atol=1e-9, rtol=0)
    outputs, _ = STRATEGIES[strategy](parity_counter(False), bits, start)
    after_first_one = bits.cumsum(1) > 0
    assert outputs[after_first_one].abs().max() < 1e-9  # beta = 1 erases the memory for good
