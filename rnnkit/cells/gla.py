"""Gated linear attention (GLA): a matrix memory per head with a data-dependent decay per key
dimension.

Yang, Wang, Shen, Panda, Kim 2023, "Gated Linear Attention Transformers with Hardware-Efficient
Training", https://arxiv.org/abs/2312.06635 (Section 4.1). Per head, with ``S_t (d_k, d_v)``:

    q_t = W_q x_t + b_q,   k_t = W_k x_t + b_k,   v_t = W_v x_t + b_v
    alpha_t = sigmoid(W_alpha2 W_alpha1 x_t + b_alpha) ** (1 / tau)      (rank 16, tau = 16)
    S_t = diag(alpha_t) S_{t-1} + k_t v_t^T
    o_t = S_t^T q_t                                  (heads concatenated: o_t of size H)
    y_t = W_O (swish(W_r x_t + b_r) * LayerNorm_per_head(o_t)) + b_O

and ``y_t = o_t`` with ``output_projection=False``. The low-rank gate and the temperature
``tau`` keep the forgetting slow: ``log alpha_t = logsigmoid(.) / tau``, computed in log space.
Key size ``d_k = d_v / 2`` per head by default, as in the paper. Initialization as in the
authors' reference code (flash-linear-attention): Xavier-uniform weights with gain 2^-2.5,
zero biases, LayerNorm gains 1.

The state ``memory (B, heads * d_k * d_v)`` is ``S`` flattened head by head, row-major; the
``"matrix"`` linear form of the scan strategy runs the cell in chunks. This module also holds
what the matrix-state cells share (``MatrixState``, ``heads_first``, ``head_size``).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int

REFERENCE_GAIN = 2**-2.5


class MatrixState(NamedTuple):
    """A matrix memory ``(d_k, d_v)`` per head, flattened: ``memory (B, heads * d_k * d_v)``."""

    memory: Tensor


def head_size(name: str, size: int, num_heads: int) -> int:
    """``size // num_heads``; a ValueError naming ``name`` unless it divides evenly."""
    check_positive_int(name, size)
    if size % num_heads:
        raise ValueError(f"{name} ({size}) must be divisible by num_heads ({num_heads})")
    return size // num_heads


def heads_first(values: Tensor, num_heads: int) -> Tensor:
    """``(B, T, heads * d) -> (B, heads, T, d)``."""
    return values.unflatten(-1, (num_heads, -1)).transpose(1, 2)


def heads_last(values: Tensor) -> Tensor:
    """``(B, heads, T, d) -> (B, T, heads * d)``."""
    return values.transpose(1, 2).flatten(2)


