"""Gated recurrent unit exactly as torch.nn.GRU defines it (gate order r, z, n).

Cho et al. 2014, https://arxiv.org/abs/1406.1078, with the reset gate applied after the
recurrent matrix as in torch and cuDNN:

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

``num_heads`` (FlashRNN, Poppel et al. 2024, https://arxiv.org/abs/2412.07752): W_hh is
block-diagonal, each of the ``num_heads`` heads of ``d = H / num_heads`` units reads only its own
h_{t-1}; stored as ``weight_hh (num_heads, 3d, d)``, see ``rnnkit.cells.heads``.

Recurrent regularization (variational dropout, DropConnect, zoneout): see
``rnnkit.cells.regularization``. Dropout of the recurrent input applies to the h_{t-1} that
enters W_hh; the interpolation uses the undropped h_{t-1}.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int, uniform_init
from rnnkit.cells.gla import head_size
from rnnkit.cells.heads import block_diagonal, headwise_product
from rnnkit.cells.regularization import Regularization


class HiddenState(NamedTuple):
    h: Tensor  # (B, H)


class GRUCell(Cell):
    """GRU cell; parameter names and shapes as torch.nn.GRUCell.

    With ``num_heads > 1``: ``weight_hh (num_heads, 3d, d)``, ``d = H / num_heads``.
    """

    native_kernel = "gru"
    fused_kernel = "gru"
    state_type = HiddenState
    output_field = "h"
    regularization: Regularization  # always set: the base Cell applies it

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        input_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout: float = 0.0,
        num_heads: int = 1,
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_heads", num_heads)
        self.head_size = head_size("hidden_size", hidden_size, num_heads)
        self.num_heads = num_heads
        self.bias = bias
        self.regularization = Regularization(input_dropout, hidden_dropout, weight_dropout, zoneout)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        if num_heads > 1:
            shape = (num_heads, 3 * self.head_size, self.head_size)
            self.weight_hh = nn.Parameter(torch.empty(shape))
        else:
            self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_init(self, self.hidden_size)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., 3H)``: W_ih x + b_ih."""
        inputs = self.regularized_inputs(inputs)
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def recur(self, projected: Tensor, state: HiddenState) -> tuple[Tensor, HiddenState]:
        """``projected (B, 3H)``, state ``(h (B, H),)`` -> ``h_t``, new state."""
        (h,) = state
        recurrent_input, weight_hh = self.regularized_recurrence(h, self.weight_hh)
        if self.num_heads > 1:
            recurrent = headwise_product(recurrent_input, weight_hh)  # (B, 3H)
            recurrent = recurrent if self.bias_hh is None else recurrent + self.bias_hh
        else:
            recurrent = functional.linear(recurrent_input, weight_hh, self.bias_hh)  # (B, 3H)
        gates = 2 * self.hidden_size
        reset, update = torch.sigmoid(projected[:, :gates] + recurrent[:, :gates]).chunk(2, 1)
        candidate = torch.tanh(torch.addcmul(projected[:, gates:], reset, recurrent[:, gates:]))
        h_new = torch.lerp(candidate, h, update)  # (1 - z) * n + z * h
        new_state = self.zoneout(state, HiddenState(h_new))
        return new_state.h, new_state

    def dense_weight_hh(self) -> Tensor:
        """W_hh as one dense ``(3H, H)`` matrix: block-diagonal with heads, else ``weight_hh``."""
        return block_diagonal(self.weight_hh) if self.num_heads > 1 else self.weight_hh

    def native_unsupported_reason(self) -> str | None:
        if self.num_heads > 1:
            return "torch's fused kernel has no head-wise recurrent matrices"
        return super().native_unsupported_reason()

    def native_weights(self) -> list[Tensor]:
        weights: list[Tensor] = [self.weight_ih, self.weight_hh]
        if self.bias_ih is not None and self.bias_hh is not None:
            weights += [self.bias_ih, self.bias_hh]
        return weights

    def fused_weights(self, batch_size: int) -> dict[str, Any]:
        """W_hh after DropConnect, b_hh (inside the recurrent product: the reset gate multiplies
        it) and this sequence's hidden dropout mask, by role (``kernels/fused_gru.py``); with
        heads, W_hh is the dense block-diagonal matrix, so gradients reach the per-head weights."""
        hidden_mask, recurrent = self.recurrence_noise(batch_size)
        if self.num_heads > 1:
            recurrent = block_diagonal(recurrent)
        return {
            "recurrent": recurrent,
            "recurrent_bias": self.bias_hh,
            "hidden_mask": hidden_mask,
            "num_heads": self.num_heads,  # the Triton kernel's head split (the CPU's ignores it)
        }

    def extra_repr(self) -> str:
        options = [super().extra_repr()] + ([] if self.bias else ["bias=False"])
        options += [f"num_heads={self.num_heads}"] if self.num_heads > 1 else []
        regularization = self.regularization.extra_repr()
        return ", ".join(options + ([regularization] if regularization else []))
