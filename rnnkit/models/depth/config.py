"""The ``depth`` group of the sequence model's config: recurrence in depth over its blocks.

    --model.depth.recursion=universal --model.depth.max_steps=8 --model.depth.ponder_weight=0.01
    --model.depth.recursion=universal --model.depth.act=false      (always max_steps steps)

``recursion="none"`` is the plain stack of blocks. ``build_depth`` gives the module that runs
the blocks in depth (``None`` for ``"none"``); such a module is called as
``module(blocks, hidden, state, lengths) -> (hidden, state)`` and ``module.step(blocks, hidden,
state) -> (hidden, state)``, gives ``auxiliary_loss()`` (added to the task loss) and
``statistics()`` (metrics since ``reset_statistics()``). The modules of this package never import
``rnnkit.models.sequence_model`` (it imports them): the blocks are passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor, nn

from rnnkit.models.depth.mixture_of_recursions import MixtureOfRecursionsConfig
from rnnkit.models.depth.recursive import RecursiveConfig

RECURSIONS = ("none", "universal", "relaxed", "mor")
"""Names of ``depth.recursion``."""


@dataclass
class DepthConfig:
    """How the sequence model recurs in depth over its blocks."""

    recursion: str = "none"
    """``none`` (each block once) or ``universal`` (Universal Transformer: the blocks, as one
    shared unit, applied up to ``max_steps`` times with timestep and position embeddings),
    ``relaxed`` (relaxed recursive transformer: the blocks looped ``max_steps`` times with
    layer-wise LoRA, ``recursive.*``) or ``mor`` (Mixture-of-Recursions: a router gives each
    token up to ``max_steps`` passes of the blocks, attention mixers, ``mixture.*``)."""
    max_steps: int = 4
    """Most applications of the shared blocks (K); every position's steps with ``act``."""
    act: bool = True
    """Adaptive computation time per position (halting unit, ponder cost); False: always
    ``max_steps`` steps."""
    ponder_weight: float = 0.01
    """tau: the weight of the mean ponder cost ``N + R`` in the loss (with ``act``)."""
    epsilon: float = 0.01
    """A position halts once its halting probabilities sum to ``1 - epsilon``."""
    halting_bias: float = 1.0
    """Initial bias of the halting unit (higher: fewer steps at the start of training)."""
    recursive: RecursiveConfig = field(default_factory=RecursiveConfig)
    """``relaxed``: the blocks are B shared blocks looped ``max_steps`` times (L = B K layers),
    their pattern and layer-wise LoRA (``rnnkit.models.depth.recursive``)."""
    mixture: MixtureOfRecursionsConfig = field(default_factory=MixtureOfRecursionsConfig)
    """``mor``: Mixture-of-Recursions routing over up to ``max_steps`` recursions of the blocks
    (``rnnkit.models.depth.mixture_of_recursions``)."""

    def __post_init__(self) -> None:
        """Option checks; errors name the option, the value and what is allowed."""
        if self.recursion not in RECURSIONS:
            raise ValueError(
                f"recursion: expected one of {', '.join(RECURSIONS)}, got {self.recursion!r}"
            )
        if self.max_steps < 1:
            raise ValueError(f"max_steps: expected a positive integer, got {self.max_steps}")
        if self.ponder_weight < 0:
            raise ValueError(f"ponder_weight: expected 0 or more, got {self.ponder_weight}")
        if not 0.0 < self.epsilon < 1.0:
            raise ValueError(f"epsilon: expected (0, 1), got {self.epsilon}")


class DepthRecursion(Protocol):
    """What the sequence model calls on a depth recursion (see the module docstring)."""

    def __call__(
        self, blocks: list[Any], hidden: Tensor, state: Any, lengths: Tensor | None
    ) -> tuple[Tensor, Any]: ...

    def step(self, blocks: list[Any], hidden: Tensor, state: Any) -> tuple[Tensor, Any]: ...

    def auxiliary_loss(self) -> Tensor | None: ...

    def statistics(self) -> dict[str, float]: ...

    def reset_statistics(self) -> None: ...


def build_depth(
    config: DepthConfig, model_size: int, blocks: Sequence[nn.Module] = ()
) -> DepthRecursion | None:
    """The module that runs the blocks in depth for ``config.recursion``; None for ``none``.
    ``blocks``: the model's blocks (``relaxed`` reads their parameter shapes for its LoRA)."""
    if config.recursion == "relaxed":
        from rnnkit.models.depth.recursive import RelaxedRecursion

        return RelaxedRecursion(blocks, config.recursive, config.max_steps)
    if config.recursion == "mor":
        from rnnkit.models.depth.mixture_of_recursions import MixtureOfRecursions

        return MixtureOfRecursions(config.mixture, model_size, config.max_steps)
    if config.recursion == "universal":
        from rnnkit.models.depth.universal import UniversalTransformer

        return UniversalTransformer(config, model_size)
    return None
