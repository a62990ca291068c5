"""A decoder-only transformer language model for the char-LM, with recurrence in depth.

``--model.mixer=attention`` makes the char-LM's model the benchmark tasks' ``SequenceModel``
(``rnnkit.models.sequence_model``) over characters, its blocks in ``model.transformer``:

    x_0 = E[x_t]                                         (B, T, D)
    x = x + attention(norm(x)); x = x + MLP(norm(x))     per block, causal, rotary positions
    logits_t = head(norm(x_t))                           (B, T, V)

and ``model.transformer.depth.recursion`` runs the blocks in depth: ``relaxed`` (Relaxed
Recursive Transformers, Bae et al. 2024, https://arxiv.org/abs/2410.20672;
``rnnkit.models.depth.recursive``) or ``mor`` (Mixture-of-Recursions, Bae et al. 2025,
https://arxiv.org/abs/2507.10524; ``rnnkit.models.depth.mixture_of_recursions``), with their
equations in those modules.

Context: the transformer attends within each window only. Training (truncated BPTT) and
evaluation read the text in windows of ``bptt.window`` tokens, each from an empty KV cache
(``WindowLocal``), so a token sees the earlier tokens of its window (on average (W - 1) / 2 of
them), never the previous window; nothing is carried. Generation (``step``) keeps growing KV
caches (recursion-wise caches for MoR), so samples longer than the window run at positions the
model was not trained on. Document resets are not supported (one text only).

A relaxed recursive model can start from a trained deep one (``--model.initialize_from=RUN
--model.initialization=stepwise|average|lower``): ``initialize_from_deep_model`` checks the
shapes and calls ``rnnkit.models.depth.recursive.initialize_model_from_deep``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from rnnkit.models.depth.recursive import RelaxedRecursion, initialize_model_from_deep
from rnnkit.models.sequence_model import SequenceModel, SequenceModelConfig

MIXERS = ("recurrent", "attention")


def default_transformer() -> SequenceModelConfig:
    """The char-LM's transformer: 4 attention blocks of width 128, 4 heads."""
    return SequenceModelConfig(model_size=128, num_blocks=4, mixer="attention", num_heads=4)


class TransformerLanguageModel(nn.Module):
    """``SequenceModel`` over ``vocabulary_size`` characters, the char-LM's interface:
    ``forward(tokens (B, T), state=None, resets=None) -> (logits (B, T, V), state)`` and
    ``step(tokens (B,), state) -> (logits (B, V), state)``; the state is the KV caches (one
    per block, per effective layer, or per recursion: the depth recursion's)."""

    def __init__(self, config: SequenceModelConfig, vocabulary_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocabulary_size = vocabulary_size
        self.network = SequenceModel(config, vocabulary_size, vocabulary_size=vocabulary_size)

    def forward(
        self, tokens: Tensor, state: Sequence[Any] | None = None, resets: Tensor | None = None
    ) -> tuple[Tensor, tuple[Any, ...]]:
        """``tokens (B, T)`` after the cached positions of ``state`` -> logits and caches."""
        if resets is not None and bool(resets.any()):
            raise ValueError(
                "the transformer language model does not support document resets "
                "(data.document_separator); train it on one text"
            )
        return self.network(tokens, state)

    def step(
        self, tokens: Tensor, state: Sequence[Any] | None = None
    ) -> tuple[Tensor, tuple[Any, ...]]:
        """One token per row ``(B,)`` -> ``(B, V)``; equal to ``forward`` on ``(B, 1)``."""
        return self.network.step(tokens, state)

    def auxiliary_loss(self) -> Tensor | None:
        """The depth recursion's loss term of the latest forward (MoR's router losses)."""
        return self.network.auxiliary_loss()

    def num_parameters(self) -> int:
        """Trainable parameters, shared ones counted once."""
        return self.network.parameter_count()

    def describe(self) -> str:
        """One line: blocks, width, depth recursion."""
        config = self.config
        depth = config.depth
        text = (
            f"transformer of {config.num_blocks} x {config.mixer} block(s) "
            f"(width {config.model_size}, {config.num_heads} heads)"
        )
        if depth.recursion == "relaxed":
            text += (
                f", relaxed recursion: {depth.max_steps} loops, {depth.recursive.pattern}, "
                f"LoRA rank {depth.recursive.lora_rank}"
            )
        elif depth.recursion == "mor":
            text += (
                f", Mixture-of-Recursions: up to {depth.max_steps} recursions, "
                f"{depth.mixture.routing}-choice routing"
            )
        elif depth.recursion != "none":
            text += f", depth recursion {depth.recursion} (up to {depth.max_steps} steps)"
        return text


class WindowLocal(nn.Module):
    """Runs ``model`` on every window from an empty cache and carries nothing: the char-LM's
    truncated BPTT and evaluation call it as a recurrent model whose state is ``()``."""

    def __init__(self, model: TransformerLanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, tokens: Tensor, state: Any = None, resets: Tensor | None = None
    ) -> tuple[Tensor, tuple[()]]:
        """``tokens (B, T)`` -> ``logits (B, T, V)`` and the empty state."""
        logits, _ = self.model(tokens, None, resets)
        return logits, ()


def vanilla_flops_per_token(config: SequenceModelConfig, window: int) -> float:
    """The FLOPs proxy of ``MixtureOfRecursions.statistics`` for the plain stack of blocks
    (``depth.recursion=none``) over windows of ``window`` tokens: ``2 P`` (P the blocks'
    matrix parameters) plus ``4 D`` per attended (query, key) pair per block, (W + 1) / 2 pairs
    per query on average."""
    size, blocks = config.model_size, config.num_blocks
    per_block = 4 * size * size + 2 * config.mlp_expansion * size * size  # qkv, out, MLP
    return 2.0 * blocks * per_block + 4.0 * size * blocks * (window + 1) / 2


def initialize_from_deep_model(
    model: TransformerLanguageModel, deep: TransformerLanguageModel, method: str
) -> None:
    """Set a relaxed recursive ``model`` (B shared blocks x K loops) from a trained ``deep``
    one of B K plain blocks by ``method`` (``stepwise``, ``average``, ``lower``); ValueError
    naming the option that differs when they do not fit."""
    config, teacher = model.config, deep.config
    if not isinstance(model.network.depth, RelaxedRecursion):
        raise ValueError(
            "initialize_from: expected model.transformer.depth.recursion='relaxed', got "
            f"{config.depth.recursion!r}"
        )
    if teacher.depth.recursion != "none":
        raise ValueError(
            "initialize_from: expected a deep run with depth.recursion='none', got "
            f"{teacher.depth.recursion!r}"
        )
    layers = config.num_blocks * config.depth.max_steps
    if teacher.num_blocks != layers:
        raise ValueError(
            f"initialize_from: the deep run has {teacher.num_blocks} blocks, expected "
            f"num_blocks x depth.max_steps = {config.num_blocks} x {config.depth.max_steps} "
            f"= {layers}"
        )
    for name in ("model_size", "num_heads", "mlp_expansion", "mixer", "rotary_base"):
        if getattr(teacher, name) != getattr(config, name):
            raise ValueError(
                f"initialize_from: the deep run's transformer.{name} is "
                f"{getattr(teacher, name)!r}, this model's {getattr(config, name)!r}"
            )
    if deep.vocabulary_size != model.vocabulary_size:
        raise ValueError(
            f"initialize_from: the deep run has {deep.vocabulary_size} characters, this corpus "
            f"{model.vocabulary_size}"
        )
    initialize_model_from_deep(model.network, deep.network, method)
