"""AdamW groups, the warm-up and cosine schedule, clipping and annealed gradient noise."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rnnkit.train.optimization import (
    OptimizerConfig,
    WarmupCosineSchedule,
    add_gradient_noise,
    build_optimizer,
    clip_gradients,
)


def test_schedule_warms_up_then_decays_to_the_minimum():
    config = OptimizerConfig(learning_rate=1.0, warmup_steps=10, min_learning_rate_ratio=0.1)
    schedule = WarmupCosineSchedule(build_optimizer(nn.Linear(2, 2), config), config)
    assert schedule.learning_rate(0, 0.0) == pytest.approx(0.1)
    assert schedule.learning_rate(9, 0.0) == pytest.approx(1.0)
    assert schedule.learning_rate(50, 0.5) == pytest.approx(0.55)
    assert schedule.learning_rate(100, 1.0) == pytest.approx(0.1)
    learning_rate = schedule.apply(20, 0.25)
    assert all(group["lr"] == learning_rate for group in schedule.optimizer.param_groups)
    assert schedule.state_dict()["step"] == 20


def test_weight_decay_only_on_matrices():
    model = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 4))
    optimizer = build_optimizer(model, OptimizerConfig(weight_decay=0.1))
    decayed, not_decayed = optimizer.param_groups
    assert [tuple(p.shape) for p in decayed["params"]] == [(4, 3)]
    assert decayed["weight_decay"] == 0.1 and not_decayed["weight_decay"] == 0.0


def test_clipping_returns_the_norm_before():
    parameter = nn.Parameter(torch.zeros(4))
    parameter.grad = torch.full((4,), 3.0)
    assert clip_gradients([parameter], 0) == pytest.approx(6.0)
    assert clip_gradients([parameter], 1.0) == pytest.approx(6.0)
    assert parameter.grad.norm() == pytest.approx(1.0, rel=1e-4)


def test_gradient_noise_variance_is_annealed():
    parameter = nn.Parameter(torch.zeros(200_000))
    torch.manual_seed(0)
    for step, eta in [(0, 0.3), (99, 0.3)]:
        parameter.grad = torch.zeros_like(parameter)
        add_gradient_noise([parameter], eta, step)
        expected = eta / (1 + step) ** 0.55
        assert parameter.grad.var().item() == pytest.approx(expected, rel=0.02)
    parameter.grad = torch.zeros_like(parameter)
    add_gradient_noise([parameter], 0.0, 0)
    assert parameter.grad.abs().sum() == 0
    assert math.isclose(0.3 / 100**0.55, 0.3 * 100**-0.55)
