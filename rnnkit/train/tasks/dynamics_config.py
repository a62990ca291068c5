"""The settings and the data of ``rnnkit train dynamics`` (``rnnkit.train.tasks.dynamics``).

The defaults reconstruct Lorenz-63 in a few minutes on one CPU thread: the AL-RNN of Brenner et
al. 2024 (M = 20 units, P = 2 ReLUs) with the sparse identity teacher forcing of the reference
ALRNN-DSR settings (alpha = 1 every ``train.forcing_interval`` = 16 steps), windows of
``train.sequence_length`` steps, AdamW with a cosine schedule.

Data: Lorenz-63, Roessler or Lorenz-96 integrated by ``rnnkit.data.dynamical_systems`` (one
training trajectory of ``data.steps`` with observation noise ``data.noise``, one noise-free test
trajectory from another initial point), or the user's CSV (``--data FILE``,
``rnnkit.data.files.trajectories_csv``), whose trajectories train on their first
``1 - data.test_fraction`` and are scored on the rest. Each dimension is z-scored with the
training data's mean and deviation (kept in the checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from rnnkit.data import dynamical_systems as systems
from rnnkit.data.files.trajectories_csv import read_trajectories
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.train import ranges
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.tasks import supervised
from rnnkit.train.trainer import TrainerConfig

SOURCES = ("lorenz63", "roessler", "lorenz96", "csv")


@dataclass
class DynamicsDataConfig:
    """Where the trajectories come from."""

    system: str = ""
    """``lorenz63``, ``roessler``, ``lorenz96`` (generated) or ``csv`` (``path``); empty:
    ``csv`` when ``path`` is given, else ``lorenz63``."""
    path: str | None = None
    """The CSV of trajectories (``--data FILE``), with ``system=csv``."""
    steps: int = 20_000
    """Generated systems: steps of the training trajectory."""
    test_steps: int = 10_000
    """Generated systems: steps of the test trajectory."""
    noise: float = 0.05
    """Generated systems: observation noise of the training data, in standard deviations."""
    lorenz96_dimension: int = 10
    """Variables of Lorenz-96."""
    test_fraction: float = 0.2
    """CSV: the share of each trajectory's last steps held out for scoring (a trajectory where
    that is under 2 steps is both trained on and scored whole)."""
    lyapunov_exponent: float | None = None
    """Largest Lyapunov exponent per step (CSV; generated systems know theirs): valid prediction
    times in Lyapunov times need it."""

    def source(self) -> str:
        """The system in effect (``system``, or what its empty default stands for)."""
        return self.system or ("csv" if self.path else "lorenz63")

    def __post_init__(self) -> None:
        system = self.source()
        ranges.choice("data.system", system, SOURCES)
        if system == "csv" and not self.path:
            raise ValueError("data.path: --data.system=csv needs --data.path=FILE")
        if system != "csv" and self.path:
            raise ValueError(
                f"data.path: {self.path} would be ignored with --data.system={system} "
                "(a generated system); leave the system out or set --data.system=csv"
            )
        ranges.at_least("data.steps", self.steps, 10)
        ranges.at_least("data.test_steps", self.test_steps, 10)
        ranges.at_least("data.noise", self.noise, 0.0)
        ranges.between("data.test_fraction", self.test_fraction, 0.0, 1.0, False)
        ranges.positive("data.lyapunov_exponent", self.lyapunov_exponent, optional=True)


@dataclass
class GTFConfig:
    """Generalized teacher forcing."""

    teacher_forcing: float = 1.0
    """alpha in [0, 1]: 1 pure teacher forcing, 0 free running (validation's GTF loss uses it
    also with ``adaptive``)."""
    forcing_interval: int = 16
    """Force the state every this many steps, free in between (1: every step, Hess et al.'s
    GTF; 16 with alpha = 1: the sparse identity teacher forcing of the reference ALRNN-DSR
    settings, ``teacher_forcing_interval``)."""
    adaptive: bool = False
    """Hess et al.'s adaptive alpha instead, from each training batch
    (``rnnkit.train.teacher_forcing.adaptive_alpha``; cells with a one-field state), applied
    every ``forcing_interval`` steps (Hess et al. force every step: set it to 1)."""
    sequence_length: int = 100
    """Steps per training window (the reference code's 200; 100 trains faster here)."""

    def __post_init__(self) -> None:
        ranges.between("train.teacher_forcing", self.teacher_forcing, 0.0, 1.0, True)
        ranges.at_least("train.sequence_length", self.sequence_length, 1)
        ranges.at_least("train.forcing_interval", self.forcing_interval, 1)


@dataclass
class DynamicsEvaluationConfig:
    """How runs are scored."""

    bins: int = 30
    """D_stsp: bins per dimension (binning for N <= 5)."""
    gmm_scaling: float = 1.0
    """D_stsp: variance of each Gaussian of the mixture estimate (N > 5)."""
    spectrum_smoothing: float = 20.0
    """D_H: standard deviation of the Gaussian smoothing of the spectra, in frequency bins."""
    forecasts: int = 50
    """Valid prediction time: forecasts per evaluation."""
    warmup: int = 20
    """Steps forced as in training (alpha, interval; the last one always) before each forecast
    and generated run."""
    horizon: int = 1000
    """Steps per forecast; also the length of ``rnnkit predict``'s continuations."""
    threshold: float = 0.4
    """Normalized error that ends a valid prediction."""

    def __post_init__(self) -> None:
        for name in ("bins", "forecasts", "horizon"):
            ranges.at_least(f"evaluation.{name}", getattr(self, name), 1)
        ranges.at_least("evaluation.warmup", self.warmup, 0)
        ranges.positive("evaluation.gmm_scaling", self.gmm_scaling)
        ranges.at_least("evaluation.spectrum_smoothing", self.spectrum_smoothing, 0.0)
        ranges.positive("evaluation.threshold", self.threshold)


def default_recurrent() -> RecurrentConfig:
    """The AL-RNN with M = 20 units (its own default P = 2 ReLUs), as Brenner et al.'s
    Lorenz-63 setting."""
    return RecurrentConfig(cell="alrnn", hidden_size=20)


@dataclass
class DynamicsModelConfig:
    """The recurrent layer (one layer, one direction: GTF forces its state)."""

    recurrent: RecurrentConfig = field(default_factory=default_recurrent)

    def __post_init__(self) -> None:
        if self.recurrent.num_layers != 1 or self.recurrent.bidirectional:
            raise ValueError("model.recurrent: dynamics needs num_layers=1, bidirectional=false")


def default_optimizer() -> OptimizerConfig:
    """AdamW at 1e-2 without weight decay, cosine to 5% (the reference: RAdam 1e-3 decayed
    exponentially to 1e-5 over 100,000 steps of 16 windows). Measured on one thread, not yet
    robust: the reference's 1e-3 with its 16 windows of 200 steps ends near a fixed point after
    4,500 steps; with batches of 128 x 100 steps, 1e-2 gave a Lorenz attractor in 2 runs of 3
    and a fixed point in one, 5e-3 a thin chaotic attractor once and a NaN once."""
    return OptimizerConfig(learning_rate=1e-2, weight_decay=0.0, warmup_steps=50)


def default_trainer() -> TrainerConfig:
    """Batches of 128 windows (a step of 128 costs about twice one of 16 here, where the
    per-time-step overhead dominates); 8,000 steps, about 5 minutes on one idle thread, cut at
    8 minutes on a busy machine."""
    return TrainerConfig(
        max_steps=8_000, time_budget_seconds=480, batch_size=128, eval_interval_seconds=60
    )


@dataclass
class DynamicsConfig:
    """Every setting of a dynamics run."""

    data: DynamicsDataConfig = field(default_factory=DynamicsDataConfig)
    model: DynamicsModelConfig = field(default_factory=DynamicsModelConfig)
    train: GTFConfig = field(default_factory=GTFConfig)
    evaluation: DynamicsEvaluationConfig = field(default_factory=DynamicsEvaluationConfig)
    optimizer: OptimizerConfig = field(default_factory=default_optimizer)
    trainer: TrainerConfig = field(default_factory=default_trainer)
    seed: int = 0


@dataclass
class DynamicsData:
    """Z-scored trajectories ``(T_i, N)`` float64 to train on and to score on."""

    columns: list[str]
    train: list[Tensor]
    test: list[Tensor]
    mean: Tensor  # (N,) of the training data, in the file's units
    scale: Tensor  # (N,)
    lyapunov_per_step: float | None
    description: str


def load_data(
    config: DynamicsDataConfig, seed: int, metadata: dict[str, Any] | None
) -> DynamicsData:
    """The run's data; ``metadata`` (on resume or load) fixes the z-scoring."""
    if config.source() == "csv":
        assert config.path is not None  # checked by the config
        loaded = read_trajectories(config.path)
        train, test = [], []
        for values in loaded.values:
            held_out = int(len(values) * config.test_fraction)
            train.append(values[: len(values) - held_out] if held_out >= 2 else values)
            test.append(values[len(values) - held_out :] if held_out >= 2 else values)
        columns, lyapunov = loaded.columns, config.lyapunov_exponent
        description = f"{loaded.report.summary()}, {len(train)} trajectories"
    else:
        system = systems.get_system(config.source(), config.lorenz96_dimension)
        generator = supervised.fixed_generator(seed, supervised.VALIDATION_STREAM)
        train = list(systems.trajectories(system, 1, config.steps, generator, noise=config.noise))
        generator = supervised.fixed_generator(seed, supervised.TEST_STREAM)
        test = list(systems.trajectories(system, 1, config.test_steps, generator))
        columns = ["x", "y", "z"] if system.dimension == 3 else []
        columns = columns or [f"x{index + 1}" for index in range(system.dimension)]
        lyapunov = system.lyapunov_exponent * system.dt or None
        description = (
            f"{system.name}, dt {system.dt}: {config.steps} training steps (noise "
            f"{config.noise:g}), {config.test_steps} test steps"
        )
    if metadata is not None:
        mean = torch.tensor(metadata["mean"], dtype=torch.float64)
        scale = torch.tensor(metadata["scale"], dtype=torch.float64)
    else:
        joined = torch.cat(train)
        mean, scale = joined.mean(0), joined.std(0).clamp_min(1e-12)
    train = [(values - mean) / scale for values in train]
    test = [(values - mean) / scale for values in test]
    return DynamicsData(columns, train, test, mean, scale, lyapunov, description)
