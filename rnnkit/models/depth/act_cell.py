"""Any registered recurrent cell with adaptive computation time: several ponder steps per time step
(Graves 2016, "Adaptive Computation Time for Recurrent Neural Networks",
https://arxiv.org/abs/1603.08983, section 2).

At time step t, the cell S takes ponder steps ``n = 1 .. N(t)`` from the previous time step's state:

    x^n_t = [x_t, 1] for n = 1, [x_t, 0] after          (the first-step flag)
    y^n_t, s^n_t = S(x^n_t, s^(n-1)_t),   s^0_t = s_(t-1)
    h^n_t = sigmoid(W_h s^n_t + b_h)                     (s^n_t: every state field, side by side)
    N(t), R(t), p^n_t as in ``rnnkit.models.depth.act`` (at most ``max_steps`` steps)
    s_t = sum_n p^n_t s^n_t,   y_t = sum_n p^n_t y^n_t   (every field of the state)
    P(x) = sum_t (N(t) + R(t)),   loss = task loss + tau P(x)

so the state passed to the next time step is the halting-weighted mean of the ponder states.
``forward`` gives the outputs ``(B, T, O)``, the final state, the ponder cost ``P(x)`` per
sequence ``(B,)`` and ``N(t)`` per step ``(B, T)``; ``loss`` is ``tau * mean_b P(x_b)``. With
``lengths``, a sequence that has ended keeps its state, its outputs are zero and its steps cost
nothing. The loop over time and ponder steps is plain Python (a reference, not a fast path).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.cells import State, make_cell
from rnnkit.models.depth.act import AdaptiveComputationTime


class AdaptiveCellOutput(NamedTuple):
    """What ``AdaptiveComputationCell.forward`` returns."""

    outputs: Tensor
    """``(B, T, O)`` halting-weighted outputs; zero past a sequence's length."""
    state: State
    """The final state, each sequence's at its own last step."""
    ponder_cost: Tensor
    """``(B,)`` P(x) = sum over the real steps of N(t) + R(t)."""
    steps: Tensor
    """``(B, T)`` N(t), the ponder steps taken; 0 past a sequence's length."""


class AdaptiveComputationCell(nn.Module):
    """The registered cell ``cell`` (input ``input_size + 1``: the first-step flag) pondering
    up to ``max_steps`` steps per time step.

    Args:
        cell: a registered cell's name; ``options`` are its own.
        input_size: features of x_t.
        hidden_size: the cell's hidden size.
        max_steps: M, the most ponder steps per time step.
        epsilon: a time step halts once its halting sum reaches ``1 - epsilon``.
        ponder_weight: tau.
        halting_bias: the halting unit's initial bias.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        max_steps: int = 10,
        epsilon: float = 0.01,
        ponder_weight: float = 0.01,
        halting_bias: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__()
        self.input_size = input_size
        self.cell = make_cell(cell, input_size + 1, hidden_size, **options)
        self.act = AdaptiveComputationTime(
            sum(self.cell.state_sizes()), max_steps, epsilon, ponder_weight, halting_bias
        )

    @property
    def output_size(self) -> int:
        """Features of y_t."""
        return self.cell.output_size

    def initial_state(self, batch_size: int, like: Tensor) -> State:
        """The cell's zero state on ``like``'s device and dtype."""
        return self.cell.initial_state(batch_size, device=like.device, dtype=like.dtype)

    def step(
        self, inputs: Tensor, state: State, active: Tensor | None = None
    ) -> tuple[Tensor, State, Tensor, Tensor]:
        """One time step: ``x_t (B, D)``, ``s_(t-1)`` -> ``y_t (B, O)``, ``s_t``, ``N(t) (B,)``
        and ``rho_t = N(t) + R(t) (B,)``; rows not ``active (B,)`` keep their state."""
        batch = inputs.shape[0]
        flag = inputs.new_ones(batch, 1)
        first, later = torch.cat((inputs, flag), -1), torch.cat((inputs, 0 * flag), -1)
        halting = self.act.start(inputs[:, 0], active)
        output_mean: Tensor | None = None
        state_mean: list[Tensor] = []
        ponder_state = state
        for step in range(self.act.max_steps):
            output, ponder_state = self.cell.step(first if step == 0 else later, ponder_state)
            weights = halting.update(self.act.probability(self.cell.flatten_state(ponder_state)))
            weight = weights[:, None]  # (B, 1)
            output_mean = weight * output if output_mean is None else output_mean + weight * output
            fields = [weight * value for value in ponder_state]
            state_mean = (
                fields
                if not state_mean
                else [a + b for a, b in zip(state_mean, fields, strict=True)]
            )
            if halting.all_halted():
                break
        assert output_mean is not None  # max_steps >= 1
        new_state = type(state)(*state_mean)
        if active is not None:
            keep = active[:, None]
            new_state = type(state)(
                *(torch.where(keep, new, old) for new, old in zip(new_state, state, strict=True))
            )
        return output_mean, new_state, halting.steps, halting.ponder_cost()

    def forward(
        self, inputs: Tensor, state: State | None = None, lengths: Tensor | None = None
    ) -> AdaptiveCellOutput:
        """``inputs (B, T, D)`` -> ``AdaptiveCellOutput``; ``lengths (B,)`` for right padding."""
        batch, steps, _ = inputs.shape
        if state is None:
            state = self.initial_state(batch, inputs)
        self.cell.begin_sequence(batch, device=inputs.device, dtype=inputs.dtype)
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=inputs.device)
        outputs = [inputs.new_zeros(batch, 0, self.output_size)]  # T = 0 gives (B, 0, O)
        steps_taken = [inputs.new_zeros(batch, 0)]
        cost = inputs.new_zeros(batch)
        for time, inputs_t in enumerate(inputs.unbind(1)):
            active = None if lengths is None else time < lengths  # (B,)
            output, state, taken, rho = self.step(inputs_t, state, active)
            outputs.append(output[:, None])
            steps_taken.append(taken[:, None])
            cost = cost + rho
        return AdaptiveCellOutput(torch.cat(outputs, 1), state, cost, torch.cat(steps_taken, 1))

    def loss(self, ponder_cost: Tensor) -> Tensor:
        """``tau * mean_b P(x_b)`` for ``ponder_cost (B,)``, a scalar to add to the task loss."""
        return self.act.ponder_weight * ponder_cost.mean()
