"""A recurrent language model over tokens (characters here).

    e_t = dropout(E[x_t])                         (B, T, embedding_size)
    y_t, s_t = Recurrent(e_t, s_{t-1})            (B, T, O), any registered cell and strategy
    logits_t = W dropout(y_t) + b                 (B, T, V)

With ``tie_weights`` the head reuses the embedding matrix, W = E (Press & Wolf 2017,
https://arxiv.org/abs/1608.05859; Inan et al. 2017), which needs O == embedding_size (set
``recurrent.hidden_size`` or the LSTM's ``proj_size`` option to the embedding size).

``mixer="attention"`` replaces this model by a decoder-only transformer (``transformer``, with
recurrence in depth: ``rnnkit.models.transformer_lm``); ``build_language_model`` builds either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from rnnkit.cells import State
from rnnkit.models.depth.recursive import INITIALIZATIONS
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.sequence_model import SequenceModelConfig
from rnnkit.models.transformer_lm import MIXERS, TransformerLanguageModel, default_transformer


def default_recurrent() -> RecurrentConfig:
    """The language model's recurrent stack: one LSTM layer of 512."""
    return RecurrentConfig(cell="lstm", hidden_size=512, dropout=0.2)


@dataclass
class LanguageModelConfig:
    """Sizes and options of a recurrent language model."""

    embedding_size: int = 64
    """Features of the token embedding."""
    recurrent: RecurrentConfig = field(default_factory=default_recurrent)
    """The recurrent stack: cell, strategy, sizes, its own options
    (``--model.recurrent.cell=gru``, ``--model.recurrent.options.peephole=true``)."""
    dropout: float = 0.2
    """Dropout on the embeddings and before the head (``recurrent.dropout`` is between layers)."""
    tie_weights: bool = False
    """Share the embedding matrix with the output head (needs output size == embedding_size)."""
    mixer: str = "recurrent"
    """``recurrent`` (this model) or ``attention``: the decoder-only transformer of
    ``transformer`` (``rnnkit.models.transformer_lm``; the options above are then unused)."""
    transformer: SequenceModelConfig = field(default_factory=default_transformer)
    """With ``mixer=attention``: blocks, width, heads and recurrence in depth
    (``--model.transformer.num_blocks=2 --model.transformer.depth.recursion=mor``)."""
    initialize_from: str = ""
    """A trained deep run (``mixer=attention``, ``depth.recursion=none``) that initializes this
    relaxed recursive transformer at the start of training ("": none)."""
    initialization: str = "stepwise"
    """How shared blocks come from the deep run's layers: ``stepwise``, ``average``, ``lower``."""

    @staticmethod
    def prepare_data(data: dict[str, Any]) -> dict[str, Any]:
        """A partial ``transformer`` mapping takes the char-LM's defaults
        (``default_transformer``), not the sequence model's, for the keys it leaves out."""
        transformer = data.get("transformer")
        if isinstance(transformer, dict):
            defaults = default_transformer()
            keys = ("model_size", "num_blocks", "mixer", "num_heads")
            data["transformer"] = {key: getattr(defaults, key) for key in keys} | transformer
        return data

    def __post_init__(self) -> None:
        """Range checks, so a bad value fails when the config is read, not mid-build."""
        if self.mixer not in MIXERS:
            raise ValueError(f"mixer: expected one of {', '.join(MIXERS)}, got {self.mixer!r}")
        if self.initialization not in INITIALIZATIONS:
            raise ValueError(
                f"initialization: expected one of {', '.join(INITIALIZATIONS)}, got "
                f"{self.initialization!r}"
            )
        if self.initialize_from and (
            self.mixer != "attention" or self.transformer.depth.recursion != "relaxed"
        ):
            raise ValueError(
                "initialize_from: expected mixer='attention' and "
                "transformer.depth.recursion='relaxed'"
            )
        if self.embedding_size <= 0:
            raise ValueError(f"embedding_size must be positive, got {self.embedding_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class LanguageModel(nn.Module):
    """Embedding, ``rnnkit.nn.Recurrent``, dropout and a linear head over ``vocabulary_size``.

    ``forward(tokens (B, T), state=None, resets=None) -> (logits (B, T, V), final_state)``; the
    state is the Recurrent's tuple of one NamedTuple per layer.
    """

    def __init__(self, config: LanguageModelConfig, vocabulary_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocabulary_size = vocabulary_size
        self.embedding = nn.Embedding(vocabulary_size, config.embedding_size)
        self.recurrent = config.recurrent.build(config.embedding_size)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.recurrent.output_size, vocabulary_size)
        if config.tie_weights:
            if self.recurrent.output_size != config.embedding_size:
                raise ValueError(
                    "tie_weights needs the recurrent output size "
                    f"({self.recurrent.output_size}) to equal embedding_size "
                    f"({config.embedding_size}); set model.embedding_size to it, or "
                    "model.recurrent.options.proj_size for an LSTM"
                )
            self.head.weight = self.embedding.weight

    def forward(
        self,
        tokens: Tensor,
        state: Sequence[State] | None = None,
        resets: Tensor | None = None,
    ) -> tuple[Tensor, tuple[State, ...]]:
        """``tokens (B, T)`` int64 -> ``logits (B, T, V)`` and the final state per layer.

        ``resets (B, T)`` bool: True where a document starts, the state restarting from zero
        before that token, the first one included, so windows run with the carried state equal
        one run over the whole text.
        """
        embedded = self.dropout(self.embedding(tokens))  # (B, T, E)
        outputs, final_state = self.recurrent(embedded, state, resets=resets)  # (B, T, O)
        return self.head(self.dropout(outputs)), final_state

    def step(
        self, tokens: Tensor, state: Sequence[State] | None = None
    ) -> tuple[Tensor, tuple[State, ...]]:
        """One token per row for decoding: ``tokens (B,)`` -> ``logits (B, V)`` and the new
        state; equal to ``forward`` on ``tokens (B, 1)`` (one ``Recurrent.step``)."""
        embedded = self.dropout(self.embedding(tokens))  # (B, E)
        outputs, new_state = self.recurrent.step(embedded, state)  # (B, O)
        return self.head(self.dropout(outputs)), new_state

    def num_parameters(self) -> int:
        """Trainable parameters, shared ones counted once."""
        return sum(parameter.numel() for parameter in self.parameters() if parameter.requires_grad)


def build_language_model(
    config: LanguageModelConfig, vocabulary_size: int
) -> LanguageModel | TransformerLanguageModel:
    """The recurrent language model, or the transformer one with ``mixer=attention``."""
    if config.mixer == "attention":
        return TransformerLanguageModel(config.transformer, vocabulary_size)
    return LanguageModel(config, vocabulary_size)


def detach_state(state: Sequence[State]) -> tuple[State, ...]:
    """Cut the graph behind a carried state: detach every tensor of every layer's NamedTuple."""
    return tuple(type(layer)(*(field.detach() for field in layer)) for layer in state)
