"""Gated DeltaNet: the delta rule with a data-dependent decay of the whole memory.

Yang, Kautz, Hatamizadeh 2024, "Gated Delta Networks: Improving Mamba2 with Delta Rule",
https://arxiv.org/abs/2412.06464 (eq. 10; the gate as in the authors' code, NVlabs/GatedDeltaNet
and flash-linear-attention). Per head, with q, k, v, beta and the read-out of
``rnnkit.cells.deltanet``:

    alpha_t = exp(-exp(a_log) * softplus(w_a^T x_t + b_a + a_bias))      (one per head, in (0, 1))
    S_t = alpha_t S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T        (S_t: (d_v, d_k))
    o_t = S_t q_t

The gate is Mamba2's: ``a_bias`` is the inverse softplus of a step drawn log-uniform in [0.001,
0.1] and ``exp(a_log)`` a rate drawn uniform in [1, 16], as the reference initializes its
``dt_bias`` and ``A_log`` (here ``decay_bias`` and ``decay_log_rate``). ``alpha = 1`` is DeltaNet;
``beta = 0`` is a gated linear attention with a scalar decay per head. The state and the
``"delta"`` linear form are DeltaNet's (the chunked form folds the decay into the UT transform,
``kernels/delta.py``). The reference model also has a short convolution on q, k, v and a gated
RMS norm on the output; this cell is the recurrence alone, as ``deltanet``. It takes
DeltaNet's options, ``allow_negative_eigenvalues`` among them (``beta_t`` in ``(0, 2)``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.deltanet import DeltaNetCell

RATE_RANGE = (1.0, 16.0)
STEP_RANGE = (0.001, 0.1)


class GatedDeltaNetCell(DeltaNetCell):
    """Gated DeltaNet: ``weight_ih`` rows are (q, k, v, beta, a); per head ``decay_log_rate``
    and ``decay_bias``."""

    decay_log_rate: nn.Parameter
    decay_bias: nn.Parameter

    def gate_sizes(self) -> list[int]:
        return [self.num_heads]

    def add_gate_parameters(self) -> None:
        self.decay_log_rate = nn.Parameter(torch.empty(self.num_heads))
        self.decay_bias = nn.Parameter(torch.empty(self.num_heads))

    def reset_parameters(self) -> None:
        """DeltaNet's, then the gate as the reference (``reset_decay``)."""
        super().reset_parameters()
        reset_decay(self.decay_log_rate, self.decay_bias)

    def log_decay(self, projected: Tensor) -> Tensor:
        """``log alpha_t (..., heads)`` from the gate rows after (q, k, v, beta)."""
        gate = projected[..., sum(self.sizes[:4]) :]
        return decay_of(gate, self.decay_log_rate, self.decay_bias)


def reset_decay(decay_log_rate: Tensor, decay_bias: Tensor) -> None:
    """The gate's parameters ``(heads,)`` as the reference draws them: ``exp(decay_log_rate) ~
    U(1, 16)`` and ``softplus(decay_bias) ~ exp(U(log 0.001, log 0.1))``."""
    heads = decay_log_rate.shape[0]
    with torch.no_grad():
        decay_log_rate.copy_(torch.empty(heads).uniform_(*RATE_RANGE).log())
        low, high = (math.log(value) for value in STEP_RANGE)
        step = torch.empty(heads).uniform_(low, high).exp()
        decay_bias.copy_(step + torch.log(-torch.expm1(-step)))  # inverse softplus


def decay_of(gate: Tensor, decay_log_rate: Tensor, decay_bias: Tensor) -> Tensor:
    """``log alpha = -exp(decay_log_rate) softplus(gate + decay_bias)``: ``(..., heads)``."""
    return -decay_log_rate.exp() * functional.softplus(gate + decay_bias)
