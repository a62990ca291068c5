"""Long short-term memory in torch's gate order (i, f, g, o).

Hochreiter & Schmidhuber 1997 with the forget gate of Gers et al. 2000, exactly as torch.nn.LSTM:

    i_t = sigmoid(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi [+ w_ci * c_{t-1}])
    f_t = sigmoid(W_if x_t + b_if + W_hf h_{t-1} + b_hf [+ w_cf * c_{t-1}])
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
    c_t = f_t * c_{t-1} + i_t * g_t
    o_t = sigmoid(W_io x_t + b_io + W_ho h_{t-1} + b_ho [+ w_co * c_t])
    h_t = o_t * tanh(c_t)                       [h_t = W_hr h_t with proj_size]

Options:
- ``peephole``: the bracketed diagonal peephole terms (Gers & Schmidhuber 2000,
  "Recurrent nets that time and count").
- ``layer_norm`` (Ba et al. 2016, https://arxiv.org/abs/1607.06450, eq. 20-22): the input and
  recurrent pre-activations are normalized separately over the 4H gates,
  ``gates = LN(W_ih x_t) + b_ih + LN(W_hh h_{t-1}) + b_hh``, and the cell before its tanh,
  ``h_t = o_t * tanh(LN(c_t))``.
- ``proj_size`` (Sak et al. 2014, https://arxiv.org/abs/1402.1128):
  ``h_t = W_hr (o_t * tanh(c_t))``.
- ``forget_bias``: initial value of the forget-gate bias (Gers et al. 2000; Jozefowicz et al. 2015
  recommend 1.0), put in ``bias_ih``; ``bias_hh``'s forget slice starts at zero.
- ``num_heads`` (FlashRNN, Poppel et al. 2024, https://arxiv.org/abs/2412.07752): W_hh is
  block-diagonal, each of the ``num_heads`` heads of ``d = H / num_heads`` units reads only its
  own h_{t-1}; stored as ``weight_hh (num_heads, 4d, d)``, see ``rnnkit.cells.heads``. Not
  combined with ``proj_size``.
- recurrent regularization, see ``rnnkit.cells.regularization``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int, summed_bias, uniform_init
from rnnkit.cells.gla import head_size
from rnnkit.cells.heads import block_diagonal, headwise_product
from rnnkit.cells.regularization import Regularization


class LSTMState(NamedTuple):
    h: Tensor  # (B, proj_size or H)
    c: Tensor  # (B, H)


class LSTMCell(Cell):
    """LSTM cell; parameter names and shapes as torch.nn.LSTMCell (plus ``weight_hr``).

    With ``num_heads > 1``: ``weight_hh (num_heads, 4d, d)``, ``d = H / num_heads``.
    """

    native_kernel = "lstm"
    fused_kernel = "lstm"
    state_type = LSTMState
    output_field = "h"
    regularization: Regularization  # always set: the base Cell applies it

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        proj_size: int = 0,
        peephole: bool = False,
        layer_norm: bool = False,
        forget_bias: float | None = None,
        input_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout: float = 0.0,
        num_heads: int = 1,
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_heads", num_heads)
        self.head_size = head_size("hidden_size", hidden_size, num_heads)
        if num_heads > 1 and proj_size != 0:
            raise ValueError(
                f"proj_size is not supported with num_heads > 1, got proj_size={proj_size} "
                f"and num_heads={num_heads}"
            )
        if proj_size != 0:
            check_positive_int("proj_size", proj_size)
            if proj_size >= hidden_size:
                raise ValueError(
                    f"proj_size has to be smaller than hidden_size, got proj_size={proj_size} "
                    f"and hidden_size={hidden_size}"
                )
        if forget_bias is not None and not bias:
            raise ValueError("forget_bias needs bias=True, got bias=False")
        self.bias = bias
        self.proj_size = proj_size
        self.peephole = peephole
        self.layer_norm = layer_norm
        self.forget_bias = forget_bias
        self.num_heads = num_heads
        self.regularization = Regularization(input_dropout, hidden_dropout, weight_dropout, zoneout)
        gates = 4 * hidden_size
        recurrent_size = proj_size or hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        if num_heads > 1:
            shape = (num_heads, 4 * self.head_size, self.head_size)
            self.weight_hh = nn.Parameter(torch.empty(shape))
        else:
            self.weight_hh = nn.Parameter(torch.empty(gates, recurrent_size))
        self.bias_ih = nn.Parameter(torch.empty(gates)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(gates)) if bias else None
        self.weight_hr = nn.Parameter(torch.empty(proj_size, hidden_size)) if proj_size else None
        if peephole:
            self.weight_ci = nn.Parameter(torch.empty(hidden_size))
            self.weight_cf = nn.Parameter(torch.empty(hidden_size))
            self.weight_co = nn.Parameter(torch.empty(hidden_size))
        if layer_norm:
            self.norm_input = nn.LayerNorm(gates, bias=False)
            self.norm_hidden = nn.LayerNorm(gates, bias=False)
            self.norm_cell = nn.LayerNorm(hidden_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        uniform_init(self, self.hidden_size)
        if self.forget_bias is not None:
            # __init__ refuses forget_bias without bias=True
            assert self.bias_ih is not None and self.bias_hh is not None
            forget = slice(self.hidden_size, 2 * self.hidden_size)
            with torch.no_grad():
                self.bias_ih[forget] = self.forget_bias
                self.bias_hh[forget] = 0.0
        if self.layer_norm:
            for norm in (self.norm_input, self.norm_hidden, self.norm_cell):
                norm.reset_parameters()

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    def state_sizes(self) -> tuple[int, ...]:
        return (self.proj_size or self.hidden_size, self.hidden_size)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., 4H)``: W_ih x + b_ih + b_hh (LN(W_ih x) + ... with layer_norm).

        Both biases are constant in time, so they are added here rather than at every step.
        """
        inputs = self.regularized_inputs(inputs)
        bias = summed_bias(self.bias_ih, self.bias_hh)
        if self.layer_norm:
            # LN(z) g + b as one layer_norm call with b as its shift: the same numbers without
            # a separate pass over (B, T, 4H) for the bias (5.7 ms of 200 at B=16, T=256, H=256)
            norm = self.norm_input
            projected = functional.linear(inputs, self.weight_ih)
            return functional.layer_norm(
                projected, norm.normalized_shape, norm.weight, bias, norm.eps
            )
        return functional.linear(inputs, self.weight_ih, bias)

    def fused_projection(self, inputs: Tensor) -> Tensor:
        """What the ``fused`` kernel takes for ``project_inputs``: the same, except that with
        ``layer_norm`` it is ``W_ih x`` before the input layer norm and the biases, which the
        kernel applies per row (``fused_weights``'s ``norm_input`` and ``input_shift``)."""
        if not self.layer_norm:
            return self.project_inputs(inputs)
        return functional.linear(self.regularized_inputs(inputs), self.weight_ih)

    def recur(self, projected: Tensor, state: LSTMState) -> tuple[Tensor, LSTMState]:
        """``projected (B, 4H)``, state ``(h (B, R), c (B, H))`` -> ``h_t``, new state."""
        h, c = state
        recurrent_input, weight_hh = self.regularized_recurrence(h, self.weight_hh)
        if self.num_heads > 1:
            mixed = headwise_product(recurrent_input, weight_hh)  # (B, 4H)
            gates = projected + (self.norm_hidden(mixed) if self.layer_norm else mixed)
        elif self.layer_norm:
            gates = projected + self.norm_hidden(functional.linear(recurrent_input, weight_hh))
        else:
            gates = torch.addmm(projected, recurrent_input, weight_hh.t())  # (B, 4H)
        input_pre, forget_pre, candidate_pre, output_pre = gates.chunk(4, 1)
        if self.peephole:
            input_gate = torch.sigmoid(torch.addcmul(input_pre, self.weight_ci, c))
            forget_gate = torch.sigmoid(torch.addcmul(forget_pre, self.weight_cf, c))
        else:  # one sigmoid over the adjacent i and f slices
            input_gate, forget_gate = torch.sigmoid(gates[:, : 2 * self.hidden_size]).chunk(2, 1)
        c_new = torch.addcmul(forget_gate * c, input_gate, torch.tanh(candidate_pre))
        if self.peephole:
            output_pre = torch.addcmul(output_pre, self.weight_co, c_new)
        cell_out = self.norm_cell(c_new) if self.layer_norm else c_new
        h_new = torch.sigmoid(output_pre) * torch.tanh(cell_out)
        if self.weight_hr is not None:
            h_new = functional.linear(h_new, self.weight_hr)
        new_state = self.zoneout(state, LSTMState(h_new, c_new))
        return new_state.h, new_state

    def dense_weight_hh(self) -> Tensor:
        """W_hh as one dense ``(4H, R)`` matrix: block-diagonal with heads, else ``weight_hh``."""
        return block_diagonal(self.weight_hh) if self.num_heads > 1 else self.weight_hh

    def native_weights(self) -> list[Tensor]:
        weights: list[Tensor] = [self.weight_ih, self.weight_hh]
        if self.bias_ih is not None and self.bias_hh is not None:
            weights += [self.bias_ih, self.bias_hh]
        if self.weight_hr is not None:
            weights.append(self.weight_hr)
        return weights

    def fused_weights(self, batch_size: int) -> dict[str, Any]:
        """W_hh after DropConnect and this sequence's hidden dropout mask, the peepholes stacked
        ``(3, H)``, the layer-norm gains and W_hr, by role (``kernels/fused_lstm.py``); with
        heads, W_hh is the dense block-diagonal matrix, so gradients reach the per-head weights,
        and ``num_heads`` says how many blocks it holds."""
        hidden_mask, recurrent = self.recurrence_noise(batch_size)
        if self.num_heads > 1:
            recurrent = block_diagonal(recurrent)
        weights: dict[str, Any] = {"recurrent": recurrent, "hidden_mask": hidden_mask}
        weights["num_heads"] = self.num_heads
        if self.peephole:
            weights["peephole"] = torch.stack([self.weight_ci, self.weight_cf, self.weight_co])
        if self.layer_norm:
            weights["norm_hidden"] = self.norm_hidden.weight
            weights["norm_cell_weight"] = self.norm_cell.weight
            weights["norm_cell_bias"] = self.norm_cell.bias
            weights["norm_hidden_eps"] = self.norm_hidden.eps
            weights["norm_cell_eps"] = self.norm_cell.eps
            # the input projection's layer norm, applied in the loop (fused_projection)
            bias = summed_bias(self.bias_ih, self.bias_hh)
            weights["norm_input"] = self.norm_input.weight
            weights["input_shift"] = (
                self.norm_input.weight.new_zeros(4 * self.hidden_size) if bias is None else bias
            )
            weights["norm_input_eps"] = self.norm_input.eps
        weights["projection"] = self.weight_hr
        return weights

    def native_unsupported_reason(self) -> str | None:
        if self.num_heads > 1:
            return "torch's fused kernel has no head-wise recurrent matrices"
        if self.peephole:
            return "peephole connections are not supported by torch's fused LSTM kernel"
        if self.layer_norm:
            return "layer normalization is not supported by torch's fused LSTM kernel"
        return super().native_unsupported_reason()

    def extra_repr(self) -> str:
        options = [super().extra_repr()]
        if not self.bias:
            options.append("bias=False")
        if self.proj_size:
            options.append(f"proj_size={self.proj_size}")
        if self.peephole:
            options.append("peephole=True")
        if self.layer_norm:
            options.append("layer_norm=True")
        if self.forget_bias is not None:
            options.append(f"forget_bias={self.forget_bias}")
        if self.num_heads > 1:
            options.append(f"num_heads={self.num_heads}")
        regularization = self.regularization.extra_repr()
        return ", ".join(options + ([regularization] if regularization else []))
