"""DeltaNet: a matrix memory written with the delta rule.

Schlag, Irie, Schmidhuber 2021, "Linear Transformers Are Secretly Fast Weight Programmers",
https://arxiv.org/abs/2102.11174 (Section 4.2); with the L2-normalized, SiLU feature map of
Yang, Wang, Zhang, Shen, Kim 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length", https://arxiv.org/abs/2406.06484 (Sections 2.2 and 4). Per head:

    q_t = L2norm(phi(W_q x_t + b_q)),   k_t = L2norm(phi(W_k x_t + b_k))   (phi: SiLU or none)
    v_t = W_v x_t + b_v,                beta_t = sigmoid(w_beta^T x_t + b_beta)   (one per head)
    S_t = S_{t-1} (I - beta_t k_t k_t^T) + beta_t v_t k_t^T          (S_t: (d_v, d_k))
    o_t = S_t q_t                                     (heads concatenated: o_t of size H)
    y_t = W_O o_t + b_O                               (y_t = o_t with output_projection=False)

``S_t q`` reads the value stored under key ``q``; each step moves the value stored under
``k_t`` a fraction ``beta_t`` of the way to ``v_t``. With unit keys and ``beta_t in (0, 1)``
every ``I - beta_t k_t k_t^T`` is a contraction, so the memory stays bounded.

With ``allow_negative_eigenvalues=True`` (Grazzi, Siems, Zela, Franke, Hutter, Pontil 2025,
"Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues",
https://arxiv.org/abs/2411.12537, Section 4) ``beta_t = 2 sigmoid(w_beta^T x_t + b_beta)`` in
``(0, 2)``: the eigenvalue ``1 - beta_t`` of the transition along ``k_t`` then lies in ``(-1,
1)``, so a step can reflect (``beta_t = 2``: a Householder reflection) and the memory still stays
bounded. With ``beta_t in (0, 1)`` every eigenvalue is non-negative, and the paper shows that
a finite-precision linear RNN with only such eigenvalues cannot solve parity.

The state ``memory (B, heads * d_k * d_v)`` holds ``S^T`` per head, row-major: the ``(d_k,
d_v)`` layout of ``rnnkit.strategies.kernels.delta``, where the rule reads ``S_t = (I - beta_t
k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``, ``o_t = S_t^T q_t``. The ``"delta"`` linear form of
the scan strategy runs it in chunks (WY representation, UT transform). Key size ``d_k = d_v``
by default. Initialization as the authors' reference code (flash-linear-attention):
Xavier-uniform weights with gain 2^-2.5, zero biases.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int
from rnnkit.cells.gla import REFERENCE_GAIN, MatrixState, head_size, heads_last

FEATURE_MAPS = ("silu", "identity")


class DeltaNetCell(Cell):
    """DeltaNet: ``weight_ih`` rows are (q, k, v, beta)."""

    is_linear = True
    linear_form = "delta"
    state_type = MatrixState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        num_heads: int = 1,
        key_size: int | None = None,
        feature_map: str = "silu",
        output_projection: bool = True,
        allow_negative_eigenvalues: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_heads", num_heads)
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
        self.num_heads = num_heads
        self.value_head_size = head_size("hidden_size", hidden_size, num_heads)
        self.key_size = hidden_size if key_size is None else key_size
        self.key_head_size = head_size("key_size", self.key_size, num_heads)
        self.feature_map = feature_map
        self.output_projection = output_projection
        self.allow_negative_eigenvalues = allow_negative_eigenvalues
        self.bias = bias
        self.sizes = [*self.write_sizes(), *self.gate_sizes()]
        self.weight_ih = nn.Parameter(torch.empty(sum(self.sizes), input_size))
        self.bias_ih = nn.Parameter(torch.empty(sum(self.sizes))) if bias else None
        if output_projection:
            self.weight_out = nn.Parameter(torch.empty(hidden_size, hidden_size))
            self.bias_out = nn.Parameter(torch.empty(hidden_size)) if bias else None
        self.add_gate_parameters()
        self.reset_parameters()

    def write_sizes(self) -> list[int]:
        """Rows of ``weight_ih`` for (q, k, v, beta); a DeltaProduct has several k, v, beta."""
        return [self.key_size, self.key_size, self.hidden_size, self.num_heads]

    def gate_sizes(self) -> list[int]:
        """Rows of ``weight_ih`` after (q, k, v, beta) for a subclass's gates (none here)."""
        return []

    def add_gate_parameters(self) -> None:
        """Create a subclass's gate parameters (none here), before ``reset_parameters``."""

    def log_decay(self, projected: Tensor) -> Tensor | None:
        """``log alpha (..., heads)`` of a gated variant, or None: DeltaNet does not decay."""
        return None

    def reset_parameters(self) -> None:
        """Xavier-uniform weights (gain 2^-2.5) per projection, zero biases."""
        for block in self.weight_ih.split(self.sizes):
            nn.init.xavier_uniform_(block, gain=REFERENCE_GAIN)
        for name, parameter in self.named_parameters():
            if name == "weight_out":
                nn.init.xavier_uniform_(parameter, gain=REFERENCE_GAIN)
            elif name.startswith("bias"):
                nn.init.zeros_(parameter)

    def state_sizes(self) -> tuple[int, ...]:
        return (self.num_heads * self.key_head_size * self.value_head_size,)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., P)``: q, k, v and beta pre-activations side by side."""
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def features(self, values: Tensor) -> Tensor:
        """``L2norm(phi(values))`` per head: ``(..., heads, d_k)``."""
        if self.feature_map == "silu":
            values = functional.silu(values)
        return functional.normalize(values, dim=-1, eps=1e-6)

    def terms(self, projected: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``q, k (..., heads, d_k)``, ``v (..., heads, d_v)``, ``beta (..., heads)``."""
        query, key, value, rate = projected.split(self.sizes, -1)[:4]
        query, key, value = (
            tensor.unflatten(-1, (self.num_heads, -1)) for tensor in (query, key, value)
        )
        return self.features(query), self.features(key), value, self.write_rates(rate)

    def write_rates(self, rate: Tensor) -> Tensor:
        """``beta = sigmoid(rate)``, or ``2 sigmoid(rate)`` with negative eigenvalues allowed."""
        beta = torch.sigmoid(rate)
        return 2 * beta if self.allow_negative_eigenvalues else beta

    def read_out(self, attended: Tensor) -> Tensor:
        """``y`` from the heads' outputs ``attended (..., H)``."""
        if not self.output_projection:
            return attended
        return functional.linear(attended, self.weight_out, self.bias_out)

    def recur(self, projected: Tensor, state: MatrixState) -> tuple[Tensor, MatrixState]:
        """``projected (B, P)``, state ``(memory,)`` -> ``y_t (B, H)``, new state."""
        query, key, value, rate = self.terms(projected)  # (B, heads, d) and (B, heads)
        memory = self.matrix_initial(state)  # S^T: (B, heads, d_k, d_v)
        log_decay = self.log_decay(projected)  # (B, heads) or None
        if log_decay is not None:
            memory = log_decay.exp()[..., None, None] * memory  # alpha_t S_{t-1}
        memory = delta_write(memory, key, value, rate)
        attended = torch.einsum("bhkv,bhk->bhv", memory, query).flatten(1)  # (B, H)
        return self.read_out(attended), MatrixState(memory.flatten(1))

    def delta_terms(
        self, projected: Tensor, state: MatrixState, active: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """``q, k (B, heads, T, d_k)``, ``v (B, heads, T, d_v)``, ``beta (B, heads, T)``, and
        ``log_decay (B, heads, T)`` or None."""
        query, key, value, rate = self.terms(projected)  # (B, T, heads, .)
        query, key, value = (tensor.transpose(1, 2) for tensor in (query, key, value))
        log_decay = self.log_decay(projected)
        log_decay = None if log_decay is None else log_decay.transpose(1, 2)
        return query, key, value, rate.transpose(1, 2), log_decay

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
        return self.read_out(heads_last(outputs)), MatrixState(final.flatten(1))

    def extra_repr(self) -> str:
        options = [
            super().extra_repr(),
            f"num_heads={self.num_heads}",
            f"key_size={self.key_size}",
            f"feature_map={self.feature_map!r}",
        ]
        options += [] if self.output_projection else ["output_projection=False"]
        if self.allow_negative_eigenvalues:
            options.append("allow_negative_eigenvalues=True")
        return ", ".join(options + ([] if self.bias else ["bias=False"]))


def delta_write(memory: Tensor, key: Tensor, value: Tensor, rate: Tensor) -> Tensor:
    """One delta-rule write ``S (I - beta k k^T) + beta v k^T`` on ``memory = S^T (B, heads, d_k,
    d_v)``, with ``key (B, heads, d_k)``, ``value (B, heads, d_v)``, ``rate = beta (B, heads)``."""
    retrieved = torch.einsum("bhkv,bhk->bhv", memory, key)  # S k
    correction = rate.unsqueeze(-1) * (value - retrieved)
    return memory + key.unsqueeze(-1) * correction.unsqueeze(-2)
