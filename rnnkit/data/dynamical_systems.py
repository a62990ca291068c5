"""Trajectories of chaotic benchmark systems, integrated here with the classical Runge-Kutta method.

Standard parameters (as in the DurstewitzLab benchmarks, e.g. Hess et al. 2023,
https://arxiv.org/abs/2306.04406, and Brenner et al. 2024, https://arxiv.org/abs/2410.14240):

- Lorenz-63 (Lorenz 1963): dx = sigma (y - x), dy = x (rho - z) - y, dz = x y - beta z,
  sigma = 10, rho = 28, beta = 8/3, dt = 0.01; largest Lyapunov exponent ~0.906;
- Roessler (Roessler 1976): dx = -y - z, dy = x + a y, dz = b + z (x - c),
  a = 0.2, b = 0.2, c = 5.7, dt = 0.08; largest Lyapunov exponent ~0.0714;
- Lorenz-96 (Lorenz 1996): dx_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, cyclic indices,
  F = 8, N = 10 by default, dt = 0.04; largest Lyapunov exponent of N = 10 computed with
  ``largest_lyapunov_exponent`` (``lorenz96_lyapunov``, not a literature value).

RK4: k1 = f(x), k2 = f(x + dt/2 k1), k3 = f(x + dt/2 k2), k4 = f(x + dt k3),
x' = x + dt/6 (k1 + 2 k2 + 2 k3 + k4). Trajectories start from random points, run
``transient`` steps that are discarded (onto the attractor: 5,000 by default, since the unstable
foci of Lorenz-63 hold a trajectory for thousands of steps; after 1,000 the default test
trajectory was still spiralling out of one for its first 2,000 steps), and optionally get Gaussian
observation noise of ``noise`` times each dimension's standard deviation (Hess et al. 2023 train
on Lorenz-63 with 5% observation noise). All in float64; shapes ``(B, T, N)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

# The integration runs in numpy: a step of a 3-variable system is a few microseconds there,
# against about 0.5 ms as a dozen small torch operations.
VectorField = Callable[[np.ndarray], np.ndarray]  # (B, N) -> (B, N)


def lorenz63(
    state: np.ndarray, sigma: float = 10.0, rho: float = 28.0, beta: float = 8 / 3
) -> np.ndarray:
    """The Lorenz-63 vector field of ``state (B, 3)``."""
    x, y, z = state[:, 0], state[:, 1], state[:, 2]
    return np.stack((sigma * (y - x), x * (rho - z) - y, x * y - beta * z), -1)


def roessler(state: np.ndarray, a: float = 0.2, b: float = 0.2, c: float = 5.7) -> np.ndarray:
    """The Roessler vector field of ``state (B, 3)``."""
    x, y, z = state[:, 0], state[:, 1], state[:, 2]
    return np.stack((-y - z, x + a * y, b + z * (x - c)), -1)


def lorenz96(state: np.ndarray, forcing: float = 8.0) -> np.ndarray:
    """The Lorenz-96 vector field of ``state (B, N)``, indices cyclic."""
    ahead = np.roll(state, -1, -1)  # x_{i+1}
    behind = np.roll(state, 1, -1)  # x_{i-1}
    two_behind = np.roll(state, 2, -1)  # x_{i-2}
    return (ahead - two_behind) * behind - state + forcing


def rk4_step(field: VectorField, state: np.ndarray, dt: float) -> np.ndarray:
    """One classical Runge-Kutta step of ``dx/dt = field(x)`` from ``state (B, N)``."""
    k1 = field(state)
    k2 = field(state + 0.5 * dt * k1)
    k3 = field(state + 0.5 * dt * k2)
    k4 = field(state + dt * k3)
    return state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate(field: VectorField, initial: np.ndarray, steps: int, dt: float) -> np.ndarray:
    """``(B, steps, N)``: the states after 1..steps RK4 steps from ``initial (B, N)``."""
    states = np.empty((initial.shape[0], steps, initial.shape[1]))
    state = initial
    for step in range(steps):
        state = rk4_step(field, state, dt)
        states[:, step] = state
    return states


@dataclass(frozen=True)
class System:
    """A benchmark system: its vector field, step, dimension and largest Lyapunov exponent."""

    name: str
    field: VectorField
    dimension: int
    dt: float
    lyapunov_exponent: float  # per unit time
    initial_scale: float  # random initial points ~ N(initial_offset, initial_scale^2)
    initial_offset: float


def lorenz96_system(dimension: int = 10) -> System:
    """Lorenz-96 with ``dimension`` variables (F = 8)."""
    if dimension < 4:
        raise ValueError(f"Lorenz-96 needs at least 4 variables, got {dimension}")
    return System(
        "lorenz96", lorenz96, dimension, 0.04, LORENZ96_LYAPUNOV.get(dimension, 0.0), 1.0, 8.0
    )


# Computed with ``largest_lyapunov_exponent(lorenz96_system(N), steps=100_000)``: 1.185;
# 0.0 (unknown) for other sizes, where valid prediction times are given in time units only.
LORENZ96_LYAPUNOV = {10: 1.19}

SYSTEMS: dict[str, System] = {
    "lorenz63": System("lorenz63", lorenz63, 3, 0.01, 0.906, 10.0, 0.0),
    "roessler": System("roessler", roessler, 3, 0.08, 0.0714, 1.0, 0.0),
}


def get_system(name: str, lorenz96_dimension: int = 10) -> System:
    """The system named ``name`` (``lorenz63``, ``roessler`` or ``lorenz96``)."""
    if name == "lorenz96":
        return lorenz96_system(lorenz96_dimension)
    if name not in SYSTEMS:
        known = ", ".join([*SYSTEMS, "lorenz96"])
        raise ValueError(f"unknown dynamical system {name!r}; systems: {known}")
    return SYSTEMS[name]


def trajectories(
    system: System,
    count: int,
    steps: int,
    generator: torch.Generator,
    *,
    transient: int = 5000,
    noise: float = 0.0,
    dt: float | None = None,
) -> Tensor:
    """``(count, steps, N)`` float64 trajectories of ``system`` from random initial points after
    ``transient`` discarded steps, with observation noise of ``noise`` standard deviations."""
    if steps <= 0 or count <= 0 or transient < 0 or noise < 0:
        raise ValueError(
            f"need count, steps > 0 and transient, noise >= 0; got {count}, {steps}, "
            f"{transient}, {noise}"
        )
    dt = system.dt if dt is None else dt
    shape = (count, system.dimension)
    initial = system.initial_offset + system.initial_scale * torch.randn(
        shape, generator=generator, dtype=torch.float64
    )
    start = initial.numpy()
    if transient:
        start = integrate(system.field, start, transient, dt)[:, -1]
    states = torch.from_numpy(integrate(system.field, start, steps, dt))
    if noise:
        scale = states.reshape(-1, system.dimension).std(0)  # (N,)
        draw = torch.randn(states.shape, generator=generator, dtype=torch.float64)
        states = states + noise * scale * draw
    return states


def largest_lyapunov_exponent(
    system: System, steps: int = 20_000, generator: torch.Generator | None = None
) -> float:
    """Benettin's estimate: the mean log growth per unit time of a small perturbation carried
    along a trajectory and renormalized to ``1e-8`` after every step."""
    generator = generator or torch.Generator().manual_seed(0)
    state = trajectories(system, 1, 1, generator)[:, -1].numpy()
    offset = torch.randn(state.shape, generator=generator, dtype=torch.float64).numpy()
    size = 1e-8
    neighbour = state + size * offset / np.linalg.norm(offset)
    total = 0.0
    for _ in range(steps):
        state = rk4_step(system.field, state, system.dt)
        neighbour = rk4_step(system.field, neighbour, system.dt)
        distance = float(np.linalg.norm(neighbour - state))
        total += np.log(distance / size)
        neighbour = state + size * (neighbour - state) / distance
    return total / (steps * system.dt)


def draw_windows(trajectories: list[Tensor], length: int, count: int, generator) -> Tensor:
    """``(count, length', N)`` windows at uniform positions over all trajectories, ``length'``
    the smaller of ``length`` and the shortest trajectory."""
    length = min(length, min(len(values) for values in trajectories))
    starts = torch.tensor([len(values) - length + 1 for values in trajectories])
    ends = starts.cumsum(0)
    picks = torch.randint(int(ends[-1]), (count,), generator=generator)
    which = torch.searchsorted(ends, picks, right=True)
    offsets = picks - (ends[which] - starts[which])
    rows = [
        trajectories[index][offset : offset + length]
        for index, offset in zip(which.tolist(), offsets.tolist(), strict=True)
    ]
    return torch.stack(rows)


def forecast_windows(
    trajectories: list[Tensor], count: int, warmup: int, horizon: int
) -> tuple[Tensor, Tensor]:
    """``count`` evenly spaced forecasts: the ``(K, warmup + 1, N)`` forced parts and the
    ``(K, h, N)`` truths that follow, ``h`` at most ``horizon`` (what the data allow)."""
    longest = max(len(values) for values in trajectories)
    horizon = max(1, min(horizon, longest - warmup - 1))
    span = warmup + 1 + horizon
    candidates = [
        (index, start)
        for index, values in enumerate(trajectories)
        for start in range(0, len(values) - span + 1)
    ]
    if not candidates:
        raise ValueError(f"no trajectory has the {span} steps a forecast needs")
    picks = torch.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().long()
    windows = torch.stack(
        [trajectories[i][s : s + span] for i, s in (candidates[k] for k in picks.tolist())]
    )
    return windows[:, : warmup + 1], windows[:, warmup + 1 :]