class GatedLinearAttentionCell(Cell):
    """GLA: ``weight_ih`` rows are (q, k, v, r); the gate weight is ``up @ down`` (low rank)."""

    is_linear = True
    linear_form = "matrix"
    state_type = MatrixState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        num_heads: int = 1,
        key_size: int | None = None,
        gate_rank: int = 16,
        gate_temperature: float = 16.0,
        output_projection: bool = True,
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_heads", num_heads)
        check_positive_int("gate_rank", gate_rank)
        if not gate_temperature > 0:
            raise ValueError(f"gate_temperature must be positive, got {gate_temperature!r}")
        self.num_heads = num_heads
        self.value_head_size = head_size("hidden_size", hidden_size, num_heads)
        if key_size is None:
            key_size = num_heads * max(1, self.value_head_size // 2)
        self.key_size = key_size
        self.key_head_size = head_size("key_size", self.key_size, num_heads)
        self.gate_temperature = float(gate_temperature)
        self.output_projection = output_projection
        self.bias = bias
        self.sizes = [self.key_size, self.key_size, hidden_size]  # q, k, v rows of weight_ih
        self.sizes += [hidden_size] if output_projection else []  # r
        self.weight_ih = nn.Parameter(torch.empty(sum(self.sizes), input_size))
        self.bias_ih = nn.Parameter(torch.empty(sum(self.sizes))) if bias else None
        self.weight_gate_down = nn.Parameter(torch.empty(gate_rank, input_size))
        self.weight_gate_up = nn.Parameter(torch.empty(self.key_size, gate_rank))
        self.bias_gate = nn.Parameter(torch.empty(self.key_size)) if bias else None
        if output_projection:
            self.norm_weight = nn.Parameter(torch.empty(hidden_size))
            self.norm_bias = nn.Parameter(torch.empty(hidden_size))
            self.weight_out = nn.Parameter(torch.empty(hidden_size, hidden_size))
            self.bias_out = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights (gain 2^-2.5) per projection, zero biases, unit norm gains."""
        for block in self.weight_ih.split(self.sizes):
            nn.init.xavier_uniform_(block, gain=REFERENCE_GAIN)
        for name, parameter in self.named_parameters():
            if name in ("weight_gate_down", "weight_gate_up", "weight_out"):
                nn.init.xavier_uniform_(parameter, gain=REFERENCE_GAIN)
            elif name == "norm_weight":
                nn.init.ones_(parameter)
            elif name.startswith(("bias", "norm_bias")):
                nn.init.zeros_(parameter)

    def state_sizes(self) -> tuple[int, ...]:
        return (self.num_heads * self.key_head_size * self.value_head_size,)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., P)``: q, k, v, (r) and the gate pre-activation, side by side."""
        gate = functional.linear(inputs, self.weight_gate_down)
        gate = functional.linear(gate, self.weight_gate_up, self.bias_gate)
        return torch.cat([functional.linear(inputs, self.weight_ih, self.bias_ih), gate], -1)

    def terms(self, projected: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``q, k (..., K)``, ``v (..., H)`` and ``log alpha (..., K)`` from ``(..., P)``."""
        query, key, value, *_, gate = projected.split([*self.sizes, self.key_size], -1)
        return query, key, value, functional.logsigmoid(gate) / self.gate_temperature

    def read_out(self, projected: Tensor, attended: Tensor) -> Tensor:
        """``y`` from the heads' outputs ``attended (..., H)`` (LayerNorm, swish gate, W_O)."""
        if not self.output_projection:
            return attended
        flat = attended.reshape(-1, self.hidden_size)
        normalized = functional.group_norm(flat, self.num_heads, self.norm_weight, self.norm_bias)
        gate = functional.silu(projected.split([*self.sizes, self.key_size], -1)[3])
        gated = gate * normalized.reshape(attended.shape)
        return functional.linear(gated, self.weight_out, self.bias_out)

    def recur(self, projected: Tensor, state: MatrixState) -> tuple[Tensor, MatrixState]:
        """``projected (B, P)``, state ``(memory (B, heads * d_k * d_v),)`` -> ``y_t (B, H)``."""
        query, key, value, log_decay = (
            tensor.unflatten(-1, (self.num_heads, -1)) for tensor in self.terms(projected)
        )  # (B, heads, d_k or d_v)
        memory = self.matrix_initial(state)  # (B, heads, d_k, d_v)
        memory = log_decay.exp().unsqueeze(-1) * memory + key.unsqueeze(-1) * value.unsqueeze(-2)
        attended = torch.einsum("bhkv,bhk->bhv", memory, query).flatten(1)  # (B, H)
        return self.read_out(projected, attended), MatrixState(memory.flatten(1))

    def matrix_terms(
        self, projected: Tensor, state: MatrixState, active: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``q, k, v, log alpha`` for all steps, each ``(B, heads, T, d)``."""
        query, key, value, log_decay = (
            heads_first(tensor, self.num_heads) for tensor in self.terms(projected)
        )
        return query, key, value, log_decay

    def matrix_initial(self, state: MatrixState) -> Tensor:
        """The memory as ``(B, heads, d_k, d_v)``."""
        return state.memory.unflatten(-1, (self.num_heads, self.key_head_size, -1))

    def matrix_readout(
        self,
        projected: Tensor,
        outputs: Tensor,
        final: Tensor,
        state: MatrixState,
        active: Tensor | None,
    ) -> tuple[Tensor, MatrixState]:
        """``y (B, T, H)`` from ``o (B, heads, T, d_v)``; the final memory, flattened."""
        return self.read_out(projected, heads_last(outputs)), MatrixState(final.flatten(1))

    def extra_repr(self) -> str:
        options = [
            super().extra_repr(),
            f"num_heads={self.num_heads}",
            f"key_size={self.key_size}",
            f"gate_temperature={self.gate_temperature}",
        ]
        options += [] if self.output_projection else ["output_projection=False"]
        return ", ".join(options + ([] if self.bias else ["bias=False"]))
