"""Universal Transformer (Dehghani et al. 2019, https://arxiv.org/abs/1807.03819), decoder-only:
one shared unit of blocks applied up to K times, with adaptive computation time per position.

With ``H^0`` the embedded inputs ``(B, T, D)`` and the shared unit ``F`` (the sequence model's
blocks, pre-norm residual, any mixer: causal attention or a recurrent cell), depth steps
``n = 1 .. K`` are

    H^n_i   = F(H^(n-1) + P^n)_i          for a position i still running; else H^(n-1)_i
    P^n_i,2j   = sin(i / 10000^(2j/D)) + sin(n / 10000^(2j/D))       position + timestep
    P^n_i,2j+1 = cos(i / 10000^(2j/D)) + cos(n / 10000^(2j/D))       (the paper's eq. for P^t)

so a position that halted keeps (copies) its state while the others go on, as in the paper.
With ACT (``rnnkit.models.depth.act``) the halting unit reads ``LayerNorm(H^n_i)`` (the blocks
are pre-norm, so the residual stream grows with the steps, where the paper's post-norm states are
normalized), and the output is the halting-weighted mean ``sum_n p^n_i H^n_i``; the loss adds
``tau * mean_i(N_i + R_i)`` over the real positions (``auxiliary_loss``). Without ACT every
position takes K steps and the output is ``H^K``. Positions past a sequence's length
(``lengths``) take no step and cost nothing.

Every depth step runs the shared unit over all positions (a halted position's inputs are its
frozen state), for all K steps: the outputs equal a loop that stops once every position halted,
and each depth step's mixer state (KV cache or recurrent state) is complete, so ``step`` (one
position at a time, the same K steps) continues from ``forward`` and gives the same outputs.
The state is a ``UniversalState``: the positions seen and, per depth step, every block's state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.models.depth.act import AdaptiveComputationTime
from rnnkit.models.depth.config import DepthConfig


class UniversalState(NamedTuple):
    """Decoding state: ``positions (B,)`` seen so far, and per depth step (K entries) a tuple of
    each block's state at that step (KV cache or recurrent states)."""

    positions: Tensor
    levels: tuple[tuple[Any, ...], ...]


def sinusoid(values: Tensor, size: int) -> Tensor:
    """``values (...)`` -> ``(..., size)``: ``sin(v / 10000^(2j/size))`` at feature ``2j`` and
    the cosine at ``2j + 1`` (Vaswani et al. 2017)."""
    pairs = (size + 1) // 2
    exponents = torch.arange(pairs, device=values.device, dtype=torch.float64) * 2 / size
    angles = values.to(torch.float64)[..., None] / (10000.0**exponents)  # (..., pairs)
    signal = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)  # (..., 2 pairs)
    return signal[..., :size]


def timing_signal(positions: Tensor, step: int, size: int, dtype: torch.dtype) -> Tensor:
    """``P^n``: position ``(B, T)`` and timestep ``step`` sinusoids summed, ``(B, T, size)``."""
    step_signal = sinusoid(torch.tensor(float(step), device=positions.device), size)
    return (sinusoid(positions, size) + step_signal).to(dtype)


def length_mask(lengths: Tensor | None, batch: int, steps: int, device: torch.device) -> Tensor:
    """``(B, T)`` bool, True at the real positions (all True without ``lengths``)."""
    if lengths is None:
        return torch.ones(batch, steps, dtype=torch.bool, device=device)
    lengths = torch.as_tensor(lengths, device=device)
    return torch.arange(steps, device=device)[None, :] < lengths[:, None]


