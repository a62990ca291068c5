"""A recurrent language model over tokens (characters here).

    e_t = dropout(E[x_t])                         (B, T, embedding_size)
    y_t, s_t = Recurrent(e_t, s_{t-1})            (B, T, O), any registered cell and strategy
    logits_t = W dropout(y_t) + b                 (B, T, V)

With ``tie_weights`` the head reuses the embedding matrix, W = E (Press & Wolf 2017,
https://arxiv.org/abs/1608.05859; Inan et al. 2017), which needs O == embedding_size (set
``hidden_size`` or the LSTM's ``proj_size`` to the embedding size).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, fields

from torch import Tensor, nn

from rnnkit.cells import CELLS, State
from rnnkit.nn import Recurrent
from rnnkit.strategies import get_registered

CELL_OPTION_DEFAULTS: dict[str, object] = {
    "proj_size": 0,
    "peephole": False,
    "layer_norm": False,
    "forget_bias": None,
    "input_dropout": 0.0,
    "hidden_dropout": 0.0,
    "weight_dropout": 0.0,
    "zoneout": 0.0,
}
"""Cell options of the config, passed to the cell only when set away from these defaults (so a
cell without the option, such as Elman without ``proj_size``, still builds)."""


def check_names_and_options(cell: str, strategy: str, options: dict[str, object]) -> None:
    """Raise ``ValueError`` naming a cell or strategy that is not registered, or an option the
    cell's constructor does not take (with the options it does take)."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; registered cells: {', '.join(sorted(CELLS))}")
    get_registered(strategy)
    accepted = [
        name for name in inspect.signature(CELLS[cell].__init__).parameters
        if name not in ("self", "input_size", "hidden_size", "args", "kwargs")
    ]
    for option in options:
        if option not in accepted:
            raise ValueError(
                f"option {option!r} is not taken by the cell {cell!r}; "
                f"its options: {', '.join(accepted) or 'none'}"
            )


@dataclass
class LanguageModelConfig:
    """Sizes and options of a recurrent language model."""

    cell: str = "lstm"
    """A registered cell name (``rnnkit.cells.CELLS``)."""
    strategy: str = "auto"
    """A registered strategy name (``rnnkit.strategies.STRATEGIES``)."""
    embedding_size: int = 64
    """Features of the token embedding."""
    hidden_size: int = 512
    """Hidden size H of every recurrent layer."""
    num_layers: int = 1
    """Recurrent layers stacked."""
    dropout: float = 0.2
    """Dropout on the embeddings, between layers and before the head."""
    tie_weights: bool = False
    """Share the embedding matrix with the output head (needs output size == embedding_size)."""
    proj_size: int = 0
    """LSTM only: project h_t to this size (0: no projection)."""
    peephole: bool = False
    """LSTM only: peephole connections."""
    layer_norm: bool = False
    """LSTM only: layer normalization of the gates and the cell."""
    forget_bias: float | None = None
    """LSTM only: initial forget-gate bias (None: torch's uniform initialization)."""
    input_dropout: float = 0.0
    """Variational dropout on each cell's inputs (runs the sequential strategy in training)."""
    hidden_dropout: float = 0.0
    """Variational dropout on the recurrent input h_{t-1} (sequential in training)."""
    weight_dropout: float = 0.0
    """DropConnect on the recurrent weights (sequential in training)."""
    zoneout: float = 0.0
    """Zoneout probability of the state units (always sequential)."""

    def __post_init__(self) -> None:
        """Range and name checks, so a bad value fails when the config is read, not mid-build."""
        check_names_and_options(self.cell, self.strategy, self.cell_options())
        for name in ("embedding_size", "hidden_size", "num_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def cell_options(self) -> dict[str, object]:
        """The cell options set away from their defaults."""
        return {
            field.name: getattr(self, field.name)
            for field in fields(self)
            if field.name in CELL_OPTION_DEFAULTS
            and getattr(self, field.name) != CELL_OPTION_DEFAULTS[field.name]
        }


class LanguageModel(nn.Module):
    """Embedding, ``rnnkit.nn.Recurrent``, dropout and a linear head over ``vocabulary_size``.

    ``forward(tokens (B, T), state=None) -> (logits (B, T, V), final_state)``; the state is the
    Recurrent's tuple of one NamedTuple per layer.
    """

    def __init__(self, config: LanguageModelConfig, vocabulary_size: int) -> None:
        super().__init__()
        self.config = config
        self.vocabulary_size = vocabulary_size
        self.embedding = nn.Embedding(vocabulary_size, config.embedding_size)
        self.recurrent = Recurrent(
            config.cell,
            config.embedding_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            strategy=config.strategy,
            **config.cell_options(),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.recurrent.output_size, vocabulary_size)
        if config.tie_weights:
            if self.recurrent.output_size != config.embedding_size:
                raise ValueError(
                    "tie_weights needs the recurrent output size "
                    f"({self.recurrent.output_size}) to equal embedding_size "
                    f"({config.embedding_size}); set model.embedding_size to it, or "
                    "model.proj_size for an LSTM"
                )
            self.head.weight = self.embedding.weight

    def forward(
        self, tokens: Tensor, state: Sequence[State] | None = None
    ) -> tuple[Tensor, tuple[State, ...]]:
        """``tokens (B, T)`` int64 -> ``logits (B, T, V)`` and the final state per layer."""
        embedded = self.dropout(self.embedding(tokens))  # (B, T, E)
        outputs, final_state = self.recurrent(embedded, state)  # (B, T, O)
        return self.head(self.dropout(outputs)), final_state

    def num_parameters(self) -> int:
        """Trainable parameters, shared ones counted once."""
        return sum(parameter.numel() for parameter in self.parameters() if parameter.requires_grad)


def detach_state(state: Sequence[State]) -> tuple[State, ...]:
    """Cut the graph behind a carried state: detach every tensor of every layer's NamedTuple."""
    return tuple(type(layer)(*(field.detach() for field in layer)) for layer in state)
