"""Negative eigenvalues for the diagonal linear cells (Grazzi et al. 2025): minGRU, minLSTM and
the selective SSM with ``allow_negative_eigenvalues=True`` (their agreement across strategies is
in the oracle table: ``mingru_negative``, ``minlstm_negative``, ``selective_ssm_negative``)."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells import make_cell
from rnnkit.cells.gru import HiddenState
from rnnkit.strategies import make_strategy


@pytest.mark.parametrize("name", ["mingru", "minlstm"])
def test_the_transition_is_stretched_to_minus_one_one(name: str) -> None:
    torch.manual_seed(0)
    positive = make_cell(name, 3, 4).double()
    negative = make_cell(name, 3, 4, allow_negative_eigenvalues=True).double()
    negative.load_state_dict(positive.state_dict())
    projected = positive.project_inputs(torch.randn(5, 3, dtype=torch.float64) * 4)
    a_positive, b_positive = positive.coefficients(projected)
    a_negative, b_negative = negative.coefficients(projected)
    torch.testing.assert_close(a_negative, 2 * a_positive - 1)
    torch.testing.assert_close(b_negative, b_positive)
    assert (a_negative < 0).any() and (a_positive > 0).all()
    assert negative.compiled_kernel is None  # the compiled scans hold the positive form only


def test_the_selective_ssm_transition_is_two_exp_minus_one() -> None:
    torch.manual_seed(0)
    positive = make_cell("selective_ssm", 3, 4, state_size=2).double()
    negative = make_cell("selective_ssm", 3, 4, state_size=2, allow_negative_eigenvalues=True)
    negative = negative.double()
    negative.load_state_dict(positive.state_dict())
    projected = positive.project_inputs(torch.randn(2, 6, 3, dtype=torch.float64))
    state = positive.initial_state(2, dtype=torch.float64)
    a_positive, b_positive = positive.scan_terms(projected, state)
    a_negative, b_negative = negative.scan_terms(projected, state)
    torch.testing.assert_close(a_negative, 2 * a_positive - 1)
    torch.testing.assert_close(b_negative, b_positive)
    delta = torch.full((1, 4), 10.0, dtype=torch.float64)  # a large step: exp(delta A) ~ 0
    assert (negative.transition(delta) < -0.99).all()


def parity_mingru(allow_negative_eigenvalues: bool) -> torch.nn.Module:
    """A minGRU set by hand: z ~ 1 on a one bit (a = 1 - 2z ~ -1 flips h), z ~ 0 on a zero bit
    (h kept); the candidate is zero, so h_T = (-1)^(number of ones) h_0."""
    cell = make_cell(
        "mingru",
        1,
        1,
        candidate_activation="identity",
        allow_negative_eigenvalues=allow_negative_eigenvalues,
    ).double()
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[80.0], [0.0]]))
        cell.bias_ih.copy_(torch.tensor([-40.0, 0.0]))
    return cell


@pytest.mark.parametrize("strategy", ["sequential", "scan"])
def test_a_negative_transition_counts_parity_a_positive_one_cannot(strategy: str) -> None:
    generator = torch.Generator().manual_seed(1)
    bits = torch.randint(0, 2, (64, 300, 1), generator=generator).double()
    parity = bits.sum((1, 2)) % 2
    start = HiddenState(torch.ones(64, 1, dtype=torch.float64))
    _, final = make_strategy(strategy)(parity_mingru(True), bits, start)
    torch.testing.assert_close(final.h[:, 0], 1 - 2 * parity)
    _, final = make_strategy(strategy)(parity_mingru(False), bits, start)
    assert (final.h >= 0).all()  # a transition in [0, 1] never changes the sign
