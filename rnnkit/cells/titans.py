"""Titans: a neural long-term memory that learns at test time, by gradient descent with
momentum and weight decay on an associative loss.

Behrouz, Zhong, Mirrokni 2025, "Titans: Learning to Memorize at Test Time",
https://arxiv.org/abs/2501.00663 (Sections 3.1, 3.2 and 4.4); the Huber attentional bias from
Behrouz, Razaviyayn, Zhong, Mirrokni 2025, "It's All Connected" (Miras),
https://arxiv.org/abs/2504.13173 (Section 5.1). Per head, with a memory ``M`` of
``memory_depth`` layers (``titans_memory.py``: a matrix, or ``k + W_2 act(W_1 k)``):

    q_t = L2norm(silu(W_q x_t + b_q)),  k_t = L2norm(silu(W_k x_t + b_k))
    v_t = silu(W_v x_t + b_v)
    eta_t, theta_t, alpha_t = sigmoid(w_eta^T x_t + b_eta), sigmoid(...), sigmoid(...)  (per head)
    l(M; k, v) = || M(k) - v ||^2                         (or the Huber loss, Miras)
    S_t = eta_t S_{t-1} - theta_t grad_M l(M_{c(t)}; k_t, v_t)      (momentum: the "surprise")
    M_t = (1 - alpha_t) M_{t-1} + S_t                               (weight decay: forgetting)
    o_t = M_t(q_t)                                    (heads concatenated: o_t of size H)
    y_t = W_O o_t + b_O                               (y_t = o_t with output_projection=False)

``M_{c(t)}`` is the memory at the start of the chunk of ``chunk_size`` steps holding step t, as
in the paper's parallel training (Section 3.2): every gradient of a chunk is taken at the same
memory. ``chunk_size=1`` is plain online gradient descent. With ``max_gradient_norm = c``
each head's gradient is scaled by ``min(1, c / ||grad||)`` (titans-pytorch's ``max_grad_norm``
soft-clamps each weight matrix's norm instead), which keeps the memory bounded (``|S| <= c
max theta / (1 - max eta)``, ``|M| <= |S| / min alpha`` after the start): without it a
depth-2 memory started from a large random state can diverge (gradient descent on an MLP whose
curvature grows with its weights). The gradient is written in closed form
(``titans_memory.memory_gradient``), so ``recur`` is ordinary tensor algebra that the outer
loop differentiates; the initial memory ``M_0`` is a parameter the outer loop learns.

State (``TitansState``, each memory field ``(B, heads * W)``, head by head): ``memory`` holds
``M_t - M_0``, ``momentum`` holds ``S_t``, ``chunk_memory`` holds ``M_{c} - M_0`` of the chunk
in progress and ``chunk_position (B, 1)`` the steps already taken in it (a step with
``floor(chunk_position)`` a multiple of ``chunk_size`` starts a new chunk). The memories are
kept relative to ``M_0`` so that the zero state, the one every strategy restarts from at a
reset, is the fresh memory ``M_0`` at a chunk boundary; ``initial_state`` stays the zero state.
The scan strategy runs the cell chunk by chunk (the ``"chunkwise"`` form, ``chunk_*`` hooks;
``rnnkit/strategies/chunkwise.py``): each gradient is an outer product per weight matrix
(``gradient_factors``), so a chunk's reads are masked matrix products (the dual form) and no
step's memory is formed. Initialization: Xavier-uniform projections (gain
2^-2.5, as deltanet.py), gate biases chosen here (not from the paper; ``GATE_BIASES``),
memory weights N(0, 1 / fan_in).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int
from rnnkit.cells.gla import REFERENCE_GAIN, head_size
from rnnkit.cells.titans_memory import (
    ACTIVATIONS,
    ATTENTIONAL_BIASES,
    MemoryLayout,
    apply_memory,
    gradient_factors,
    memory_forward,
    memory_gradient,
)

# Logits of eta (momentum 0.5), theta (learning rate 0.018), alpha (forgetting 0.047): with a
# larger rate or momentum a depth-2 memory from a random state diverged within 200 steps.
GATE_BIASES = (0.0, -4.0, -3.0)


class TitansState(NamedTuple):
    """Memories relative to ``M_0`` ``(B, heads * W)``, momentum, and the chunk in progress."""

    memory: Tensor
    momentum: Tensor
    chunk_memory: Tensor
    chunk_position: Tensor  # (B, 1)


class TitansCell(Cell):
    """Titans' neural memory: ``weight_ih`` rows are (q, k, v, eta, theta, alpha)."""

    linear_form = "chunkwise"  # not linear in the state: see base.py and strategies/scan.py
    state_type = TitansState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        num_heads: int = 1,
        memory_depth: int = 2,
        memory_hidden_factor: int = 2,
        memory_activation: str = "silu",
        chunk_size: int = 16,
        attentional_bias: str = "l2",
        huber_delta: float = 1.0,
        max_gradient_norm: float | None = None,
        output_projection: bool = True,
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_heads", num_heads)
        check_positive_int("memory_hidden_factor", memory_hidden_factor)
        check_positive_int("chunk_size", chunk_size)
        if memory_depth not in (1, 2):
            raise ValueError(f"memory_depth must be 1 or 2, got {memory_depth!r}")
        if memory_activation not in ACTIVATIONS:
            raise ValueError(
                f"memory_activation must be one of {ACTIVATIONS}, got {memory_activation!r}"
            )
        if attentional_bias not in ATTENTIONAL_BIASES:
            raise ValueError(
                f"attentional_bias must be one of {ATTENTIONAL_BIASES}, got {attentional_bias!r}"
            )
        if not huber_delta > 0:
            raise ValueError(f"huber_delta must be positive, got {huber_delta!r}")
        if max_gradient_norm is not None and not max_gradient_norm > 0:
            raise ValueError(f"max_gradient_norm must be positive, got {max_gradient_norm!r}")
        self.num_heads = num_heads
        size = head_size("hidden_size", hidden_size, num_heads)
        self.layout = MemoryLayout(
            memory_depth, size, memory_hidden_factor * size, memory_activation
        )
        self.chunk_size = chunk_size
        self.attentional_bias = attentional_bias
        self.huber_delta = float(huber_delta)
        self.max_gradient_norm = max_gradient_norm
        self.output_projection = output_projection
        self.bias = bias
        self.sizes = [hidden_size] * 3 + [num_heads] * 3
        self.weight_ih = nn.Parameter(torch.empty(sum(self.sizes), input_size))
        self.bias_ih = nn.Parameter(torch.empty(sum(self.sizes))) if bias else None
        self.initial_memory = nn.Parameter(torch.empty(num_heads, self.layout.numel))
        if output_projection:
            self.weight_out = nn.Parameter(torch.empty(hidden_size, hidden_size))
            self.bias_out = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform projections, the gate biases of ``GATE_BIASES``, N(0, 1 / fan_in)
        memory weights."""
        for block in self.weight_ih.split(self.sizes):
            nn.init.xavier_uniform_(block, gain=REFERENCE_GAIN)
        if self.bias_ih is not None:
            blocks = self.bias_ih.data.split(self.sizes)
            for block, value in zip(blocks, (0.0, 0.0, 0.0, *GATE_BIASES), strict=True):
                block.fill_(value)
        if self.output_projection:
            nn.init.xavier_uniform_(self.weight_out, gain=REFERENCE_GAIN)
            if self.bias_out is not None:
                nn.init.zeros_(self.bias_out)
        sizes = [rows * columns for rows, columns in self.layout.shapes]
        for block, (_, columns) in zip(
            self.initial_memory.data.split(sizes, -1), self.layout.shapes, strict=True
        ):
            block.normal_(0.0, columns**-0.5)

    def state_sizes(self) -> tuple[int, ...]:
        memory = self.num_heads * self.layout.numel
        return (memory, memory, memory, 1)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., P)``: q, k, v and the eta, theta, alpha logits side by side."""
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def terms(self, projected: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``q, k, v (..., heads, d)`` and the eta, theta, alpha logits ``(..., heads)``."""
        query, key, value, momentum, rate, forget = projected.split(self.sizes, -1)
        query, key, value = (
            functional.silu(tensor).unflatten(-1, (self.num_heads, -1))
            for tensor in (query, key, value)
        )
        query = functional.normalize(query, dim=-1, eps=1e-6)
        key = functional.normalize(key, dim=-1, eps=1e-6)
        return query, key, value, momentum, rate, forget

    def gradient(self, reference: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """``grad_M l(M; k, v)`` at ``reference (..., W)``, keys and values ``(..., d)``,
        scaled down to ``max_gradient_norm`` per head where it is longer."""
        gradient = memory_gradient(
            reference, key, value, self.layout, self.attentional_bias, self.huber_delta
        )
        if self.max_gradient_norm is None:
            return gradient
        norm = torch.linalg.vector_norm(gradient, dim=-1, keepdim=True)
        return gradient * (self.max_gradient_norm / norm.clamp(min=self.max_gradient_norm))

    def read_out(self, memory: Tensor, query: Tensor) -> Tensor:
        """``y`` from the memories ``(..., heads, W)`` read at ``q (..., heads, d)``."""
        return self.project_output(apply_memory(memory, query, self.layout).flatten(-2))

    def project_output(self, attended: Tensor) -> Tensor:
        """``y = W_O o + b_O`` from the concatenated heads ``o (..., H)`` (``o`` itself with
        ``output_projection=False``)."""
        if not self.output_projection:
            return attended
        return functional.linear(attended, self.weight_out, self.bias_out)

    def recur(self, projected: Tensor, state: TitansState) -> tuple[Tensor, TitansState]:
        """``projected (B, P)``, state -> ``y_t (B, H)``, new state (module docstring)."""
        query, key, value, momentum_logit, rate_logit, forget_logit = self.terms(projected)
        memory, momentum, reference, position = self.chunk_initial(state)  # (B, heads, W)
        starts = (position == 0).unsqueeze(-1)  # (B, 1, 1): a new chunk begins at this step
        reference = torch.where(starts, memory, reference)  # M_{c(t)}
        gradient = self.gradient(reference, key, value)  # (B, heads, W)
        momentum = torch.sigmoid(momentum_logit).unsqueeze(-1) * momentum
        momentum = momentum - torch.sigmoid(rate_logit).unsqueeze(-1) * gradient
        memory = torch.sigmoid(-forget_logit).unsqueeze(-1) * memory + momentum
        new_state = self.chunk_final(memory, momentum, reference, position + 1)
        return self.read_out(memory, query), new_state

    def chunk_initial(self, state: TitansState) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``M_{t-1}``, ``S_{t-1}``, ``M_c`` as ``(B, heads, W)`` (absolute, not relative to
        ``M_0``) and the steps taken in the chunk in progress, ``(B, 1)`` in ``[0, chunk_size)``."""
        memory, momentum, reference = (
            field.unflatten(-1, (self.num_heads, -1)) for field in state[:3]
        )
        position = torch.remainder(torch.floor(state.chunk_position), self.chunk_size)
        initial = self.initial_memory
        return initial + memory, momentum, initial + reference, position

    def chunk_final(
        self, memory: Tensor, momentum: Tensor, reference: Tensor, position: Tensor
    ) -> TitansState:
        """The state from absolute ``(B, heads, W)`` memories and steps taken ``(B, 1)``."""
        initial = self.initial_memory
        return TitansState(
            (memory - initial).flatten(1),
            momentum.flatten(1),
            (reference - initial).flatten(1),
            torch.remainder(position, self.chunk_size),
        )

    def chunk_terms(self, projected: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``log eta``, ``log (1 - alpha)`` and ``theta``, each ``(B, T, heads)``."""
        momentum, rate, forget = projected.split(self.sizes, -1)[3:]
        return functional.logsigmoid(momentum), functional.logsigmoid(-forget), torch.sigmoid(rate)

    def chunk_shapes(self) -> list[tuple[int, int]]:
        """``(rows, columns)`` of each weight matrix of a head's memory, in the flattened order."""
        return self.layout.shapes

    def chunk_gradient_factors(
        self, reference: list[Tensor], projected: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """Every step's gradient at the chunk-start memory, given as its weight matrices
        ``(B, heads, rows, columns)``, as one outer product per matrix: ``projected (B, C, P)``
        -> ``[(left (B, heads, C, rows), right (B, heads, C, columns))]``, scaled as
        ``gradient`` scales."""
        _, key, value = (term.transpose(1, 2) for term in self.terms(projected)[:3])
        factors = gradient_factors(
            lambda index, vectors: vectors @ reference[index].transpose(-1, -2),
            lambda index, vectors: vectors @ reference[index],
            key,  # (B, heads, C, d)
            value,
            self.layout,
            self.attentional_bias,
            self.huber_delta,
        )
        if self.max_gradient_norm is None:
            return factors
        # ||l r^T||_F = ||l|| ||r||; the gradient's norm over all its matrices
        norms = [
            torch.linalg.vector_norm(left, dim=-1) * torch.linalg.vector_norm(right, dim=-1)
            for left, right in factors
        ]
        norm = torch.linalg.vector_norm(torch.stack(norms, -1), dim=-1, keepdim=True)
        scale = self.max_gradient_norm / norm.clamp(min=self.max_gradient_norm)
        return [(left * scale, right) for left, right in factors]

    def chunk_read(self, multiply: Callable[[int, Tensor], Tensor], projected: Tensor) -> Tensor:
        """``y (B, C, O)`` from ``multiply(i, x)``, weight matrix i of every step's memory
        times ``x (B, heads, C, columns)``."""
        query = self.terms(projected)[0].transpose(1, 2)  # (B, heads, C, d)
        attended = memory_forward(multiply, query, self.layout)  # (B, heads, C, d)
        return self.project_output(attended.transpose(1, 2).flatten(-2))

    def extra_repr(self) -> str:
        options = [
            super().extra_repr(),
            f"num_heads={self.num_heads}",
            f"memory_depth={self.layout.depth}",
            f"chunk_size={self.chunk_size}",
        ]
        if self.layout.depth == 2:
            options.append(f"memory_hidden={self.layout.hidden}")
            options.append(f"memory_activation={self.layout.activation!r}")
        if self.max_gradient_norm is not None:
            options.append(f"max_gradient_norm={self.max_gradient_norm}")
        if self.attentional_bias != "l2":
            options.append(f"attentional_bias={self.attentional_bias!r}, delta={self.huber_delta}")
        options += [] if self.output_projection else ["output_projection=False"]
        return ", ".join(options + ([] if self.bias else ["bias=False"]))
