"""mLSTM: an LSTM with a matrix memory, exponential input gate and a normalizer.

Beck, Poeppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter, Hochreiter 2024,
"xLSTM: Extended Long Short-Term Memory", https://arxiv.org/abs/2405.04517 (Section 2.3 and
Appendix A.3). Per head, with memory ``C_t (d_v, d_k)`` and normalizer ``n_t (d_k)``:

    q_t = W_q x_t + b_q,   k_t = (W_k x_t + b_k) / sqrt(d_k),   v_t = W_v x_t + b_v
    log i_t = w_i^T x_t + b_i             (exponential input gate, one per head)
    log f_t = logsigmoid(w_f^T x_t + b_f) (or w_f^T x_t + b_f with forget_activation="exp")
    o_t = sigmoid(W_o x_t + b_o)
    C_t = f_t C_{t-1} + i_t v_t k_t^T,    n_t = f_t n_{t-1} + i_t k_t
    h_t = o_t * C_t q_t / max(|n_t^T q_t|, 1)

Stabilized, as the paper runs it: ``m_t = max(log f_t + m_{t-1}, log i_t)``, ``i'_t =
exp(log i_t - m_t)``, ``f'_t = exp(log f_t + m_{t-1} - m_t)`` replace ``i_t, f_t``, so the
stored ``(C_t, n_t)`` are the ones above times ``exp(-m_t)``; the read-out divides by
``max(|n_t^T q_t|, exp(-m_t))``, which makes ``h_t`` exactly the unstabilized value (the
authors' code does the same, plus an epsilon left out here). State ``(C, n, m)``.

Parallel form (``"matrix"`` linear form of the scan strategy): with ``F_t = log f_1 + ... +
log f_t``, the stabilizer is ``m_t = F_t + max(m_0, max_{s<=t}(log i_s - F_s))`` (a cumulative
max, taken in chunks to keep ``F`` small); then ``[C_t^T | n_t]`` is the matrix scan with ``log
decay = log f'_t <= 0``, key ``i'_t k_t`` and value ``[v_t, 1]``: one chunked scan gives ``C_t
q_t`` and ``n_t^T q_t``.

Layout: ``memory (B, heads * d_k * d_v)`` is ``C^T`` per head, row-major (the matrix scan's
``(d_k, d_v)`` state); ``normalizer (B, heads * d_k)``; ``stabilizer (B, heads)``. Key size
``d_k = d_v`` by default. Initialization as the authors' code: q, k, v and output gate weights
N(0, 2 / (5 D)), their biases zero; gate weights zero, forget gate biases evenly spaced in
[3, 6] over the heads, input gate biases N(0, 0.1^2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int
from rnnkit.cells.gla import head_size, heads_first, heads_last

FORGET_ACTIVATIONS = ("sigmoid", "exp")


def running_stabilizer(
    log_input: Tensor, log_forget: Tensor, initial: Tensor, chunk_size: int = 64
) -> Tensor:
    """``m_t = max(log f_t + m_{t-1}, log i_t)`` for all steps: ``(B, heads, T)`` from
    ``log i, log f (B, heads, T)`` and ``m_0 (B, heads)``.

    In chunks of ``chunk_size`` steps, ``m_t = F_t + max(m, max_{s<=t}(log i_s - F_s))`` with
    ``F`` summed from the chunk's start and ``m`` the stabilizer entering it, so that rounding
    in ``F`` stays that of a chunk (the same order as the step-by-step recurrence's), not of
    the whole sequence; only the chunk boundaries run one after another.
    """
    batch, heads, steps = log_input.shape
    padding = -steps % chunk_size  # padded steps: log i = -inf, log f = 0 leave m unchanged
    log_input = functional.pad(log_input, (0, padding), value=float("-inf"))
    log_forget = functional.pad(log_forget, (0, padding))
    total = log_forget.unflatten(-1, (-1, chunk_size)).cumsum(-1)  # (B, heads, K, C)
    best = (log_input.unflatten(-1, (-1, chunk_size)) - total).cummax(-1).values
    entering, stabilizer = [], initial
    for total_chunk, best_chunk in zip(total.unbind(2), best.unbind(2), strict=True):
        entering.append(stabilizer)
        stabilizer = total_chunk[..., -1] + torch.maximum(stabilizer, best_chunk[..., -1])
    starts = torch.stack(entering, -1).unsqueeze(-1)  # (B, heads, K, 1)
    return (total + torch.maximum(starts, best)).flatten(2)[..., :steps]


class MLSTMState(NamedTuple):
    """``memory (B, heads * d_k * d_v)``, ``normalizer (B, heads * d_k)``, ``stabilizer (B,
    heads)``."""

    memory: Tensor
    normalizer: Tensor
    stabilizer: Tensor


class MLSTMCell(Cell):
    """mLSTM: ``weight_ih`` rows are (q, k, v, input gate, forget gate, output gate)."""

    is_linear = True
    linear_form = "matrix"
    state_type = MLSTMState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        num_heads: int = 1,
        key_size: int | None = None,
        forget_activation: str = "sigmoid",
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_heads", num_heads)
        if forget_activation not in FORGET_ACTIVATIONS:
            raise ValueError(
                f"forget_activation must be one of {FORGET_ACTIVATIONS}, got {forget_activation!r}"
            )
        self.num_heads = num_heads
        self.value_head_size = head_size("hidden_size", hidden_size, num_heads)
        self.key_size = hidden_size if key_size is None else key_size
        self.key_head_size = head_size("key_size", self.key_size, num_heads)
        self.forget_activation = forget_activation
        self.bias = bias
        key, heads = self.key_size, num_heads
        self.sizes = [key, key, hidden_size, heads, heads, hidden_size]
        self.weight_ih = nn.Parameter(torch.empty(sum(self.sizes), input_size))
        self.bias_ih = nn.Parameter(torch.empty(sum(self.sizes))) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The authors' initialization; see the module docstring."""
        query, key, value, input_gate, forget_gate, output_gate = self.weight_ih.split(self.sizes)
        with torch.no_grad():
            for block in (query, key, value, output_gate):
                nn.init.normal_(block, std=math.sqrt(2 / (5 * self.input_size)))
            nn.init.zeros_(input_gate)
            nn.init.zeros_(forget_gate)
            if self.bias_ih is not None:
                nn.init.zeros_(self.bias_ih)
                *_, input_bias, forget_bias, _ = self.bias_ih.split(self.sizes)
                forget_bias.copy_(torch.linspace(3.0, 6.0, self.num_heads))
                nn.init.normal_(input_bias, std=0.1)

    def state_sizes(self) -> tuple[int, ...]:
        key_size = self.num_heads * self.key_head_size
        return (key_size * self.value_head_size, key_size, self.num_heads)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., P)``: q, k, v, gate pre-activations side by side."""
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def terms(self, projected: Tensor) -> tuple[Tensor, ...]:
        """``q, k (..., K)``, ``v (..., H)``, ``log i, log f (..., heads)``, ``o (..., H)``."""
        query, key, value, log_input, forget, output = projected.split(self.sizes, -1)
        log_forget = (
            functional.logsigmoid(forget) if self.forget_activation == "sigmoid" else forget
        )
        key = key / math.sqrt(self.key_head_size)
        return query, key, value, log_input, log_forget, torch.sigmoid(output)

    def recur(self, projected: Tensor, state: MLSTMState) -> tuple[Tensor, MLSTMState]:
        """``projected (B, P)``, state ``(C, n, m)`` -> ``h_t (B, H)``, new state."""
        query, key, value, log_input, log_forget, output_gate = self.terms(projected)
        query, key, value = (
            tensor.unflatten(-1, (self.num_heads, -1)) for tensor in (query, key, value)
        )
        memory = state.memory.unflatten(-1, (self.num_heads, self.key_head_size, -1))
        normalizer = state.normalizer.unflatten(-1, (self.num_heads, -1))  # (B, heads, d_k)
        stabilizer = torch.maximum(log_forget + state.stabilizer, log_input)  # m_t: (B, heads)
        forget = (log_forget + state.stabilizer - stabilizer).exp().unsqueeze(-1)  # f'_t
        write = (log_input - stabilizer).exp().unsqueeze(-1)  # i'_t
        memory = forget.unsqueeze(-1) * memory + (write * key).unsqueeze(-1) * value.unsqueeze(-2)
        normalizer = forget * normalizer + write * key
        numerator = torch.einsum("bhkv,bhk->bhv", memory, query)  # C_t q_t
        denominator = torch.maximum((normalizer * query).sum(-1).abs(), (-stabilizer).exp())
        hidden = output_gate * (numerator / denominator.unsqueeze(-1)).flatten(1)
        return hidden, MLSTMState(memory.flatten(1), normalizer.flatten(1), stabilizer)

    def stabilizers(
        self, projected: Tensor, state: MLSTMState, active: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``m_t, log i_t, log f_t`` for all steps, ``(B, heads, T)``; padded steps (where
        ``active (B, T)`` is False) get ``log i = -inf, log f = 0`` and keep ``m``."""
        _, _, _, log_input, log_forget, _ = self.terms(projected)
        log_input, log_forget = log_input.transpose(1, 2), log_forget.transpose(1, 2)
        if active is not None:
            log_input = torch.where(active.unsqueeze(1), log_input, float("-inf"))
            log_forget = torch.where(active.unsqueeze(1), log_forget, 0.0)
        return running_stabilizer(log_input, log_forget, state.stabilizer), log_input, log_forget

    def matrix_terms(
        self, projected: Tensor, state: MLSTMState, active: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``q, i' k, [v, 1]`` and ``log f'`` for all steps, ``(B, heads, T, .)``."""
        query, key, value = (
            heads_first(tensor, self.num_heads) for tensor in self.terms(projected)[:3]
        )
        stabilizer, log_input, log_forget = self.stabilizers(projected, state, active)
        previous = torch.cat([state.stabilizer.unsqueeze(-1), stabilizer[..., :-1]], -1)
        log_decay = (log_forget + previous - stabilizer).unsqueeze(-1)  # (B, heads, T, 1)
        key = (log_input - stabilizer).exp().unsqueeze(-1) * key
        value = torch.cat([value, torch.ones_like(value[..., :1])], -1)
        return query, key, value, log_decay

    def matrix_initial(self, state: MLSTMState) -> Tensor:
        """``[C^T | n]`` per head: ``(B, heads, d_k, d_v + 1)``."""
        memory = state.memory.unflatten(-1, (self.num_heads, self.key_head_size, -1))
        normalizer = state.normalizer.unflatten(-1, (self.num_heads, -1, 1))
        return torch.cat([memory, normalizer], -1)

    def matrix_readout(
        self,
        projected: Tensor,
        outputs: Tensor,
        final: Tensor,
        state: MLSTMState,
        active: Tensor | None,
    ) -> tuple[Tensor, MLSTMState]:
        """``h (B, T, H)`` from ``[C_t q_t, n_t^T q_t] (B, heads, T, d_v + 1)``; final state."""
        stabilizer, _, _ = self.stabilizers(projected, state, active)
        numerator, dot = outputs[..., :-1], outputs[..., -1]
        denominator = torch.maximum(dot.abs(), (-stabilizer).exp()).unsqueeze(-1)
        hidden = self.terms(projected)[-1] * heads_last(numerator / denominator)
        final_state = MLSTMState(
            final[..., :-1].flatten(1), final[..., -1].flatten(1), stabilizer[..., -1]
        )
        return hidden, final_state

    def extra_repr(self) -> str:
        options = [super().extra_repr(), f"num_heads={self.num_heads}", f"key_size={self.key_size}"]
        if self.forget_activation != "sigmoid":
            options.append(f"forget_activation={self.forget_activation!r}")
        return ", ".join(options + ([] if self.bias else ["bias=False"]))