class UniversalTransformer(nn.Module):
    """Runs the sequence model's blocks as one shared unit in depth (module docstring).

    Args:
        config: ``max_steps`` (K), ``act`` and its options.
        model_size: features D of the residual stream.
    """

    def __init__(self, config: DepthConfig, model_size: int) -> None:
        super().__init__()
        self.max_steps = config.max_steps
        self.model_size = model_size
        self.act = (
            AdaptiveComputationTime(
                model_size,
                config.max_steps,
                epsilon=config.epsilon,
                ponder_weight=config.ponder_weight,
                halting_bias=config.halting_bias,
            )
            if config.act
            else None
        )
        self.halting_norm = nn.LayerNorm(model_size) if config.act else None
        self.latest_loss: Tensor | None = None
        self.latest_steps: Tensor | None = None  # N per position (B, T) of the latest forward
        self.latest_ponder_cost: Tensor | None = None  # rho per position (B, T)
        self.reset_statistics()

    def forward(
        self,
        blocks: list[Any],
        hidden: Tensor,
        state: UniversalState | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, UniversalState]:
        """``hidden (B, T, D)`` after ``state``'s positions -> ``(B, T, D)`` and the new state."""
        batch, steps, size = hidden.shape
        if state is not None and len(state.levels) != self.max_steps:
            raise ValueError(
                f"state: expected {self.max_steps} depth steps, got {len(state.levels)}"
            )
        start = hidden.new_zeros(batch, dtype=torch.long) if state is None else state.positions
        positions = start[:, None] + torch.arange(steps, device=hidden.device)  # (B, T)
        active = length_mask(lengths, batch, steps, hidden.device)
        halting = None if self.act is None else self.act.start(hidden[..., 0], active)
        mean = torch.zeros_like(hidden)
        levels = []
        for step in range(1, self.max_steps + 1):
            inputs = hidden + timing_signal(positions, step, size, hidden.dtype)
            level = None if state is None else state.levels[step - 1]
            new, block_states = self._apply_blocks(blocks, inputs, level, lengths)
            levels.append(block_states)
            if halting is None or self.act is None or self.halting_norm is None:
                hidden = new
                continue
            running = halting.running
            weights = halting.update(self.act.probability(self.halting_norm(new)))  # (B, T)
            mean = mean + weights[..., None] * new
            hidden = torch.where(running[..., None], new, hidden)  # halted: copied
        if halting is None or self.act is None:
            steps_taken = active.to(hidden.dtype) * self.max_steps
            self._record(steps_taken, steps_taken, active, None)
            output = hidden
        else:
            cost = halting.ponder_cost()
            self._record(halting.steps, cost, active, self.act.loss(cost, active))
            output = mean
        return output, UniversalState(start + steps, tuple(levels))

    def step(
        self, blocks: list[Any], hidden: Tensor, state: UniversalState | None
    ) -> tuple[Tensor, UniversalState]:
        """One position per row: ``(B, D)`` -> ``(B, D)`` and the new state (all K steps)."""
        output, new_state = self.forward(blocks, hidden[:, None], state, None)
        return output[:, 0], new_state

    def auxiliary_loss(self) -> Tensor | None:
        """``tau * mean ponder cost`` of the latest forward (None without ACT)."""
        return self.latest_loss

    def statistics(self) -> dict[str, float]:
        """``ponder_steps`` (mean N per real position) and ``ponder_cost`` (mean N + R) over the
        forwards since ``reset_statistics``."""
        count = max(self._positions, 1.0)
        return {
            "ponder_steps": self._steps_total / count,
            "ponder_cost": self._cost_total / count,
        }

    def reset_statistics(self) -> None:
        """Start counting ``statistics`` afresh."""
        self._positions = 0.0
        self._steps_total = 0.0
        self._cost_total = 0.0

    def _record(self, steps: Tensor, cost: Tensor, active: Tensor, loss: Tensor | None) -> None:
        self.latest_loss = loss
        self.latest_steps = steps.detach()
        self.latest_ponder_cost = cost.detach()
        self._positions += float(active.sum())
        self._steps_total += float(steps.detach()[active].sum())
        self._cost_total += float(cost.detach()[active].sum())

    @staticmethod
    def _apply_blocks(
        blocks: list[Any], inputs: Tensor, level: tuple[Any, ...] | None, lengths: Tensor | None
    ) -> tuple[Tensor, tuple[Any, ...]]:
        """The shared unit: every block in turn, each with its state at this depth step."""
        if level is not None and len(level) != len(blocks):
            raise ValueError(
                f"state: expected one entry per block ({len(blocks)}) at each depth step, "
                f"got {len(level)}"
            )
        states = []
        hidden = inputs
        for index, block in enumerate(blocks):
            hidden, block_state = block(hidden, None if level is None else level[index], lengths)
            states.append(block_state)
        return hidden, tuple(states)

    def extra_repr(self) -> str:
        return f"max_steps={self.max_steps}, act={self.act is not None}"
