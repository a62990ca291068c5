"""A short causal convolution over time before a recurrent mixer (Zoology's short convolution).

Per channel d of the inputs, with a kernel of width K (``weight (D, 1, K)``, ``bias (D)``)::

    y_t[d] = silu(bias[d] + sum_{i=0}^{K-1} weight[d, 0, K-1-i] x_{t-i}[d])

with ``x_t = 0`` before the first step. Linear recurrences and state-space models use it so that
the input at a position can see the few positions before it: binding a key to the value that
follows it (associative recall) needs one earlier token, and a recurrence whose gates read only
the current input cannot form that pair. Arora et al. 2023, "Zoology: Measuring and Improving
Recall in Efficient Language Models", https://arxiv.org/abs/2312.04927 (short convolutions in
the gated-convolution and linear-attention models); Mamba's ``conv1d`` before the SSM and
flash-linear-attention's ``ShortConvolution`` on q, k, v (kernel 4, SiLU). Here it runs on the
mixer's input, before the cell's own projections.

The state is the last ``K - 1`` inputs, ``(B, K - 1, D)``, so that running a sequence whole, in
chunks with the carried state or one step at a time gives the same outputs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional


class ShortConvolution(nn.Module):
    """Causal depthwise convolution of width ``kernel_size`` over ``(B, T, D)``, then SiLU."""

    def __init__(self, size: int, kernel_size: int) -> None:
        super().__init__()
        if kernel_size < 2:
            raise ValueError(f"kernel_size: expected 2 or more, got {kernel_size}")
        self.size = size
        self.kernel_size = kernel_size
        self.convolution = nn.Conv1d(size, size, kernel_size, groups=size)

    def initial_state(self, inputs: Tensor) -> Tensor:
        """Zeros ``(B, K - 1, D)``: nothing before the first step."""
        return inputs.new_zeros(inputs.shape[0], self.kernel_size - 1, self.size)

    def forward(
        self, inputs: Tensor, state: Tensor | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``inputs (B, T, D)`` -> ``(outputs (B, T, D), state (B, K - 1, D))``: the state
        holds each row's last ``K - 1`` inputs within its length (``lengths (B,)``; right
        padding), after the carried ``state`` when the row is shorter."""
        if inputs.dim() != 3 or inputs.shape[2] != self.size:
            raise ValueError(f"inputs: expected (B, T, {self.size}), got {tuple(inputs.shape)}")
        if state is None:
            state = self.initial_state(inputs)
        self._check_state(state, inputs.shape[0])
        history = torch.cat([state, inputs], dim=1)  # (B, K - 1 + T, D)
        convolved = self.convolution(history.transpose(1, 2)).transpose(1, 2)  # (B, T, D)
        keep = self.kernel_size - 1
        if lengths is None:
            new_state = history[:, history.shape[1] - keep :]
        else:
            # rows end at K - 1 + length in history: their last K - 1 inputs end there
            offsets = torch.arange(keep, device=inputs.device)
            positions = lengths.to(inputs.device).long()[:, None] + offsets  # (B, K - 1)
            new_state = history.gather(1, positions[:, :, None].expand(-1, -1, self.size))
        return functional.silu(convolved), new_state

    def step(self, inputs: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One step: ``inputs (B, D)`` -> ``(outputs (B, D), state (B, K - 1, D))``."""
        outputs, new_state = self.forward(inputs[:, None], state)
        return outputs[:, 0], new_state

    def _check_state(self, state: Tensor, batch: int) -> None:
        expected = (batch, self.kernel_size - 1, self.size)
        if tuple(state.shape) != expected:
            raise ValueError(
                f"short convolution state: expected {expected}, got {tuple(state.shape)}"
            )
