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


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    from rnnkit.nn import Recurrent

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(11, 8)
            self.recurrent = Recurrent("lstm", 8, 16)
            self.diagonal = Recurrent("paragru", 16, 16)
            self.head = nn.Linear(16, 11)

    model = Model()
    optimizer = build_optimizer(model, OptimizerConfig(name="muon"))
    muon_ids = {id(p) for group in optimizer.muon.param_groups for p in group["params"]}
    names = {id(p): name for name, p in model.named_parameters()}
    assert sorted(names[i] for i in muon_ids) == [
        "diagonal.cells.0.weight_ih",
        "recurrent.cells.0.weight_hh",
        "recurrent.cells.0.weight_ih",
    ], "Muon must take hidden weight matrices only"
    adamw_ids = {id(p) for group in optimizer.adamw.param_groups for p in group["params"]}
    assert muon_ids.isdisjoint(adamw_ids)
    assert muon_ids | adamw_ids == set(names), "every parameter is optimized exactly once"
    assert len(optimizer.param_groups) == 3  # Muon's, AdamW's decayed and not decayed


def test_muon_state_dict_resumes_the_same_trajectory():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.Linear(8, 2))
        return model, build_optimizer(model, OptimizerConfig(name="muon", learning_rate=0.05))

    def train(model, optimizer, steps, seed):
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            inputs = torch.randn(4, 6, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            model(inputs).square().sum().backward()
            optimizer.step()

    whole, whole_optimizer = make()
    train(whole, whole_optimizer, 3, 1)
    train(whole, whole_optimizer, 3, 2)
    first, first_optimizer = make()
    train(first, first_optimizer, 3, 1)
    resumed, resumed_optimizer = make()
    resumed.load_state_dict(first.state_dict())
    resumed_optimizer.load_state_dict(first_optimizer.state_dict())
    train(resumed, resumed_optimizer, 3, 2)
    expected_state, got_state = whole.state_dict(), resumed.state_dict()
    for name, expected in expected_state.items():
        got = got_state[name]
        assert torch.equal(got, expected), f"{name} differs after resuming Muon + AdamW"


def test_optimizer_name_is_checked():
    with pytest.raises(ValueError, match="name must be one of 'adamw', 'muon', got 'sgd'"):
        OptimizerConfig(name="sgd")
    with pytest.raises(ValueError, match="no hidden weight matrix for Muon"):
        build_optimizer(nn.Linear(3, 2), OptimizerConfig(name="muon"))
