"""Aaren: softmax attention of a learned query over every prefix, run as an RNN.

Feng, Tung, Hajimirsadeghi, Ahmed, Bengio, Mori 2024, "Attention as an RNN",
https://arxiv.org/abs/2405.13956 (Sections 3.1 to 3.3). Per head, with a learned query ``q``:

    k_t = W_k x_t + b_k,   v_t = W_v x_t + b_v,   s_t = q . k_t / sqrt(d_k)
    o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i)      (heads concatenated: size H)

as a recurrence over a running maximum ``m``, numerator ``u`` and denominator ``w``:

    m_t = max(m_{t-1}, s_t)
    u_t = u_{t-1} exp(m_{t-1} - m_t) + v_t exp(s_t - m_t)
    w_t = w_{t-1} exp(m_{t-1} - m_t) + exp(s_t - m_t)
    o_t = u_t / w_t

Every exponent is at most 0, so nothing overflows. ``m`` is only a reference point: any state
``(m, u, w)`` and ``(m + c, u e^-c, w e^-c)`` give the same outputs, and the zero state
``(0, 0, 0)`` is the empty prefix. The paper computes all ``o_t`` at once with a parallel prefix
scan over ``(m, u, w)``; the ``"softmax_prefix"`` linear form of the scan strategy does the same
with a cumulative max for ``m`` and a diagonal scan for ``(u, w)``. The ``1 / sqrt(d_k)`` of
scaled dot-product attention only rescales the learned query.

State: ``maximum (B, heads)``, ``numerator (B, H)``, ``denominator (B, heads)``. Key size ``d_k
= d_v`` per head by default. Initialization: ``weight_ih``, ``bias_ih`` as torch.nn.Linear, the
query N(0, 1).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int
from rnnkit.cells.gla import head_size, heads_first, heads_last


class AarenState(NamedTuple):
    """``maximum (B, heads)``, ``numerator (B, H)``, ``denominator (B, heads)``."""

    maximum: Tensor
    numerator: Tensor
    denominator: Tensor


class AarenCell(Cell):
    """Aaren: ``weight_ih`` rows are (k, v); ``query (heads, d_k)`` is learned."""

    is_linear = True
    linear_form = "softmax_prefix"
    state_type = AarenState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        num_heads: int = 1,
        key_size: int | None = None,
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_heads", num_heads)
        self.num_heads = num_heads
        self.value_head_size = head_size("hidden_size", hidden_size, num_heads)
        self.key_size = hidden_size if key_size is None else key_size
        self.key_head_size = head_size("key_size", self.key_size, num_heads)
        self.bias = bias
        self.sizes = [self.key_size, hidden_size]
        self.query = nn.Parameter(torch.empty(num_heads, self.key_head_size))
        self.weight_ih = nn.Parameter(torch.empty(sum(self.sizes), input_size))
        self.bias_ih = nn.Parameter(torch.empty(sum(self.sizes))) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``weight_ih``, ``bias_ih`` as torch.nn.Linear; the query N(0, 1)."""
        nn.init.kaiming_uniform_(self.weight_ih, a=math.sqrt(5))
        if self.bias_ih is not None:
            bound = 1 / math.sqrt(self.input_size)
            nn.init.uniform_(self.bias_ih, -bound, bound)
        nn.init.normal_(self.query)

    def state_sizes(self) -> tuple[int, ...]:
        return (self.num_heads, self.hidden_size, self.num_heads)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., K + H)``: keys and values side by side."""
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def scores(self, projected: Tensor) -> Tensor:
        """``s = q . k / sqrt(d_k)`` per head: ``(..., P) -> (..., heads)``."""
        keys = projected[..., : self.key_size].unflatten(-1, (self.num_heads, -1))
        return (keys * self.query).sum(-1) / math.sqrt(self.key_head_size)

    def recur(self, projected: Tensor, state: AarenState) -> tuple[Tensor, AarenState]:
        """``projected (B, P)``, state ``(m, u, w)`` -> ``o_t (B, H)``, new state."""
        scores = self.scores(projected)  # (B, heads)
        values = projected[..., self.key_size :].unflatten(-1, (self.num_heads, -1))
        maximum = torch.maximum(state.maximum, scores)
        kept = (state.maximum - maximum).exp()  # exp(m_{t-1} - m_t)
        weight = (scores - maximum).exp()  # exp(s_t - m_t)
        numerator = state.numerator.unflatten(-1, (self.num_heads, -1))
        numerator = kept.unsqueeze(-1) * numerator + weight.unsqueeze(-1) * values
        denominator = kept * state.denominator + weight
        outputs = (numerator / denominator.unsqueeze(-1)).flatten(1)
        return outputs, AarenState(maximum, numerator.flatten(1), denominator)

    def prefix_terms(self, projected: Tensor, state: AarenState) -> tuple[Tensor, Tensor]:
        """Scores ``(B, heads, T)`` and values ``(B, heads, T, d_v)`` for all steps."""
        values = heads_first(projected[..., self.key_size :], self.num_heads)
        return self.scores(projected).transpose(1, 2), values

    def prefix_initial(self, state: AarenState) -> tuple[Tensor, Tensor, Tensor]:
        """``m (B, heads)``, ``u (B, heads, d_v)``, ``w (B, heads)``."""
        numerator = state.numerator.unflatten(-1, (self.num_heads, -1))
        return state.maximum, numerator, state.denominator

    def prefix_readout(
        self,
        projected: Tensor,
        attended: Tensor,
        final: tuple[Tensor, Tensor, Tensor],
        state: AarenState,
        active: Tensor | None,
    ) -> tuple[Tensor, AarenState]:
        """``o (B, T, H)`` from ``u / w (B, heads, T, d_v)``; the final ``(m, u, w)``."""
        maximum, numerator, denominator = final
        return heads_last(attended), AarenState(maximum, numerator.flatten(1), denominator)

    def extra_repr(self) -> str:
        options = [super().extra_repr(), f"num_heads={self.num_heads}", f"key_size={self.key_size}"]
        return ", ".join(options + ([] if self.bias else ["bias=False"]))
