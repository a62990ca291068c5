"""AdamW, warm-up then cosine decay, gradient clipping and annealed gradient noise.

Learning rate at step t (counting from 0) and progress p in [0, 1]:

    lr(t, p) = min(1, (t + 1) / warmup_steps) * (lr_min + (lr_max - lr_min) (1 + cos(pi p)) / 2)

where p is the larger of ``t / max_steps`` and ``elapsed / time_budget`` (whichever stop comes
first ends the decay), and ``lr_min = min_learning_rate_ratio * lr_max``.

Gradient noise (Neelakantan et al. 2015, https://arxiv.org/abs/1511.06807): after clipping,
every gradient gets ``N(0, sigma_t^2)`` with ``sigma_t^2 = eta / (1 + t)^0.55``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from rnnkit.train import ranges

NOISE_DECAY = 0.55
"""The exponent gamma of the annealed noise variance eta / (1 + t)^gamma."""


@dataclass
class OptimizerConfig:
    """AdamW and its schedule."""

    learning_rate: float = 6e-3
    """Peak learning rate, reached at the end of the warm-up."""
    min_learning_rate_ratio: float = 0.05
    """The learning rate at the end of the cosine decay, as a fraction of the peak."""
    warmup_steps: int = 50
    """Steps of linear warm-up from lr / warmup_steps to the peak."""
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay (not applied to biases, norms and embeddings)."""
    beta1: float = 0.9
    """AdamW's first-moment decay."""
    beta2: float = 0.99
    """AdamW's second-moment decay."""
    clip_norm: float = 1.0
    """Clip gradients to this global L2 norm (0: no clipping)."""
    gradient_noise: float = 0.0
    """eta of the annealed Gaussian gradient noise (0: none)."""

    def __post_init__(self) -> None:
        ranges.positive("learning_rate", self.learning_rate)
        ranges.between("min_learning_rate_ratio", self.min_learning_rate_ratio, 0, 1, True)
        ranges.at_least("warmup_steps", self.warmup_steps, 0)
        ranges.at_least("weight_decay", self.weight_decay, 0)
        ranges.between("beta1", self.beta1, 0, 1, False)
        ranges.between("beta2", self.beta2, 0, 1, False)
        ranges.at_least("clip_norm", self.clip_norm, 0)
        ranges.at_least("gradient_noise", self.gradient_noise, 0)


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, norms or embeddings)."""
    embeddings = {
        id(parameter)
        for module in model.modules()
        if isinstance(module, nn.Embedding)
        for parameter in module.parameters()
    }
    decayed: list[nn.Parameter] = []
    not_decayed: list[nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        is_matrix = parameter.dim() >= 2 and id(parameter) not in embeddings
        (decayed if is_matrix else not_decayed).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2))


class WarmupCosineSchedule:
    """Sets the learning rate of every parameter group from the step and the progress."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: OptimizerConfig) -> None:
        self.optimizer = optimizer
        self.config = config
        self.step_count = 0
        self.last_learning_rate = 0.0

    def learning_rate(self, step: int, progress: float) -> float:
        config = self.config
        warmup = min(1.0, (step + 1) / max(1, config.warmup_steps))
        minimum = config.min_learning_rate_ratio * config.learning_rate
        cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
        return warmup * (minimum + (config.learning_rate - minimum) * cosine)

    def apply(self, step: int, progress: float) -> float:
        """Set and return the learning rate for ``step`` at ``progress``."""
        self.step_count = step
        self.last_learning_rate = self.learning_rate(step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = self.last_learning_rate
        return self.last_learning_rate

    def state_dict(self) -> dict[str, float]:
        return {"step": self.step_count, "last_learning_rate": self.last_learning_rate}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.step_count = int(state["step"])
        self.last_learning_rate = float(state["last_learning_rate"])


def clip_gradients(parameters: Iterable[nn.Parameter], clip_norm: float) -> float:
    """Clip to the global norm ``clip_norm`` (0: measure only); returns the norm before."""
    parameters = [parameter for parameter in parameters if parameter.grad is not None]
    if clip_norm > 0:
        return float(nn.utils.clip_grad_norm_(parameters, clip_norm))
    gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
    norms = torch.stack([gradient.detach().norm() for gradient in gradients])
    return float(norms.norm())


def add_gradient_noise(parameters: Iterable[nn.Parameter], eta: float, step: int) -> None:
    """Add ``N(0, eta / (1 + step)^0.55)`` to every gradient (Neelakantan et al. 2015)."""
    if eta <= 0:
        return
    standard_deviation = math.sqrt(eta / (1 + step) ** NOISE_DECAY)
    with torch.no_grad():
        for parameter in parameters:
            if parameter.grad is not None:
                parameter.grad.add_(torch.randn_like(parameter.grad) * standard_deviation)
