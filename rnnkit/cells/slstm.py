"""sLSTM: an LSTM with exponential gating, a normalizer and a stabilizer, and block-diagonal
memory mixing across heads.

Beck, Poeppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter, Hochreiter 2024,
"xLSTM: Extended Long Short-Term Memory", https://arxiv.org/abs/2405.04517 (Section 2.2;
Appendix A). Gate order (i, f, z, o) as the authors' code (``xlstm/blocks/slstm``):

    i~_t = W_i x_t + R_i h_{t-1} + b_i                  (log of the exponential input gate)
    f~_t = W_f x_t + R_f h_{t-1} + b_f
    z_t  = tanh(W_z x_t + R_z h_{t-1} + b_z)
    o_t  = sigmoid(W_o x_t + R_o h_{t-1} + b_o)
    log f_t = f~_t                 (forget_gate="exponential", f_t = exp(f~_t))
            = logsigmoid(f~_t)     (forget_gate="sigmoid", f_t = sigmoid(f~_t), the code's)
    m_t  = max(log f_t + m_{t-1}, i~_t)                 (stabilizer)
    i'_t = exp(i~_t - m_t),   f'_t = exp(log f_t + m_{t-1} - m_t)
    c_t  = f'_t c_{t-1} + i'_t z_t,   n_t = f'_t n_{t-1} + i'_t
    h_t  = o_t * c_t / n_t

The stabilized ``(c_t, n_t)`` are the unstabilized ones times ``exp(-m_t)``, so ``c_t / n_t``
and ``h_t`` are the paper's unstabilized values while no exponential exceeds 1. With
``num_heads = k`` the recurrent matrices R are block-diagonal: the H units form k heads of
``d = H / k`` units and each head's pre-activations read only that head's ``h_{t-1}``.
Defaults: the paper's exponential forget gate (the authors' code has only the sigmoid one) and
one head (the authors' default is 4).

Initial state: all zeros, valid because ``n_{t-1} = 0`` marks an empty memory. There, as in the
authors' CUDA kernel (per unit; their vanilla code tests the whole batch), ``m_t = i~_t`` and
``f'_t = min(exp(log f_t + m_{t-1} - m_t), 1)``: ``i'_t = 1``, so ``c_t = z_t``, ``n_t = 1``
after the first step and ``c / n`` is defined from then on. Otherwise the min changes nothing
(``m_t`` bounds both exponents). Valid states have ``n > 0``, or ``n = 0`` with ``c = 0``.

Parameters and layout: ``weight_ih (4H, D)`` and ``bias_ih (4H)`` gate-major (rows ``g H + j``
for gate g in (i, f, z, o) and unit j); ``weight_hh (k, 4d, d)``: for head ``r``, row ``g d +
a`` is gate g of the head's unit ``a`` and column ``b`` its unit ``b`` (the layout of the
authors' vanilla backend). Initialization as the authors' code: ``weight_ih`` from N(0, 2 /
(5 D)) (their gate projections' "small init"), ``weight_hh`` zero, biases zero except the
forget gate's "powerlaw_blockdependent" (for one block): per head ``b_f[a] = 5 - 12 (a / (d -
1))^0.3`` (5 for ``d = 1``), from 5 down to -7; with the exponential forget gate the bias is
``logsigmoid`` of that, so the initial forget gates are the same ``sigmoid(b_f)`` in both.

For the Newton strategy the flat state holds each head's ``(h, c, n, m)`` side by side, and
``state_jacobian`` gives one ``4d x 4d`` block per head.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int
from rnnkit.cells.gla import head_size

FORGET_GATES = ("exponential", "sigmoid")


def _placed(block: Tensor, field: int, shape: torch.Size) -> Tensor:
    """Rows ``(N, k, d, 4d)`` over a head's previous ``(h, c, n, m)``: ``block (..., d, d)``
    broadcast to ``(*shape, d)`` at ``field``, zeros at the other three fields."""
    block = block.expand(*shape, shape[-1])
    zero = torch.zeros_like(block)
    return torch.cat([block if index == field else zero for index in range(4)], -1)


def _scaled(values: Tensor, rows: Tensor) -> Tensor:
    """Each row of ``rows (..., d, 4d)`` times its entry of ``values (..., d)``."""
    return values.unsqueeze(-1) * rows


class SLSTMState(NamedTuple):
    h: Tensor  # (B, H) hidden state
    c: Tensor  # (B, H) cell state, stabilized
    n: Tensor  # (B, H) normalizer, stabilized
    m: Tensor  # (B, H) stabilizer


class SLSTMCell(Cell):
    """sLSTM: ``weight_ih (4H, D)``, ``bias_ih (4H)``, ``weight_hh (heads, 4d, d)``; gates
    (i, f, z, o). See the module docstring for the equations, layout and initialization."""

    state_type = SLSTMState
    output_field = "h"
    jacobian_structure = "block"
    fused_kernel = "slstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        num_heads: int = 1,
        forget_gate: str = "exponential",
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_heads", num_heads)
        if forget_gate not in FORGET_GATES:
            raise ValueError(f"forget_gate must be one of {FORGET_GATES}, got {forget_gate!r}")
        self.head_size = head_size("hidden_size", hidden_size, num_heads)
        self.num_heads = num_heads
        self.forget_gate = forget_gate
        self.bias = bias
        self.jacobian_block_size = 4 * self.head_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(num_heads, 4 * self.head_size, self.head_size))
        self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialization; see the module docstring."""
        with torch.no_grad():
            nn.init.normal_(self.weight_ih, std=math.sqrt(2 / (5 * self.input_size)))
            nn.init.zeros_(self.weight_hh)
            if self.bias_ih is not None:
                nn.init.zeros_(self.bias_ih)
                position = torch.linspace(0, 1, self.head_size, dtype=torch.float64)
                forget = (5 - 12 * position**0.3).repeat(self.num_heads)  # (H,)
                if self.forget_gate == "exponential":
                    forget = functional.logsigmoid(forget)
                self.bias_ih[self.hidden_size : 2 * self.hidden_size] = forget

    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,) * 4

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., 4H)``: W x + b for i, f, z, o."""
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def recurrent_input(self, h: Tensor) -> Tensor:
        """``R h (N, 4H)`` gate-major from ``h (N, H)``: each head's rows read its own units."""
        heads = h.unflatten(-1, (self.num_heads, self.head_size))  # (N, k, d)
        mixed = torch.einsum("kgd,nkd->nkg", self.weight_hh, heads)  # (N, k, 4d)
        return mixed.unflatten(-1, (4, self.head_size)).transpose(1, 2).flatten(1)

    def log_forget(self, forget_pre: Tensor) -> Tensor:
        """``log f_t`` from ``f~_t``: itself (exponential gate) or ``logsigmoid`` (sigmoid)."""
        if self.forget_gate == "exponential":
            return forget_pre
        return functional.logsigmoid(forget_pre)

    def recur(self, projected: Tensor, state: SLSTMState) -> tuple[Tensor, SLSTMState]:
        """``projected (N, 4H)``, state ``(h, c, n, m)`` each ``(N, H)`` -> ``h_t``, new state."""
        h, c, n, m = state
        gates = projected + self.recurrent_input(h)
        input_pre, forget_pre, candidate_pre, output_pre = gates.chunk(4, -1)
        forget_total = self.log_forget(forget_pre) + m  # log f_t + m_{t-1}
        # m_t = max(...); an empty memory (n = 0) starts from i~_t (module docstring)
        forget_wins = (forget_total >= input_pre) & (n != 0)
        m_new = torch.where(forget_wins, forget_total, input_pre)
        input_gate = torch.exp(input_pre - m_new)
        forget_gate = torch.exp((forget_total - m_new).clamp(max=0))
        c_new = forget_gate * c + input_gate * torch.tanh(candidate_pre)
        n_new = forget_gate * n + input_gate
        h_new = torch.sigmoid(output_pre) * c_new / n_new
        return h_new, SLSTMState(h_new, c_new, n_new, m_new)

    def fused_weights(self, batch_size: int) -> dict[str, Any]:
        """``recurrent``: ``weight_hh (k, 4d, d)``; ``sigmoid_forget``: whether the forget gate
        is the sigmoid one (``kernels/fused_slstm.py``). No regularization, so no masks."""
        return {"recurrent": self.weight_hh, "sigmoid_forget": self.forget_gate == "sigmoid"}

    def flatten_state(self, state: SLSTMState) -> Tensor:
        """``(N, 4H)`` with each head's ``(h, c, n, m)`` side by side: the Jacobian's blocks."""
        fields = torch.stack(tuple(state), -2)  # (N, 4, H)
        heads = fields.unflatten(-1, (self.num_heads, self.head_size))  # (N, 4, k, d)
        return heads.transpose(-3, -2).flatten(-3)

    def unflatten_state(self, flat: Tensor) -> SLSTMState:
        heads = flat.unflatten(-1, (self.num_heads, 4, self.head_size))  # (N, k, 4, d)
        return SLSTMState(*heads.transpose(-3, -2).flatten(-2).unbind(-2))

    def state_jacobian(self, projected: Tensor, state: SLSTMState) -> Tensor:
        """``(N, k, 4d, 4d)``: per head, d(h, c, n, m)_t / d(h, c, n, m)_{t-1}.

        Each quantity's row is built over the head's previous state from ``da`` (``a = log f_t
        + m_{t-1}``), ``db`` (``b = i~_t``) and ``dm = da`` or ``db`` on the winning side;
        ``df' = f' (da - dm)`` (zero where the min clamps), ``di' = i' (db - dm)``, then the
        product and quotient rules of ``c_t``, ``n_t`` and ``h_t``.
        """
        split = (self.num_heads, self.head_size)
        h, c, n, m = (field.unflatten(-1, split) for field in state)  # (N, k, d)
        gates = projected + self.recurrent_input(state.h)
        pre = gates.unflatten(-1, (4, *split)).unbind(-3)  # i~, f~, z~, o~: (N, k, d)
        input_pre, forget_pre, candidate_pre, output_pre = pre
        forget_total = self.log_forget(forget_pre) + m
        forget_wins = (forget_total >= input_pre) & (n != 0)
        m_new = torch.where(forget_wins, forget_total, input_pre)
        input_gate = torch.exp(input_pre - m_new)
        unclamped = forget_total - m_new <= 0
        forget_gate = torch.exp((forget_total - m_new).clamp(max=0))
        candidate, output = torch.tanh(candidate_pre), torch.sigmoid(output_pre)
        c_new = forget_gate * c + input_gate * candidate
        n_new = forget_gate * n + input_gate
        ratio = c_new / n_new

        shape = h.shape
        recurrent = self.weight_hh.unflatten(1, (4, self.head_size)).unbind(1)  # (k, d, d) each
        eye = torch.eye(self.head_size, dtype=h.dtype, device=h.device)
        d_log_forget = _placed(recurrent[1], 0, shape)
        if self.forget_gate == "sigmoid":  # d logsigmoid(x) / dx = 1 - sigmoid(x)
            d_log_forget = _scaled(1 - torch.sigmoid(forget_pre), d_log_forget)
        d_forget_total = d_log_forget + _placed(eye, 3, shape)
        d_input_pre = _placed(recurrent[0], 0, shape)
        d_m = torch.where(forget_wins.unsqueeze(-1), d_forget_total, d_input_pre)
        d_forget_gate = _scaled(forget_gate * unclamped, d_forget_total - d_m)
        d_input_gate = _scaled(input_gate, d_input_pre - d_m)
        d_candidate = _scaled(1 - candidate**2, _placed(recurrent[2], 0, shape))
        d_c = _scaled(c, d_forget_gate) + _scaled(forget_gate, _placed(eye, 1, shape))
        d_c = d_c + _scaled(candidate, d_input_gate) + _scaled(input_gate, d_candidate)
        d_n = _scaled(n, d_forget_gate) + _scaled(forget_gate, _placed(eye, 2, shape))
        d_n = d_n + d_input_gate
        d_output = _scaled(output * (1 - output), _placed(recurrent[3], 0, shape))
        d_h = _scaled(ratio, d_output) + _scaled(output / n_new, d_c - _scaled(ratio, d_n))
        blocks = torch.stack((d_h, d_c, d_n, d_m), -3)  # (N, k, 4, d, 4d)
        return blocks.flatten(-3, -2)

    def extra_repr(self) -> str:
        options = [super().extra_repr()]
        if not self.bias:
            options.append("bias=False")
        if self.num_heads != 1:
            options.append(f"num_heads={self.num_heads}")
        if self.forget_gate != "exponential":
            options.append(f"forget_gate={self.forget_gate!r}")
        return ", ".join(options)
