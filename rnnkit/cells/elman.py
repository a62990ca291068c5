"""Elman network (simple recurrent network), as torch.nn.RNN.

Elman 1990, "Finding structure in time", Cognitive Science 14(2):

    h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),   act = tanh or relu
    y_t = h_t

``num_heads`` (FlashRNN, Poppel et al. 2024, https://arxiv.org/abs/2412.07752): W_hh is
block-diagonal, each of the ``num_heads`` heads of ``d = H / num_heads`` units reads only its own
h_{t-1}; stored as ``weight_hh (num_heads, d, d)``, see ``rnnkit.cells.heads``.

Recurrent regularization (variational dropout, DropConnect, zoneout): see
``rnnkit.cells.regularization``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int, summed_bias, uniform_init
from rnnkit.cells.gla import head_size
from rnnkit.cells.gru import HiddenState
from rnnkit.cells.heads import block_diagonal, headwise_product
from rnnkit.cells.regularization import Regularization

NONLINEARITIES = {"tanh": torch.tanh, "relu": torch.relu}


class ElmanCell(Cell):
    """Elman cell; parameter names and shapes as torch.nn.RNNCell.

    With ``num_heads > 1``: ``weight_hh (num_heads, d, d)``, ``d = H / num_heads``.
    """

    fused_kernel = "elman"
    state_type = HiddenState
    output_field = "h"
    regularization: Regularization  # always set: the base Cell applies it

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        nonlinearity: str = "tanh",
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
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        self.bias = bias
        self.nonlinearity = nonlinearity
        self.native_kernel = f"rnn_{nonlinearity}"
        self.regularization = Regularization(input_dropout, hidden_dropout, weight_dropout, zoneout)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        if num_heads > 1:
            shape = (num_heads, self.head_size, self.head_size)
            self.weight_hh = nn.Parameter(torch.empty(shape))
        else:
            self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_init(self, self.hidden_size)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., H)``: W_ih x + b_ih + b_hh (both biases, constant in time)."""
        inputs = self.regularized_inputs(inputs)
        return functional.linear(inputs, self.weight_ih, summed_bias(self.bias_ih, self.bias_hh))

    def recur(self, projected: Tensor, state: HiddenState) -> tuple[Tensor, HiddenState]:
        """``projected (B, H)``, state ``(h (B, H),)`` -> ``h_t``, new state."""
        (h,) = state
        recurrent_input, weight_hh = self.regularized_recurrence(h, self.weight_hh)
        if self.num_heads > 1:
            pre_activation = projected + headwise_product(recurrent_input, weight_hh)  # (B, H)
        else:
            pre_activation = torch.addmm(projected, recurrent_input, weight_hh.t())  # (B, H)
        h_new = NONLINEARITIES[self.nonlinearity](pre_activation)
        new_state = self.zoneout(state, HiddenState(h_new))
        return new_state.h, new_state

    def dense_weight_hh(self) -> Tensor:
        """W_hh as one dense ``(H, H)`` matrix: block-diagonal with heads, else ``weight_hh``."""
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
        """W_hh after DropConnect, this sequence's hidden dropout mask and the nonlinearity, by
        role (``kernels/fused_elman.py``); with heads, W_hh is the dense block-diagonal matrix, so
        gradients reach the per-head weights."""
        hidden_mask, recurrent = self.recurrence_noise(batch_size)
        if self.num_heads > 1:
            recurrent = block_diagonal(recurrent)
        return {
            "recurrent": recurrent,
            "hidden_mask": hidden_mask,
            "nonlinearity": self.nonlinearity,
        }

    def extra_repr(self) -> str:
        options = [super().extra_repr(), f"nonlinearity={self.nonlinearity!r}"]
        options += [] if self.bias else ["bias=False"]
        options += [f"num_heads={self.num_heads}"] if self.num_heads > 1 else []
        regularization = self.regularization.extra_repr()
        return ", ".join(options + ([regularization] if regularization else []))
