"""Jordan network: the previous output, not the hidden layer, is fed back.

Jordan 1986, "Serial order: a parallel distributed processing approach" (ICS report 8604):

    h_t = tanh(W_ih x_t + b_ih + W_hh y_{t-1} + b_hh)
    y_t = tanh(W_ho h_t + b_ho)

The state is the previous output y_{t-1} (``output_size`` features, default ``hidden_size``);
the hidden layer h_t is recomputed from it at every step. The output nonlinearity keeps the fed
back signal bounded, as the sigmoid output units of the original did.

Recurrent regularization (variational dropout, DropConnect, zoneout): see
``rnnkit.cells.regularization``; dropout of the recurrent input applies to y_{t-1}.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int, summed_bias, uniform_init
from rnnkit.cells.regularization import Regularization


class OutputState(NamedTuple):
    y: Tensor  # (B, output_size)


class JordanCell(Cell):
    """Jordan cell with ``weight_ih (H, D)``, ``weight_hh (H, O)`` and ``weight_ho (O, H)``."""

    fused_kernel = "jordan"
    state_type = OutputState
    output_field = "y"
    regularization: Regularization  # always set: the base Cell applies it

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        output_size: int | None = None,
        input_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        if output_size is not None:
            check_positive_int("output_size", output_size)
        self.bias = bias
        self.jordan_output_size = output_size or hidden_size
        self.regularization = Regularization(input_dropout, hidden_dropout, weight_dropout, zoneout)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, self.jordan_output_size))
        self.bias_ih = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.weight_ho = nn.Parameter(torch.empty(self.jordan_output_size, hidden_size))
        self.bias_ho = nn.Parameter(torch.empty(self.jordan_output_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_init(self, self.hidden_size)

    @property
    def output_size(self) -> int:
        return self.jordan_output_size

    def state_sizes(self) -> tuple[int, ...]:
        return (self.jordan_output_size,)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., H)``: W_ih x + b_ih + b_hh (both biases, constant in time)."""
        inputs = self.regularized_inputs(inputs)
        return functional.linear(inputs, self.weight_ih, summed_bias(self.bias_ih, self.bias_hh))

    def recur(self, projected: Tensor, state: OutputState) -> tuple[Tensor, OutputState]:
        """``projected (B, H)``, state ``(y (B, O),)`` -> ``y_t``, new state."""
        (y,) = state
        recurrent_input, weight_hh = self.regularized_recurrence(y, self.weight_hh)
        hidden = torch.tanh(torch.addmm(projected, recurrent_input, weight_hh.t()))  # (B, H)
        y_new = torch.tanh(functional.linear(hidden, self.weight_ho, self.bias_ho))
        new_state = self.zoneout(state, OutputState(y_new))
        return new_state.y, new_state

    def fused_weights(self, batch_size: int) -> dict[str, Any]:
        """W_hh after DropConnect, this sequence's dropout mask of y_{t-1}, W_ho and b_ho, by
        role (``kernels/fused_elman.py``: Elman's loop with the output layer fed back)."""
        hidden_mask, recurrent = self.recurrence_noise(batch_size)
        return {
            "recurrent": recurrent,
            "hidden_mask": hidden_mask,
            "output_weight": self.weight_ho,
            "output_bias": self.bias_ho,
        }

    def extra_repr(self) -> str:
        options = [super().extra_repr(), f"output_size={self.jordan_output_size}"]
        options += [] if self.bias else ["bias=False"]
        regularization = self.regularization.extra_repr()
        return ", ".join(options + ([regularization] if regularization else []))
