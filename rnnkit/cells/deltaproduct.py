"""DeltaProduct: several delta-rule writes per token, a product of Householder transitions.

Siems, Carstensen, Zela, Hutter, Pontil, Grazzi 2025, "DeltaProduct: Improving State-Tracking in
Linear RNNs via Householder Products", https://arxiv.org/abs/2502.10297 (Section 3; conventions
as the authors' code, ``fla/layers/gated_deltaproduct.py`` in flash-linear-attention). Per head,
with DeltaNet's feature map (``rnnkit.cells.deltanet``) and ``n_h = num_householder``: one query
per token and ``n_h`` keys, values and rates,

    q_t = L2norm(phi(W_q x_t + b_q)),   k_{t,j} = L2norm(phi(W_{k,j} x_t + b_{k,j}))
    v_{t,j} = W_{v,j} x_t + b_{v,j},    beta_{t,j} = sigmoid(w_{beta,j}^T x_t + b_{beta,j})
    S_{t,0} = alpha_t S_{t-1}                            (alpha_t = 1 without the gate)
    S_{t,j} = S_{t,j-1} (I - beta_{t,j} k_{t,j} k_{t,j}^T) + beta_{t,j} v_{t,j} k_{t,j}^T
    S_t = S_{t,n_h},   o_t = S_t q_t,   y_t = W_O o_t + b_O   (y_t = o_t without projection)

so the transition of a token is ``alpha_t prod_j (I - beta_{t,j} k_{t,j} k_{t,j}^T)``: a product
of ``n_h`` generalized Householder matrices, which can rotate the memory (two reflections make
a rotation) where DeltaNet's single factor can only shrink it along one direction. With ``gate``
``alpha_t`` is Gated DeltaNet's (``rnnkit.cells.gated_deltanet``, same parameters); with
``allow_negative_eigenvalues`` every ``beta_{t,j} = 2 sigmoid(.)`` in ``(0, 2)``, as the paper's
experiments use it. ``n_h = 1`` is DeltaNet (Gated DeltaNet with the gate) exactly, with the
same parameters: ``weight_ih`` rows are (q, k_1..k_nh, v_1..v_nh, beta_1..beta_nh[, a]).

The state is DeltaNet's, ``S^T`` per head. The scan strategy runs the ``"delta"`` linear form
over a sequence ``n_h`` times longer (``virtual_steps = n_h``): token ``t``'s j-th write is step
``t * n_h + j - 1``, the gate's decay sits on its first write, the query on its last (the other
writes' outputs are never read), as the reference code interleaves them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import check_positive_int
from rnnkit.cells.deltanet import DeltaNetCell, delta_write
from rnnkit.cells.gated_deltanet import decay_of, reset_decay
from rnnkit.cells.gla import MatrixState


class DeltaProductCell(DeltaNetCell):
    """DeltaProduct: ``weight_ih`` rows are (q, k_1..k_nh, v_1..v_nh, beta_1..beta_nh) and,
    with ``gate``, Gated DeltaNet's a with per head ``decay_log_rate`` and ``decay_bias``."""

    decay_log_rate: nn.Parameter
    decay_bias: nn.Parameter

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
        num_householder: int = 2,
        gate: bool = False,
    ) -> None:
        check_positive_int("num_householder", num_householder)
        # read by write_sizes and gate_sizes while DeltaNetCell.__init__ builds the parameters
        self.num_householder = num_householder
        self.gate = gate
        super().__init__(
            input_size,
            hidden_size,
            bias,
            num_heads=num_heads,
            key_size=key_size,
            feature_map=feature_map,
            output_projection=output_projection,
            allow_negative_eigenvalues=allow_negative_eigenvalues,
        )
        self.virtual_steps = num_householder

    def write_sizes(self) -> list[int]:
        """Rows for q, then ``n_h`` times as many rows for k, v and beta as DeltaNet's."""
        writes = self.num_householder
        sizes = (self.key_size, self.hidden_size, self.num_heads)  # k, v, beta
        return [self.key_size, *(writes * size for size in sizes)]

    def gate_sizes(self) -> list[int]:
        return [self.num_heads] if self.gate else []

    def add_gate_parameters(self) -> None:
        if self.gate:
            self.decay_log_rate = nn.Parameter(torch.empty(self.num_heads))
            self.decay_bias = nn.Parameter(torch.empty(self.num_heads))

    def reset_parameters(self) -> None:
        """DeltaNet's; the gate, if any, as Gated DeltaNet's."""
        super().reset_parameters()
        if self.gate:
            reset_decay(self.decay_log_rate, self.decay_bias)

    def log_decay(self, projected: Tensor) -> Tensor | None:
        """Gated DeltaNet's ``log alpha_t (..., heads)`` with ``gate``, else None."""
        if not self.gate:
            return None
        gate = projected[..., sum(self.sizes[:4]) :]
        return decay_of(gate, self.decay_log_rate, self.decay_bias)

    def householder_terms(self, projected: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``q (..., heads, d_k)``, ``k (..., n_h, heads, d_k)``, ``v (..., n_h, heads, d_v)``,
        ``beta (..., n_h, heads)`` from ``projected (..., P)``."""
        query, key, value, rate = projected.split(self.sizes, -1)[:4]
        writes, heads = self.num_householder, self.num_heads
        query = self.features(query.unflatten(-1, (heads, -1)))
        key = self.features(key.unflatten(-1, (writes, heads, -1)))
        value = value.unflatten(-1, (writes, heads, -1))
        return query, key, value, self.write_rates(rate.unflatten(-1, (writes, heads)))

    def recur(self, projected: Tensor, state: MatrixState) -> tuple[Tensor, MatrixState]:
        """``projected (B, P)``, state ``(memory,)`` -> ``y_t (B, H)``, new state."""
        query, keys, values, rates = self.householder_terms(projected)
        memory = self.matrix_initial(state)  # S^T: (B, heads, d_k, d_v)
        log_decay = self.log_decay(projected)  # (B, heads) or None
        if log_decay is not None:
            memory = log_decay.exp()[..., None, None] * memory  # S_{t,0} = alpha_t S_{t-1}
        for key, value, rate in zip(keys.unbind(1), values.unbind(1), rates.unbind(1), strict=True):
            memory = delta_write(memory, key, value, rate)  # S_{t,j}
        attended = torch.einsum("bhkv,bhk->bhv", memory, query).flatten(1)  # (B, H)
        return self.read_out(attended), MatrixState(memory.flatten(1))

    def delta_terms(
        self, projected: Tensor, state: MatrixState, active: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """Over ``T * n_h`` writes: ``q, k (B, heads, T * n_h, d_k)`` (q zero but at each token's
        last write), ``v (B, heads, T * n_h, d_v)``, ``beta (B, heads, T * n_h)`` and
        ``log_decay (B, heads, T * n_h)`` (zero but at each token's first write) or None."""
        query, key, value, rate = self.householder_terms(projected)  # (B, T, [n_h,] heads, .)
        before = self.num_householder - 1
        key, value = (tensor.permute(0, 3, 1, 2, 4).flatten(2, 3) for tensor in (key, value))
        rate = rate.permute(0, 3, 1, 2).flatten(2)
        # (B, heads, T, 1, d_k) -> zeros before each token's query: (B, heads, T * n_h, d_k)
        query = functional.pad(query.transpose(1, 2).unsqueeze(3), (0, 0, before, 0)).flatten(2, 3)
        log_decay = self.log_decay(projected)  # (B, T, heads) or None
        if log_decay is not None:
            log_decay = functional.pad(log_decay.transpose(1, 2).unsqueeze(-1), (0, before))
            log_decay = log_decay.flatten(2)
        return query, key, value, rate, log_decay

    def extra_repr(self) -> str:
        options = [super().extra_repr(), f"num_householder={self.num_householder}"]
        return ", ".join(options + (["gate=True"] if self.gate else []))
