"""Adaptive Computation Time (Graves 2016, https://arxiv.org/abs/1603.08983): a halting unit that
decides, per item, how many steps of a transition to take, and the ponder cost that pays for them.

For one item (a position of a sequence, or one time step of an RNN), ponder steps ``n = 1, 2, ...``
give states ``s^n``; the halting unit reads each:

    h^n  = sigmoid(W_h s^n + b_h)                                 halting probability, (...,)
    N    = min(M, min{n' : h^1 + ... + h^n' >= 1 - epsilon})      steps taken (M = max_steps)
    R    = 1 - (h^1 + ... + h^(N-1))                              the remainder
    p^n  = h^n for n < N,  p^N = R,  p^n = 0 for n > N            halting weights, sum to one
    s    = sum_n p^n s^n,  y = sum_n p^n y^n                      the halting-weighted means
    rho  = N + R                                                  the ponder cost
    loss = task loss + tau * rho                                  (tau: ``ponder_weight``)

``N`` is a step count, so only ``R`` carries gradient to the halting unit (as in the paper). At
``n = M`` an item halts whatever its halting sum, taking the remainder, so its weights still sum
to one. The halting bias starts at ``halting_bias`` (1.0, as tensor2tensor's
``act_halting_bias_init``), so items start by pondering few steps.

Differences from tensor2tensor's ``universal_transformer_util`` (Dehghani et al. 2019): there the
halting unit reads the state *before* each transformation and the weighted state is an
interpolation ``s <- p^n s^n + (1 - p^n) s``, with no remainder at the step limit; here the
halting unit reads the state the step produced and the mean is Graves's ``sum_n p^n s^n``.

``Halting`` is the per-step bookkeeping (drive it with one ``update`` per ponder step); the
``AdaptiveComputationTime`` module holds the halting unit and the options. Items that are not
``active`` (padding) take no steps: weight 0, ``N = R = rho = 0``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Halting:
    """The halting bookkeeping of items of shape ``(...,)``, one ``update`` per ponder step.

    Args:
        probability_like: any tensor of the items' shape, dtype and device.
        max_steps: M, the steps after which every item halts.
        threshold: ``1 - epsilon``, the halting sum at which an item halts.
        active: ``(...,)`` bool, False for items that take no step (padding); None: all.
    """

    def __init__(
        self,
        probability_like: Tensor,
        max_steps: int,
        threshold: float,
        active: Tensor | None = None,
    ) -> None:
        self.max_steps = max_steps
        self.threshold = threshold
        zeros = torch.zeros_like(probability_like)
        self.cumulative = zeros  # sum of h^n over the steps before halting
        self.remainder = zeros  # R, set at the halting step
        self.steps = zeros  # N so far (a float tensor, no gradient)
        self.running = (
            torch.ones_like(probability_like, dtype=torch.bool) if active is None else active.bool()
        )
        self.step_index = 0

    def update(self, probability: Tensor) -> Tensor:
        """Take ponder step ``n``: ``h^n (...,)`` -> the halting weights ``p^n (...,)``."""
        if self.step_index >= self.max_steps:
            raise RuntimeError(f"Halting.update: every item halted after {self.max_steps} steps")
        self.step_index += 1
        running = self.running
        total = self.cumulative + probability
        halts_now = running & ((total >= self.threshold) | (self.step_index == self.max_steps))
        continues = running & ~halts_now
        remainder = 1.0 - self.cumulative
        weights = torch.where(continues, probability, torch.where(halts_now, remainder, 0.0))
        self.cumulative = torch.where(continues, total, self.cumulative)
        self.remainder = torch.where(halts_now, remainder, self.remainder)
        self.steps = self.steps + running.to(self.steps.dtype)
        self.running = continues
        return weights

    def all_halted(self) -> bool:
        """Whether no item is still running."""
        return not bool(self.running.any())

    def ponder_cost(self) -> Tensor:
        """``rho = N + R (...,)``; 0 for inactive items."""
        return self.steps + self.remainder


class AdaptiveComputationTime(nn.Module):
    """The halting unit ``sigmoid(W_h s + b_h)`` over states of ``state_size`` features, and the
    options of the halting rule.

    Args:
        state_size: features of the state the halting unit reads.
        max_steps: M, the most ponder steps per item.
        epsilon: an item halts once its halting sum reaches ``1 - epsilon``.
        ponder_weight: tau, the weight of the ponder cost in the loss.
        halting_bias: the initial bias ``b_h``.
    """

    def __init__(
        self,
        state_size: int,
        max_steps: int,
        epsilon: float = 0.01,
        ponder_weight: float = 0.01,
        halting_bias: float = 1.0,
    ) -> None:
        super().__init__()
        if max_steps < 1:
            raise ValueError(f"max_steps: expected a positive integer, got {max_steps}")
        if not 0.0 < epsilon < 1.0:
            raise ValueError(f"epsilon: expected (0, 1), got {epsilon}")
        if ponder_weight < 0:
            raise ValueError(f"ponder_weight: expected 0 or more, got {ponder_weight}")
        self.max_steps = max_steps
        self.epsilon = epsilon
        self.ponder_weight = ponder_weight
        self.halting = nn.Linear(state_size, 1)
        nn.init.constant_(self.halting.bias, halting_bias)

    def probability(self, state: Tensor) -> Tensor:
        """``h = sigmoid(W_h s + b_h)``: ``(..., state_size)`` -> ``(...,)``."""
        return torch.sigmoid(self.halting(state)).squeeze(-1)

    def start(self, probability_like: Tensor, active: Tensor | None = None) -> Halting:
        """The bookkeeping for items shaped like ``probability_like (...,)``."""
        return Halting(probability_like, self.max_steps, 1.0 - self.epsilon, active)

    def loss(self, ponder_cost: Tensor, active: Tensor | None = None) -> Tensor:
        """``tau * mean(rho)`` over the active items, a scalar."""
        if active is None:
            return self.ponder_weight * ponder_cost.mean()
        count = active.sum().clamp(min=1)
        return self.ponder_weight * (ponder_cost * active).sum() / count

    def extra_repr(self) -> str:
        return (
            f"max_steps={self.max_steps}, epsilon={self.epsilon}, "
            f"ponder_weight={self.ponder_weight}"
        )
