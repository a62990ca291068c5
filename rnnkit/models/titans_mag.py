"""Titans' memory as a gate (MAG): sliding-window attention gated by the neural memory.

Behrouz, Zhong, Mirrokni 2025, "Titans: Learning to Memorize at Test Time",
https://arxiv.org/abs/2501.00663, Section 4.2 (eqs. 26 to 28). Two branches read the same
inputs ``x (B, T, D)``:

    y = SW-Attn(x)                        causal attention over the last ``window`` positions
                                          (``CausalSelfAttention``: the short-term memory)
    m = W_m M(x)                          the Titans cell (``rnnkit/cells/titans.py``) under
                                          any strategy; ``W_m`` only when its size is not D
    o = RMSNorm_y(y) * sigmoid(RMSNorm_m(m))                                        (B, T, D)

The paper leaves the gate open ("⊗ can be any non-linear gating. In our experiments, we
normalize the outputs y and M(x) using learnable vector-valued weights, followed by a
non-linearity σ(.)"). Chosen here: an RMS normalization with a learned gain vector on each
branch (the vector-valued weights), and the sigmoid of the normalized memory branch as the gate
on the normalized attention branch, as titans-pytorch's ``gate_attn_output`` gates the attention
output by ``sigmoid(retrieved)``. Not built: the persistent memory tokens prefixed to ``x``
(eq. 26) and MAG's attention to them.

State: ``MagState(cache, memory)``, the attention's ``KVCache`` and the memory's per-layer
states. Padding is on the right: the memory takes the lengths, the attention needs no mask for
the real positions; outputs at padded positions are not meaningful.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.cells import State
from rnnkit.models.causal_attention import CausalSelfAttention, KVCache
from rnnkit.models.recurrent_config import RecurrentConfig

MEMORY_CELL = "titans"


class MagState(NamedTuple):
    """The attention branch's cache and the memory branch's per-layer states."""

    cache: KVCache
    memory: tuple[State, ...]


class TitansGatedAttention(nn.Module):
    """MAG over ``(B, T, D)`` (module docstring).

    Args:
        memory: the memory branch, a ``RecurrentConfig`` of the ``titans`` cell.
        model_size: features D of inputs and outputs.
        num_heads: heads of the attention branch.
        rotary_base: the base of the attention's rotary frequencies.
        window: positions each position attends to, itself included (0: all earlier ones).
    """

    def __init__(
        self,
        memory: RecurrentConfig,
        model_size: int,
        num_heads: int,
        rotary_base: float = 10000.0,
        window: int = 0,
    ) -> None:
        super().__init__()
        if memory.cell != MEMORY_CELL:
            raise ValueError(
                f"the memory branch of MAG is the {MEMORY_CELL!r} cell, got {memory.cell!r}"
            )
        self.attention = CausalSelfAttention(model_size, num_heads, rotary_base, window)
        self.memory = memory.build(model_size)
        output_size = self.memory.output_size
        self.memory_projection = (
            nn.Linear(output_size, model_size) if output_size != model_size else nn.Identity()
        )
        self.attention_norm = nn.RMSNorm(model_size)
        self.memory_norm = nn.RMSNorm(model_size)

    def forward(
        self, inputs: Tensor, state: Sequence[Any] | None, lengths: Tensor | None
    ) -> tuple[Tensor, MagState]:
        """``(B, T, D)`` -> ``(B, T, D)`` and the extended cache and final memory states."""
        cache, memory_state = (None, None) if state is None else _as_state(state)
        attended, cache = self.attention(inputs, cache)
        remembered, memory_state = self.memory(inputs, memory_state, lengths)
        assert isinstance(remembered, Tensor)  # padded inputs give padded outputs
        return self.gate(attended, remembered), MagState(cache, memory_state)

    def step(self, inputs: Tensor, state: Sequence[Any] | None) -> tuple[Tensor, MagState]:
        """One position: ``(B, D)`` -> ``(B, D)`` and the new state."""
        cache, memory_state = (None, None) if state is None else _as_state(state)
        attended, cache = self.attention.step(inputs, cache)
        remembered, memory_state = self.memory.step(inputs, memory_state)
        return self.gate(attended, remembered), MagState(cache, memory_state)

    def gate(self, attended: Tensor, remembered: Tensor) -> Tensor:
        """``RMSNorm_y(y) * sigmoid(RMSNorm_m(W_m m))``, any leading shape."""
        gate = torch.sigmoid(self.memory_norm(self.memory_projection(remembered)))
        return self.attention_norm(attended) * gate

    def state_size(self) -> int:
        """Floats of the memory's state per sequence (the KV cache adds ``2 D`` per token)."""
        return sum(sum(cell.state_sizes()) for cell in self.memory.layer_cells())


def _as_state(state: Sequence[Any]) -> tuple[KVCache, tuple[State, ...]]:
    if not isinstance(state, MagState):
        raise ValueError(f"a titans_mag block's state must be a MagState, got {type(state)}")
    return state.cache, state.memory
