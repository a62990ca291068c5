"""How well a model reproduces a dynamical system: geometry, time scales and short-term forecasts.

As the DurstewitzLab papers compute them (Koppe et al. 2019; Mikhaeil et al. 2022; Hess et al.
2023, https://arxiv.org/abs/2306.04406, reference code ``GTF-shPLRNN/src/measures``):

- ``state_space_divergence`` D_stsp: the Kullback-Leibler divergence KL(p_true || p_generated)
  of the occupation measures of a true and a generated long trajectory. For N < 6 observed
  dimensions (the reference's ``decide_on_measure``) by binning: ``bins`` per dimension over
  the true data's range extended by 0.1 standard deviations, histograms Laplace-smoothed
  ``(count + 1e-5) / (total + 1e-5 * bins^N)``. For N >= 6 by the Gaussian mixture estimate:
  one Gaussian of variance ``scaling`` per time step (first 10,000 steps) and the Monte-Carlo KL
  of Hershey & Olsen 2007 with 1,000 samples drawn from the true mixture.
- ``power_spectrum_distance`` D_H: per dimension the z-scored series' power spectrum
  |rfft|^2, smoothed by a Gaussian of ``smoothing`` frequency bins (``gaussian_smoothing``:
  scipy's ``gaussian_filter1d``, radius 4 sigma, reflect padding), normalized to sum 1; the
  Hellinger distance ``sqrt(sum (sqrt p - sqrt q)^2) / sqrt 2`` of true and generated spectra,
  averaged over dimensions.
- ``valid_prediction_time``: the first step at which the normalized error
  ``sqrt(mean_n (x_n - x^_n)^2 / var_n)`` of a forecast exceeds ``threshold`` (the forecast's
  length when it never does), in steps; times ``dt * lyapunov_exponent`` it is in Lyapunov
  times (Lorenz-63: 0.906 per unit time).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

BINNING_MAX_DIMENSIONS = 5
LAPLACE = 1e-5
GMM_MAX_STEPS = 10_000
GMM_SAMPLES = 1_000


def state_space_divergence(
    true: Tensor,
    generated: Tensor,
    *,
    bins: int = 30,
    scaling: float = 1.0,
    seed: int = 0,
) -> float:
    """D_stsp of ``true (T, N)`` against ``generated (T', N)``; NaN when nothing generated
    falls in the binned volume."""
    if true.shape[-1] != generated.shape[-1]:
        raise ValueError(f"dimensions differ: {true.shape[-1]} and {generated.shape[-1]}")
    x = true.detach().double().cpu().numpy()
    y = generated.detach().double().cpu().numpy()
    if x.shape[1] <= BINNING_MAX_DIMENSIONS:
        return binned_divergence(x, y, bins)
    return gmm_divergence(x, y, scaling, seed)


def binned_divergence(x: np.ndarray, y: np.ndarray, bins: int) -> float:
    spread = x.std(0)
    edges = [
        np.linspace(low, high, bins + 1)
        for low, high in zip(x.min(0) - 0.1 * spread, x.max(0) + 0.1 * spread, strict=True)
    ]
    true_counts = np.histogramdd(x, bins=edges)[0].ravel()
    generated_counts = np.histogramdd(y, bins=edges)[0].ravel()
    if generated_counts.sum() == 0:
        return float("nan")
    p = (true_counts + LAPLACE) / (true_counts.sum() + LAPLACE * true_counts.size)
    q = (generated_counts + LAPLACE) / (generated_counts.sum() + LAPLACE * generated_counts.size)
    return float(np.sum(p * np.log(p / q)))


def gmm_divergence(x: np.ndarray, y: np.ndarray, scaling: float, seed: int) -> float:
    steps = min(len(x), len(y), GMM_MAX_STEPS)
    x, y = x[:steps], y[:steps]
    random = np.random.default_rng(seed)
    sigma = np.sqrt(scaling)
    samples = x[random.integers(0, steps, GMM_SAMPLES)]
    samples = samples + sigma * random.standard_normal(samples.shape)
    p = mixture_likelihood(samples, x, sigma)
    q = mixture_likelihood(samples, y, sigma)
    kept = (p > 0) & (q > 0)  # the reference drops samples where a likelihood underflows
    return float(np.mean(np.log(p[kept]) - np.log(q[kept])))


def mixture_likelihood(samples: np.ndarray, means: np.ndarray, sigma: float) -> np.ndarray:
    """Mean over the components ``means (T, N)`` of the Gaussian densities (up to the shared
    constant (2 pi)^(N/2), which cancels in the KL) at ``samples (S, N)``."""
    squared = (
        (samples**2).sum(1)[:, None] + (means**2).sum(1)[None, :] - 2 * samples @ means.T
    )  # (S, T)
    return np.exp(-0.5 * squared / sigma**2).mean(1) / sigma ** samples.shape[1]


def gaussian_smoothing(values: np.ndarray, sigma: float) -> np.ndarray:
    """``values (T, N)`` smoothed along T as scipy's ``gaussian_filter1d(values, sigma, axis=0,
    mode="reflect")``: a normalized Gaussian kernel of radius ``int(4 sigma + 0.5)``, the edges
    mirrored (``d c b a | a b c d``)."""
    radius = int(4 * sigma + 0.5)
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(values, ((radius, radius), (0, 0)), mode="symmetric")
    smoothed = np.empty_like(values, dtype=np.float64)
    for column in range(values.shape[1]):
        smoothed[:, column] = np.convolve(padded[:, column], kernel, mode="valid")
    return smoothed


def smoothed_spectra(series: np.ndarray, smoothing: float) -> np.ndarray:
    """``(F, N)`` normalized, smoothed power spectra of ``series (T, N)``."""
    standardized = (series - series.mean(0)) / series.std(0, ddof=1)
    power = np.abs(np.fft.rfft(standardized, axis=0)) ** 2
    if smoothing > 0:
        power = gaussian_smoothing(power, smoothing)
        power[power < 0] = 0
    return power / power.sum(0)


def power_spectrum_distance(true: Tensor, generated: Tensor, *, smoothing: float = 2.0) -> float:
    """D_H of ``true (T, N)`` and ``generated (T, N)`` (equal lengths), averaged over N."""
    if true.shape != generated.shape:
        raise ValueError(f"shapes differ: {tuple(true.shape)} and {tuple(generated.shape)}")
    x = true.detach().double().cpu().numpy()
    y = generated.detach().double().cpu().numpy()
    if not np.isfinite(y).all() or (y.std(0) == 0).any():
        return 1.0  # a diverged or constant generation: the maximal distance
    p, q = smoothed_spectra(x, smoothing), smoothed_spectra(y, smoothing)
    distances = np.sqrt(((np.sqrt(p) - np.sqrt(q)) ** 2).sum(0)) / np.sqrt(2)
    return float(distances.mean())


def normalized_error(true: Tensor, predicted: Tensor, variance: Tensor) -> Tensor:
    """``(..., T)``: ``sqrt(mean_n (x - x^)^2 / var_n)`` of ``(..., T, N)`` forecasts."""
    return (((true - predicted) ** 2) / variance).mean(-1).sqrt()


def valid_prediction_steps(
    true: Tensor, predicted: Tensor, variance: Tensor, threshold: float = 0.4
) -> Tensor:
    """``(B,)``: steps before the normalized error of ``(B, T, N)`` forecasts first exceeds
    ``threshold`` (T when it never does)."""
    error = normalized_error(true, predicted, variance)  # (B, T)
    exceeded = ~(error <= threshold)  # NaN counts as exceeded
    steps = torch.full((error.shape[0],), error.shape[1], dtype=torch.long)
    any_exceeded = exceeded.any(1)
    steps[any_exceeded] = exceeded[any_exceeded].float().argmax(1)
    return steps
