"""Looped and relaxed recursive transformers: L effective layers from B shared blocks.

Relaxed Recursive Transformers (Bae et al. 2024, https://arxiv.org/abs/2410.20672). A deep
model of L layers ``f_0 .. f_{L-1}`` becomes a recursive one of B <= L unique blocks
``g_0 .. g_{B-1}``, with L divisible by B (K = L / B loops), where effective layer ``l`` runs
block ``b(l)``:

    CYCLE     b(l) = l mod B            0, 1, .., B-1, 0, 1, .., B-1, ..   (the block loops)
    SEQUENCE  b(l) = floor(l / K)       0, 0, .., 1, 1, ..                 (each block repeats)

Relaxed sharing adds a layer-wise LoRA to every matrix ``W`` (attention projections, MLP, a
recurrent cell's weights) of the shared block, so that layer ``l`` computes with

    W_l = W_{b(l)} + B_l A_l              A_l (r, in), B_l (out, r), rank r per option

and (``layer_vectors``, our addition) a per-layer offset on every vector parameter (norm scales
and shifts, biases), ``v_l = v_{b(l)} + delta_l``, O(D) floats per layer, so that full-rank LoRA
can reproduce any deep model exactly. Rank 0 without layer vectors is plain layer tying, the looped
transformer. LoRA starts as ``B_l = 0`` (A_l Kaiming-uniform, as in LoRA), so a new relaxed
model equals its looped one.

Initialization from a trained deep model (the paper's Section 3.1 and Figure 3 as we read
them), for shared block b tied to the layers ``L_b = {l : b(l) = b}``:

    stepwise  W_b = W^deep_{b K}                    every K-th layer (first and then each K-th)
    average   W_b = mean_{l in L_b} W^deep_l         the mean of the tied layers
    lower     W_b = W^deep_b                         the first B layers

and the LoRA of layer l from the truncated SVD of its residual (the paper's choice):

    W^deep_l - W_{b(l)} = U S V^T,   B_l = U_r S_r,   A_l = V_r^T,   delta_l = v^deep_l - v_{b(l)}

which is exact when r >= min(out, in) (the relaxed model then equals its deep teacher).

In the sequence model: ``--model.depth.recursion=relaxed --model.num_blocks=B
--model.depth.max_steps=K --model.depth.recursive.lora_rank=r``; in the char-LM the same options
under ``--model.mixer=attention --model.transformer.*``, and ``--model.initialize_from=RUN
--model.initialization=stepwise`` starts it from a deep run (``rnnkit.models.transformer_lm``).
Shapes: ``forward(blocks, inputs (B, T, D), state, lengths) -> ((B, T, D), state)``; the state
is a tuple of one entry per effective layer (each application keeps its own recurrent state or KV
cache).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

PATTERNS = ("cycle", "sequence")
INITIALIZATIONS = ("stepwise", "average", "lower")


@dataclass
class RecursiveConfig:
    """How a relaxed recursive model ties its layers (``--model.depth.recursive.*``); the
    sequence model's ``num_blocks`` are the B shared blocks, ``depth.max_steps`` the K loops."""

    pattern: str = "cycle"
    """``cycle`` (0, 1, .., B-1, 0, 1, ..) or ``sequence`` (0, 0, .., 1, 1, ..)."""
    lora_rank: int = 0
    """Rank of each effective layer's LoRA on every matrix of its block (0: plain tying)."""
    layer_vectors: bool = False
    """Each effective layer owns an offset on the block's vectors (norms, biases)."""

    def __post_init__(self) -> None:
        """Option checks; errors name the option, the value and what is allowed."""
        if self.pattern not in PATTERNS:
            raise ValueError(
                f"pattern: expected one of {', '.join(PATTERNS)}, got {self.pattern!r}"
            )
        if self.lora_rank < 0:
            raise ValueError(f"lora_rank: expected 0 or more, got {self.lora_rank}")


