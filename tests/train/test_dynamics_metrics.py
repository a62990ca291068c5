"""The dynamics metrics (``rnnkit.train.dynamics_metrics``) on cases computed by hand and against
scipy's Gaussian filter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnkit.train import dynamics_metrics as measures

F64 = torch.float64


def test_state_space_divergence_by_hand():
    true = torch.tensor([[0.0], [0.0], [0.0], [1.0]], dtype=F64)
    generated = torch.tensor([[0.0], [1.0]], dtype=F64)
    # 2 bins over [-0.0433, 1.0433]: p = (3/4, 1/4), q = (1/2, 1/2), Laplace 1e-5
    p = np.array([3 + 1e-5, 1 + 1e-5]) / (4 + 2e-5)
    q = np.array([1 + 1e-5, 1 + 1e-5]) / (2 + 2e-5)
    expected = float((p * np.log(p / q)).sum())
    assert math.isclose(measures.state_space_divergence(true, generated, bins=2), expected)
    assert measures.state_space_divergence(true, true, bins=10) == pytest.approx(0, abs=1e-12)
    assert math.isnan(measures.state_space_divergence(true, true + 100.0, bins=10))


def test_gmm_divergence_for_many_dimensions():
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(400, 6, dtype=F64, generator=generator)
    same = measures.state_space_divergence(data, data, scaling=0.5)
    shifted = measures.state_space_divergence(data, data + 2.0, scaling=0.5)
    assert same == pytest.approx(0, abs=1e-12) and shifted > 1.0


def test_power_spectrum_distance():
    time = torch.arange(2000, dtype=F64)[:, None]
    slow, fast = torch.sin(0.05 * time), torch.sin(0.6 * time)
    assert measures.power_spectrum_distance(slow, slow * 3 + 1) == pytest.approx(0, abs=1e-12)
    assert measures.power_spectrum_distance(slow, fast, smoothing=2.0) > 0.95
    assert measures.power_spectrum_distance(slow, torch.ones_like(slow)) == 1.0


def test_valid_prediction_steps():
    true = torch.zeros(2, 5, 1, dtype=F64)
    predicted = torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1], [0.0] * 5], dtype=F64)[..., None]
    steps = measures.valid_prediction_steps(true, predicted, torch.ones(1, dtype=F64), 0.4)
    assert steps.tolist() == [2, 5]


@pytest.mark.parametrize("sigma", [0.7, 2.0, 20.0])
def test_spectrum_smoothing_is_scipys_gaussian_filter(sigma):
    from scipy.ndimage import gaussian_filter1d

    values = np.random.default_rng(0).random((50, 3))
    expected = gaussian_filter1d(values, sigma, axis=0, mode="reflect")
    np.testing.assert_allclose(measures.gaussian_smoothing(values, sigma), expected, atol=1e-14)
