"""The configuration of the benchmark tasks' sequence model (``sequence_model.py``): width,
depth, the mixer of each block and their options, checked when built."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from rnnkit.cells import CELLS
from rnnkit.models.depth import DepthConfig
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.titans_mag import MEMORY_CELL

MIXERS = ("recurrent", "attention", "titans_mag")


def default_recurrent() -> RecurrentConfig:
    """The recurrent mixer of the tasks: one LSTM layer as wide as the default model."""
    return RecurrentConfig(cell="lstm", hidden_size=64)


@dataclass
class SequenceModelConfig:
    """Width, depth and mixers of the benchmark tasks' sequence model."""

    model_size: int = 64
    """Features D of the residual stream."""
    num_blocks: int = 2
    """Residual blocks, each a mixer and an MLP."""
    mixer: str = "recurrent"
    """``recurrent`` (the cell of ``recurrent``) or ``attention`` in every block. A registered
    cell's name is read as ``recurrent`` with that cell (``mixer=gla`` is
    ``mixer=recurrent, recurrent.cell=gla``), so one option names any mixer; the command line's
    ``--model.cell=NAME`` sets it."""
    recurrent: RecurrentConfig = field(default_factory=default_recurrent)
    """The recurrent mixer: cell, strategy, hidden size, layers per block, the cell's options
    (``--model.recurrent.cell=gla --model.recurrent.options.num_heads=4``)."""
    attention_every: int = 0
    """With ``mixer=recurrent``, every k-th block is attention instead (0: none)."""
    short_convolution: int = 0
    """Width K of a causal depthwise convolution (then SiLU) on each recurrent mixer's input,
    Zoology's short convolution (``rnnkit.models.short_convolution``); 0: none. Linear
    recurrences need it for associative recall (fla's layers use K = 4)."""
    num_heads: int = 4
    """Heads of the attention mixer."""
    rotary_base: float = 10000.0
    """Base of the rotary position frequencies of attention."""
    attention_window: int = 0
    """Positions each attention position attends to, itself included (0: all earlier ones):
    sliding-window attention, in attention blocks and in ``titans_mag``'s attention branch."""
    mlp_expansion: int = 4
    """Hidden features of each block's MLP, as a multiple of ``model_size``."""
    dropout: float = 0.0
    """Dropout on the mixer and MLP outputs before they are added to the stream."""
    depth: DepthConfig = field(default_factory=DepthConfig)
    """Recurrence in depth over the blocks: ``--model.depth.recursion=universal`` runs them as
    one shared unit up to ``depth.max_steps`` times with ACT (``rnnkit.models.depth``)."""

    @staticmethod
    def prepare_data(data: dict[str, Any]) -> dict[str, Any]:
        """A cell's name as ``mixer`` moves into ``recurrent.cell`` before the recurrent config
        checks its options (``--model.cell=mingru --model.recurrent.options.X=...`` are then
        checked against minGRU, not the default cell)."""
        mixer = data.get("mixer")
        if mixer == "titans_mag" and isinstance(data.get("recurrent"), dict | None):
            data["recurrent"] = {**(data.get("recurrent") or {}), "cell": MEMORY_CELL}
        if isinstance(mixer, str) and mixer not in MIXERS and mixer in CELLS:
            recurrent = data.get("recurrent")
            if recurrent is None or isinstance(recurrent, dict):
                data["recurrent"] = {**(recurrent or {}), "cell": mixer}
                data["mixer"] = "recurrent"
        return data

    def __post_init__(self) -> None:
        """Option checks; errors name the option, the value and what is allowed."""
        for name in ("model_size", "num_blocks", "num_heads", "mlp_expansion"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        if self.mixer not in MIXERS:
            if self.mixer not in CELLS:
                raise ValueError(
                    f"mixer: expected {', '.join(MIXERS)} or a registered cell "
                    f"({', '.join(sorted(CELLS))}), got {self.mixer!r}"
                )
            self.recurrent = replace(self.recurrent, cell=self.mixer)
            self.mixer = "recurrent"
        if self.mixer == "titans_mag" and self.recurrent.cell != MEMORY_CELL:
            self.recurrent = replace(self.recurrent, cell=MEMORY_CELL)  # its memory branch
        if self.attention_every < 0:
            raise ValueError(f"attention_every: expected 0 or more, got {self.attention_every}")
        if self.attention_window < 0:
            raise ValueError(f"attention_window: expected 0 or more, got {self.attention_window}")
        if self.short_convolution < 0 or self.short_convolution == 1:
            raise ValueError(
                f"short_convolution: expected 0 (none) or a width of 2 or more, got "
                f"{self.short_convolution}"
            )
        if self.mixer == "attention" and self.attention_every:
            raise ValueError(
                "attention_every: expected 0 with mixer='attention' (every block is attention), "
                f"got {self.attention_every}"
            )
        if self.recurrent.bidirectional:
            raise ValueError("recurrent.bidirectional: expected False (causal model), got True")
        if self.uses_attention() and (
            self.model_size % self.num_heads or (self.model_size // self.num_heads) % 2
        ):
            raise ValueError(
                "num_heads: expected a divisor of model_size leaving an even head size, got "
                f"num_heads={self.num_heads} for model_size={self.model_size}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected [0, 1), got {self.dropout}")
        if self.rotary_base <= 1.0:
            raise ValueError(f"rotary_base: expected more than 1, got {self.rotary_base}")

    def block_mixers(self) -> list[str]:
        """The mixer of each block: ``attention``, ``titans_mag`` or the recurrent cell's name."""
        return [
            "attention"
            if self.mixer == "attention"
            or (self.attention_every and (block + 1) % self.attention_every == 0)
            else ("titans_mag" if self.mixer == "titans_mag" else self.recurrent.cell)
            for block in range(self.num_blocks)
        ]

    def uses_attention(self) -> bool:
        """Whether any block is attention or has an attention branch."""
        return self.mixer in ("attention", "titans_mag") or (
            0 < self.attention_every <= self.num_blocks
        )