def block_order(num_layers: int, shared_blocks: int, pattern: str) -> list[int]:
    """The shared block ``b(l)`` of each effective layer ``l``."""
    if shared_blocks <= 0 or num_layers % shared_blocks:
        raise ValueError(
            f"num_layers: expected a multiple of shared_blocks ({shared_blocks}), got {num_layers}"
        )
    if pattern not in PATTERNS:
        raise ValueError(f"pattern: expected one of {', '.join(PATTERNS)}, got {pattern!r}")
    loops = num_layers // shared_blocks
    if pattern == "cycle":
        return [layer % shared_blocks for layer in range(num_layers)]
    return [layer // loops for layer in range(num_layers)]


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys cannot hold dots


class _Stepper(nn.Module):
    """Calls ``block.step`` as ``forward``, so ``functional_call`` can reparametrize it."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block: Any = block  # a Block: has ``step``

    def forward(self, inputs: Tensor, state: Any) -> Any:
        return self.block.step(inputs, state)


class RelaxedRecursion(nn.Module):
    """``B * loops`` effective layers from B shared blocks, with layer-wise LoRA.

    The blocks are not owned: they are read here for their parameter shapes and passed to
    every call (the ``DepthRecursion`` protocol of ``rnnkit.models.depth.config``).

    Args:
        blocks: the B shared blocks, modules called as ``block(inputs, state, lengths)`` and
            ``block.step(inputs, state)`` (``sequence_model.Block``).
        config: pattern, LoRA rank, layer vectors.
        loops: K, so that there are L = B K effective layers.
    """

    def __init__(self, blocks: Sequence[nn.Module], config: RecursiveConfig, loops: int):
        super().__init__()
        if loops < 1:
            raise ValueError(f"loops: expected a positive integer, got {loops}")
        self.config = config
        self.order = block_order(len(blocks) * loops, len(blocks), config.pattern)
        self.lora_down = nn.ModuleList()  # per layer: A_l (r, in) by matrix name
        self.lora_up = nn.ModuleList()  # per layer: B_l (out, r)
        self.vector_offsets = nn.ModuleList()  # per layer: delta_l by vector name
        for block_index in self.order:
            down, up, offsets = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
            for name, parameter in blocks[block_index].named_parameters():
                if parameter.dim() == 2 and config.lora_rank > 0:
                    rank = config.lora_rank
                    first = parameter.new_empty(rank, parameter.shape[1])
                    nn.init.kaiming_uniform_(first, a=math.sqrt(5))
                    down[_key(name)] = nn.Parameter(first)
                    up[_key(name)] = nn.Parameter(parameter.new_zeros(parameter.shape[0], rank))
                elif parameter.dim() == 1 and config.layer_vectors:
                    offsets[_key(name)] = nn.Parameter(torch.zeros_like(parameter))
            self.lora_down.append(down)
            self.lora_up.append(up)
            self.vector_offsets.append(offsets)

    @property
    def num_layers(self) -> int:
        return len(self.order)

    def layer_parameters(self, blocks: Sequence[nn.Module], layer: int) -> dict[str, Tensor]:
        """The parameters of effective layer ``layer`` that differ from its shared block:
        ``W_b + B_l A_l`` and ``v_b + delta_l``, by the block's parameter names."""
        down, up, offsets = self._layer_dicts(layer)
        changed: dict[str, Tensor] = {}
        for name, parameter in blocks[self.order[layer]].named_parameters():
            key = _key(name)
            if key in down:
                changed[name] = parameter + up[key] @ down[key]
            elif key in offsets:
                changed[name] = parameter + offsets[key]
        return changed

    def forward(
        self,
        blocks: Sequence[nn.Module],
        inputs: Tensor,
        state: Sequence[Any] | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, tuple[Any, ...]]:
        """``(B, T, D)`` -> ``(B, T, D)`` and one state per effective layer."""
        self._check(blocks, state)
        hidden, new_states = inputs, []
        for layer, block_index in enumerate(self.order):
            layer_state = None if state is None else state[layer]
            changed = self.layer_parameters(blocks, layer)
            arguments = (hidden, layer_state, lengths)
            block = blocks[block_index]
            hidden, layer_state = (
                functional_call(block, changed, arguments) if changed else block(*arguments)
            )
            new_states.append(layer_state)
        return hidden, tuple(new_states)

    def step(
        self, blocks: Sequence[nn.Module], inputs: Tensor, state: Sequence[Any] | None = None
    ) -> tuple[Tensor, tuple[Any, ...]]:
        """One position ``(B, D)`` -> ``(B, D)`` and the new per-layer states."""
        self._check(blocks, state)
        hidden, new_states = inputs, []
        for layer, block_index in enumerate(self.order):
            layer_state = None if state is None else state[layer]
            changed = self.layer_parameters(blocks, layer)
            stepper = _Stepper(blocks[block_index])
            renamed = {f"block.{name}": value for name, value in changed.items()}
            hidden, layer_state = functional_call(stepper, renamed, (hidden, layer_state))
            new_states.append(layer_state)
        return hidden, tuple(new_states)

    def auxiliary_loss(self) -> Tensor | None:
        """No loss term of its own."""
        return None

    def statistics(self) -> dict[str, float]:
        """The effective depth (constant)."""
        return {"effective_layers": float(self.num_layers)}

    def reset_statistics(self) -> None:
        """Nothing accumulates."""

    def _layer_dicts(
        self, layer: int
    ) -> tuple[nn.ParameterDict, nn.ParameterDict, nn.ParameterDict]:
        down, up, offsets = self.lora_down[layer], self.lora_up[layer], self.vector_offsets[layer]
        assert isinstance(down, nn.ParameterDict) and isinstance(up, nn.ParameterDict)
        assert isinstance(offsets, nn.ParameterDict)  # __init__ builds nothing else
        return down, up, offsets

    def _check(self, blocks: Sequence[nn.Module], state: Sequence[Any] | None) -> None:
        if len(blocks) != max(self.order) + 1:
            raise ValueError(
                f"blocks: expected the {max(self.order) + 1} shared blocks, got {len(blocks)}"
            )
        if state is not None and len(state) != self.num_layers:
            raise ValueError(
                f"state: expected one entry per effective layer ({self.num_layers}), got "
                f"{len(state)}"
            )


def shared_initial_weights(
    deep_blocks: Sequence[nn.Module], order: Sequence[int], method: str
) -> list[dict[str, Tensor]]:
    """Per shared block, its parameters from the deep model's blocks by ``method``
    (``stepwise``, ``average``, ``lower``; equations in the module docstring)."""
    if len(deep_blocks) != len(order):
        raise ValueError(
            f"deep_blocks: expected one per effective layer ({len(order)}), got {len(deep_blocks)}"
        )
    shared = max(order) + 1
    loops = len(order) // shared
    layers = [dict(block.named_parameters()) for block in deep_blocks]
    if method == "stepwise":
        return [
            {n: p.detach().clone() for n, p in layers[b * loops].items()} for b in range(shared)
        ]
    if method == "lower":
        return [{n: p.detach().clone() for n, p in layers[b].items()} for b in range(shared)]
    if method == "average":
        result = []
        for block_index in range(shared):
            tied = [layers[layer] for layer, b in enumerate(order) if b == block_index]
            result.append(
                {name: torch.stack([t[name].detach() for t in tied]).mean(0) for name in tied[0]}
            )
        return result
    raise ValueError(f"method: expected one of {', '.join(INITIALIZATIONS)}, got {method!r}")


@torch.no_grad()
def initialize_from_deep(
    recursion: RelaxedRecursion,
    blocks: Sequence[nn.Module],
    deep_blocks: Sequence[nn.Module],
    method: str = "stepwise",
) -> None:
    """Set the shared ``blocks`` from a trained deep model's ``deep_blocks`` (one per effective
    layer, same architecture) by ``method``, and each layer's LoRA and vector offsets in
    ``recursion`` from the truncated SVD of its residual to its shared block."""
    for block, weights in zip(
        blocks, shared_initial_weights(deep_blocks, recursion.order, method), strict=True
    ):
        for name, parameter in block.named_parameters():
            parameter.copy_(weights[name])
    for layer, block_index in enumerate(recursion.order):
        shared = dict(blocks[block_index].named_parameters())
        down, up, offsets = recursion._layer_dicts(layer)
        for name, deep in deep_blocks[layer].named_parameters():
            residual = deep.detach() - shared[name]
            key = _key(name)
            if key in down:
                rank = down[key].shape[0]
                left, singular, right = torch.linalg.svd(residual, full_matrices=False)
                kept = min(rank, singular.numel())
                up[key].zero_()
                down[key].zero_()
                up[key][:, :kept] = left[:, :kept] * singular[:kept]
                down[key][:kept] = right[:kept]
            elif key in offsets:
                offsets[key].copy_(residual)


@torch.no_grad()
def initialize_model_from_deep(model: Any, deep_model: Any, method: str = "stepwise") -> None:
    """A relaxed recursive ``SequenceModel`` (``depth.recursion=relaxed``) from a trained deep
    one of L = B K blocks and the same width: the embedding, final norm and head copied, the
    blocks and LoRA by ``initialize_from_deep``."""
    if not isinstance(model.depth, RelaxedRecursion):
        raise ValueError(
            f"model: expected depth.recursion='relaxed', got {model.config.depth.recursion!r}"
        )
    for name in ("embedding", "final_norm", "head"):
        getattr(model, name).load_state_dict(getattr(deep_model, name).state_dict())
    initialize_from_deep(model.depth, model.block_list(), deep_model.block_list(), method)
