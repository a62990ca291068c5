"""AdamW or Muon, warm-up then cosine decay, gradient clipping and annealed gradient noise.

``name="muon"``: torch.optim.Muon (Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/:
momentum, then the update orthogonalized by Newton-Schulz iterations) for the hidden layers'
weight matrices and AdamW for everything else, as Muon is meant to be used: embeddings, the
output layer (the model's last ``nn.Linear``), biases, norms and stacks of diagonal weights
(2-D parameters with a dimension below 4, such as ParaGRU's ``(3, H)`` recurrent weights or
peepholes, are vectors, not linear maps). Muon's step is scaled to AdamW's update RMS
(``adjust_lr_fn="match_rms_adamw"``) so that one learning rate and one schedule serve both.

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
from typing import Any, Protocol

import torch
from torch import nn

from rnnkit.train import ranges

NOISE_DECAY = 0.55
"""The exponent gamma of the annealed noise variance eta / (1 + t)^gamma."""


OPTIMIZERS = ("adamw", "muon")
MUON_MIN_DIMENSION = 4
"""2-D parameters with a dimension below this are stacks of vectors: AdamW, not Muon."""


@dataclass
class OptimizerConfig:
    """The optimizer and its schedule."""

    name: str = "adamw"
    """``adamw``, or ``muon``: Muon for hidden weight matrices, AdamW for the rest."""
    muon_momentum: float = 0.95
    """Muon's momentum (Nesterov)."""
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
        ranges.choice("name", self.name, OPTIMIZERS)
        ranges.between("muon_momentum", self.muon_momentum, 0, 1, False)
        ranges.positive("learning_rate", self.learning_rate)
        ranges.between("min_learning_rate_ratio", self.min_learning_rate_ratio, 0, 1, True)
        ranges.at_least("warmup_steps", self.warmup_steps, 0)
        ranges.at_least("weight_decay", self.weight_decay, 0)
        ranges.between("beta1", self.beta1, 0, 1, False)
        ranges.between("beta2", self.beta2, 0, 1, False)
        ranges.at_least("clip_norm", self.clip_norm, 0)
        ranges.at_least("gradient_noise", self.gradient_noise, 0)


class Optimizer(Protocol):
    """What the trainer, the schedule and checkpoints use of an optimizer."""

    @property
    def param_groups(self) -> list[dict[str, Any]]: ...

    def step(self) -> Any: ...

    def zero_grad(self, set_to_none: bool = True) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> Optimizer:
    """AdamW with weight decay on matrices only (not biases, norms or embeddings), or Muon for
    the hidden weight matrices with that AdamW for the rest (see the module docstring)."""
    embeddings = _parameter_ids(model, nn.Embedding)
    linear_layers = [module for module in model.modules() if isinstance(module, nn.Linear)]
    output_layer = {id(p) for p in linear_layers[-1].parameters()} if linear_layers else set()
    muon: list[nn.Parameter] = []
    decayed: list[nn.Parameter] = []
    not_decayed: list[nn.Parameter] = []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        is_matrix = parameter.dim() >= 2 and id(parameter) not in embeddings
        hidden_matrix = (
            is_matrix
            and parameter.dim() == 2
            and min(parameter.shape) >= MUON_MIN_DIMENSION
            and id(parameter) not in output_layer
        )
        if config.name == "muon" and hidden_matrix:
            muon.append(parameter)
        else:
            (decayed if is_matrix else not_decayed).append(parameter)
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": not_decayed, "weight_decay": 0.0},
    ]
    adamw = torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2))
    if config.name == "adamw":
        return adamw
    if not muon:
        raise ValueError(
            "optimizer.name='muon': the model has no hidden weight matrix for Muon (2-D, both "
            f"dimensions >= {MUON_MIN_DIMENSION}, not an embedding or the output layer); "
            "use optimizer.name='adamw'"
        )
    hidden = torch.optim.Muon(
        muon,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        momentum=config.muon_momentum,
        adjust_lr_fn="match_rms_adamw",
    )
    return MuonWithAdamW(hidden, adamw)


def _parameter_ids(model: nn.Module, kind: type[nn.Module]) -> set[int]:
    return {
        id(parameter)
        for module in model.modules()
        if isinstance(module, kind)
        for parameter in module.parameters()
    }


class MuonWithAdamW:
    """Muon for some parameters and AdamW for the others, stepped together as one optimizer.

    ``param_groups`` lists Muon's groups then AdamW's (the same dicts, so a schedule setting
    ``lr`` reaches both); ``state_dict`` is torch's format over that order of groups."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer) -> None:
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [*self.muon.param_groups, *self.adamw.param_groups]

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        first, second = self.muon.state_dict(), self.adamw.state_dict()
        offset = _parameter_count(first)
        state = dict(first["state"])
        state.update({index + offset: value for index, value in second["state"].items()})
        groups = list(first["param_groups"])
        for group in second["param_groups"]:
            groups.append({**group, "params": [index + offset for index in group["params"]]})
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        count = len(self.muon.param_groups)
        if len(groups) != count + len(self.adamw.param_groups):
            raise ValueError(
                f"optimizer state has {len(groups)} parameter groups, expected "
                f"{count + len(self.adamw.param_groups)} (Muon's then AdamW's)"
            )
        first_groups, second_groups = groups[:count], groups[count:]
        offset = sum(len(group["params"]) for group in first_groups)
        state = {int(index): value for index, value in state_dict["state"].items()}
        self.muon.load_state_dict(
            {"state": {i: v for i, v in state.items() if i < offset}, "param_groups": first_groups}
        )
        shifted = [
            {**group, "params": [index - offset for index in group["params"]]}
            for group in second_groups
        ]
        self.adamw.load_state_dict(
            {
                "state": {i - offset: v for i, v in state.items() if i >= offset},
                "param_groups": shifted,
            }
        )


def _parameter_count(state_dict: dict[str, Any]) -> int:
    return sum(len(group["params"]) for group in state_dict["param_groups"])


class WarmupCosineSchedule:
    """Sets the learning rate of every parameter group from the step and the progress."""

    def __init__(self, optimizer: Optimizer, config: OptimizerConfig) -> None:
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
