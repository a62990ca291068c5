"""Encoder-decoder with attention (Sutskever et al. 2014, https://arxiv.org/abs/1409.3215;
Bahdanau et al. 2015, https://arxiv.org/abs/1409.0473; Luong et al. 2015,
https://arxiv.org/abs/1508.04025), over any registered cell.

Encoder (``encoder.hidden_size`` per direction; bidirectional outputs have twice that, K):

    k_1..k_S, final = Encoder(dropout(E_src[x_1..x_S]), lengths)        k: (B, S, K)

Bridge: the encoder's final state (top layer, both directions, every field, side by side) maps to
every field of every decoder layer's initial state, ``s_0 = tanh(W z + b)`` split by field.

Decoder, Luong style (attend with the new output; input feeding, h~_0 = 0):

    h_t, s_t = Decoder([E_tgt[y_{t-1}]; h~_{t-1}], s_{t-1})     (without input feeding: E_tgt[y])
    c_t, a_t = Attention(h_t, k, mask)
    h~_t     = tanh(W_c [h_t; c_t])

Bahdanau style (attend with the previous output h_{t-1}, h_0 bridged; the context is an input):

    c_t, a_t = Attention(h_{t-1}, k, mask)
    h_t, s_t = Decoder([E_tgt[y_{t-1}]; c_t], s_{t-1})
    h~_t     = tanh(W_c [h_t; c_t])

and in both ``p(y_t | y_<t, x) = softmax(W_o dropout(h~_t) + b_o)``. Without attention
``h~_t = tanh(W_c h_t)``. Padded source positions get exactly zero attention. Teacher forcing
(``forward``) and ``decoder_step`` share the one-step code, so they compute the same logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import torch
from torch import Tensor, nn

from rnnkit.cells import Cell, State
from rnnkit.decoding.search import SearchDecoding
from rnnkit.models.attention import ATTENTION_KINDS, Attention
from rnnkit.models.depth.config import DepthConfig
from rnnkit.models.recurrent_config import RecurrentConfig, check_range
from rnnkit.nn import Recurrent
from rnnkit.strategies.validation import check_lengths, length_mask

if TYPE_CHECKING:
    from rnnkit.models.depth.universal_encoder_decoder import TransformerSeq2Seq

ATTENTION_STYLES = ("luong", "bahdanau")
MODEL_KINDS = ("recurrent", "transformer", "universal")
"""``kind``: this module's encoder-decoder, or the attention-only ones of
``rnnkit.models.depth.universal_encoder_decoder``."""


@dataclass
class TransformerSizes:
    """``kind`` transformer or universal: the blocks' sizes (the recurrent fields are unused)."""

    model_size: int = 64
    """Features of the embeddings and of the residual stream."""
    num_heads: int = 4
    """Attention heads (self- and cross-attention)."""
    mlp_expansion: int = 4
    """Hidden features of the MLP per model feature."""
    num_layers: int = 1
    """transformer: distinct blocks per side (universal: always one shared block)."""


def default_encoder() -> RecurrentConfig:
    """One bidirectional LSTM layer of 64 per direction (128 features per source token)."""
    return RecurrentConfig(cell="lstm", hidden_size=64, bidirectional=True, dropout=0.1)


def default_decoder() -> RecurrentConfig:
    """One LSTM layer of 128."""
    return RecurrentConfig(cell="lstm", hidden_size=128, dropout=0.1)


@dataclass
class Seq2SeqConfig:
    """Sizes and options of an encoder-decoder."""

    kind: str = "recurrent"
    """recurrent (the cells below, with attention), transformer (``transformer.num_layers``
    blocks per side) or universal (Universal Transformer: one shared encoder and decoder block,
    up to ``depth.max_steps`` steps with ACT; ``depth.recursion`` is not read)."""
    transformer: TransformerSizes = field(default_factory=TransformerSizes)
    """kind transformer or universal: sizes of the blocks."""
    depth: DepthConfig = field(default_factory=DepthConfig)
    """kind universal: ``max_steps``, ``act``, ``ponder_weight``, ``epsilon``,
    ``halting_bias``."""

    embedding_size: int = 32
    """Features of the source and target token embeddings."""
    encoder: RecurrentConfig = field(default_factory=default_encoder)
    """The encoder (``--model.encoder.cell=gru``, ``--model.encoder.options.num_heads=2``);
    hidden size per direction, bidirectional by default."""
    decoder: RecurrentConfig = field(default_factory=default_decoder)
    """The decoder, one direction; its hidden size is also the attentional output's. The
    bridge maps the encoder's final state to it whatever the two cells and sizes."""
    attention: str = "general"
    """additive, dot, general, concat (``rnnkit.models.attention``) or none."""
    attention_style: str = "luong"
    """luong (attend after the step) or bahdanau (attend before it, with the last output);
    ignored without attention."""
    input_feeding: bool = True
    """Luong style: feed h~_{t-1} to the decoder with the token (else the decoder runs all
    target steps at once in teacher forcing)."""
    bridge: bool = True
    """Map the encoder's final state to the decoder's initial state (else zeros)."""
    dropout: float = 0.1
    """Dropout on the embeddings and before the output layer (``encoder.dropout`` and
    ``decoder.dropout`` are between layers)."""

    def __post_init__(self) -> None:
        """Name and range checks, so a bad value fails when the config is read, not mid-build."""
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind: expected one of {MODEL_KINDS}, got {self.kind!r}")
        if self.attention not in (*ATTENTION_KINDS, "none"):
            raise ValueError(
                f"attention: expected one of {(*ATTENTION_KINDS, 'none')}, got {self.attention!r}"
            )
        if self.attention_style not in ATTENTION_STYLES:
            raise ValueError(
                f"attention_style: expected one of {ATTENTION_STYLES}, got {self.attention_style!r}"
            )
        value = self.embedding_size
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"embedding_size: expected a positive int, got {value!r}")
        if self.decoder.bidirectional:
            raise ValueError("decoder.bidirectional: a decoder runs forwards only, got true")
        check_range("dropout", self.dropout, 0.0, 1.0)


class DecoderState(NamedTuple):
    """What the decoder carries between steps; every field has the N rows as dim 0."""

    recurrent: tuple[State, ...]  # one state per decoder layer
    feed: Tensor  # (N, F): h~_{t-1} (luong) or h_{t-1} (bahdanau)
    keys: Tensor  # (N, S, H) encoder outputs
    prepared: Tensor | None  # (N, S, A) attention.prepare(keys), None without attention
    mask: Tensor  # (N, S) True at real source positions


class Seq2SeqOutput(NamedTuple):
    logits: Tensor  # (B, L, V)
    attention: Tensor | None  # (B, L, S) weights, None without attention


class Bridge(nn.Module):
    """``tanh(W z + b)`` from the encoder's top-layer final states to the decoder's initial
    states (every field of every layer) and, when ``feed_size``, the initial feed.

    Field layouts are read off each cell's ``initial_state``; complex fields are mapped as
    (real, imaginary) pairs."""

    def __init__(self, encoder: Recurrent, decoder: Recurrent, feed_size: int) -> None:
        super().__init__()
        top = encoder.layer_cells()[-encoder.num_directions :]
        self.layouts = [_layout(cell) for cell in decoder.layer_cells()]
        input_size = sum(_width(layout) for layout in map(_layout, top))
        output_size = sum(_width(layout) for layout in self.layouts) + feed_size
        self.feed_size = feed_size
        self.linear = nn.Linear(input_size, output_size)

    def forward(self, final_states: tuple[State, ...], num_directions: int):
        """``(decoder states, initial feed (B, feed_size) or None)``."""
        top = final_states[-num_directions:]
        features = torch.cat([_flatten(field) for state in top for field in state], dim=1)
        values = torch.tanh(self.linear(features))
        states, start = [], 0
        for state_type, fields in self.layouts:
            parts = []
            for shape, is_complex in fields:
                width = _field_width(shape, is_complex)
                parts.append(_unflatten(values[:, start : start + width], shape, is_complex))
                start += width
            states.append(state_type(*parts))
        feed = values[:, start:] if self.feed_size else None
        return tuple(states), feed


class Seq2Seq(SearchDecoding, nn.Module):
    """Encoder-decoder over ``source_vocabulary_size`` and ``target_vocabulary_size`` tokens."""

    def __init__(
        self, config: Seq2SeqConfig, source_vocabulary_size: int, target_vocabulary_size: int
    ) -> None:
        super().__init__()
        _check_config(config, source_vocabulary_size, target_vocabulary_size)
        self.config = config
        hidden, embedding = config.decoder.hidden_size, config.embedding_size
        self.uses_attention = config.attention != "none"
        self.bahdanau = self.uses_attention and config.attention_style == "bahdanau"
        self.feeds_input = self.bahdanau or config.input_feeding
        self.source_embedding = nn.Embedding(source_vocabulary_size, embedding)
        self.target_embedding = nn.Embedding(target_vocabulary_size, embedding)
        self.encoder = config.encoder.build(embedding)
        fed = self.encoder.output_size if self.bahdanau else hidden if self.feeds_input else 0
        self.decoder = config.decoder.build(embedding + fed)
        output_size = self.decoder.output_size
        self.feed_size = output_size if self.bahdanau else hidden
        self.attention = (
            Attention(config.attention, output_size, self.encoder.output_size)
            if self.uses_attention
            else None
        )
        context_size = self.encoder.output_size if self.uses_attention else 0
        self.combine = nn.Linear(output_size + context_size, hidden, bias=False)  # W_c
        self.output = nn.Linear(hidden, target_vocabulary_size)  # W_o, b_o
        self.dropout = nn.Dropout(config.dropout)
        bridged_feed = self.feed_size if self.bahdanau else 0
        self.bridge = Bridge(self.encoder, self.decoder, bridged_feed) if config.bridge else None

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def encode(self, source: Tensor, source_lengths: Tensor) -> DecoderState:
        """The decoder's initial state for ``source (B, S)`` with ``source_lengths (B,)``."""
        source_lengths = _check_source(source, source_lengths)
        embedded = self.dropout(self.source_embedding(source))  # (B, S, E)
        keys, final_states = self.encoder(embedded, lengths=source_lengths)  # (B, S, H)
        mask = length_mask(source_lengths, source.shape[1], source.device)  # (B, S)
        assert mask is not None  # source_lengths is checked, not None
        batch = source.shape[0]
        feed = keys.new_zeros(batch, self.feed_size)
        if self.bridge is None:
            recurrent = tuple(
                cell.initial_state(batch, device=keys.device) for cell in self.decoder.layer_cells()
            )
        else:
            recurrent, bridged_feed = self.bridge(final_states, self.encoder.num_directions)
            feed = feed if bridged_feed is None else bridged_feed
        prepared = None if self.attention is None else self.attention.prepare(keys)
        return DecoderState(recurrent, feed, keys, prepared, mask)

    def forward(
        self, source: Tensor, source_lengths: Tensor, target_input: Tensor
    ) -> Seq2SeqOutput:
        """Teacher forcing: ``source (B, S)``, ``source_lengths (B,)`` (CPU int64) and
        ``target_input (B, L)`` (bos + target) -> logits ``(B, L, V)`` and attention
        weights ``(B, L, S)``."""
        if target_input.dim() != 2 or target_input.shape[0] != source.shape[0]:
            raise ValueError(
                f"target_input: expected (batch, steps) with batch {source.shape[0]}, "
                f"got {tuple(target_input.shape)}"
            )
        state = self.encode(source, source_lengths)
        embedded = self.dropout(self.target_embedding(target_input))  # (B, L, E)
        if not self.feeds_input:
            attentional, weights = self._all_steps(embedded, state)
            return Seq2SeqOutput(self.output(self.dropout(attentional)), weights)
        outputs: list[Tensor] = []
        step_weights: list[Tensor] = []
        for t in range(embedded.shape[1]):
            attentional, step_weight, state = self._step(embedded[:, t], state)
            outputs.append(attentional)
            if step_weight is not None:  # None without attention
                step_weights.append(step_weight)
        weights = None if self.attention is None else torch.stack(step_weights, dim=1)
        logits = self.output(self.dropout(torch.stack(outputs, dim=1)))  # (B, L, V)
        return Seq2SeqOutput(logits, weights)

    def decoder_step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """One decoder step for ``rnnkit.decoding.search``: ``tokens (N,)`` -> log-probabilities
        ``(N, V)`` and the new state."""
        embedded = self.dropout(self.target_embedding(tokens.to(state.keys.device)))
        attentional, _, state = self._step(embedded, state)
        return torch.log_softmax(self.output(self.dropout(attentional)), dim=-1), state

    def _step(
        self, embedded: Tensor, state: DecoderState
    ) -> tuple[Tensor, Tensor | None, DecoderState]:
        """One step from the embedded previous token ``(N, E)``: ``h~_t (N, H)``, the attention
        weights ``(N, S)`` and the new state."""
        weights = context = None
        if self.bahdanau:
            context, weights = self._attend(state.feed, state)
            inputs = torch.cat([embedded, context], dim=-1)
        elif self.feeds_input:
            inputs = torch.cat([embedded, state.feed], dim=-1)
        else:
            inputs = embedded
        if self.training:  # a one-step forward draws fresh per-sequence masks (begin_sequence)
            outputs, recurrent = self.decoder(inputs.unsqueeze(1), state.recurrent)
            output = outputs[:, 0]  # (N, O)
        else:  # decoding: one layer step, no strategy dispatch nor validation over time
            output, recurrent = self.decoder.step(inputs, state.recurrent)  # (N, O)
        if self.uses_attention and not self.bahdanau:
            context, weights = self._attend(output, state)
        combined = output if context is None else torch.cat([output, context], dim=-1)
        attentional = torch.tanh(self.combine(combined))
        feed = output if self.bahdanau else attentional
        return attentional, weights, state._replace(recurrent=recurrent, feed=feed)

    def _all_steps(self, embedded: Tensor, state: DecoderState) -> tuple[Tensor, Tensor | None]:
        """Luong style without input feeding: every target step at once, ``(B, L, H)``."""
        outputs, _ = self.decoder(embedded, state.recurrent)  # (B, L, O)
        if self.attention is None:
            return torch.tanh(self.combine(outputs)), None
        context, weights = self._attend(outputs, state)  # (B, L, H), (B, L, S)
        return torch.tanh(self.combine(torch.cat([outputs, context], dim=-1))), weights

    def _attend(self, query: Tensor, state: DecoderState) -> tuple[Tensor, Tensor]:
        assert self.attention is not None  # called only when uses_attention
        return self.attention(query, state.keys, state.mask, prepared=state.prepared)

    def describe(self) -> str:
        config = self.config
        encoder, decoder = config.encoder, config.decoder
        direction = "bidirectional " if encoder.bidirectional else ""
        return (
            f"model: {self.num_parameters():,} parameters, encoder {encoder.num_layers} x "
            f"{direction}{encoder.cell} (hidden {encoder.hidden_size}), decoder "
            f"{decoder.num_layers} x {decoder.cell} (hidden {decoder.hidden_size}), attention "
            f"{config.attention} ({config.attention_style})"
        )


def build_seq2seq(
    config: Seq2SeqConfig, source_vocabulary_size: int, target_vocabulary_size: int
) -> Seq2SeqModel:
    """The encoder-decoder of ``config.kind``: a ``Seq2Seq`` or a ``TransformerSeq2Seq``."""
    if config.kind == "recurrent":
        return Seq2Seq(config, source_vocabulary_size, target_vocabulary_size)
    from rnnkit.models.depth.universal_encoder_decoder import TransformerSeq2Seq

    sizes = config.transformer
    return TransformerSeq2Seq(
        config.kind, source_vocabulary_size, target_vocabulary_size, config.depth,
        sizes.model_size, sizes.num_heads, sizes.mlp_expansion, sizes.num_layers,
    )  # fmt: skip


Seq2SeqModel: TypeAlias = "Seq2Seq | TransformerSeq2Seq"


def _layout(cell: Cell) -> tuple[type, list[tuple[tuple[int, ...], bool]]]:
    """A cell's state type and, per field, its feature shape and whether it is complex."""
    template = cell.initial_state(1)
    return type(template), [(tuple(field.shape[1:]), field.is_complex()) for field in template]


def _width(layout: tuple[type, list[tuple[tuple[int, ...], bool]]]) -> int:
    return sum(_field_width(shape, is_complex) for shape, is_complex in layout[1])


def _field_width(shape: tuple[int, ...], is_complex: bool) -> int:
    return int(torch.Size(shape).numel()) * (2 if is_complex else 1)


def _flatten(field: Tensor) -> Tensor:
    """``(B, ...)`` -> ``(B, features)``, complex numbers as (real, imaginary) pairs."""
    return (torch.view_as_real(field) if field.is_complex() else field).reshape(len(field), -1)


def _unflatten(values: Tensor, shape: tuple[int, ...], is_complex: bool) -> Tensor:
    if is_complex:
        return torch.view_as_complex(values.reshape(len(values), *shape, 2).contiguous())
    return values.reshape(len(values), *shape)


def _check_source(source: Tensor, source_lengths: Any) -> Tensor:
    if source.dim() != 2 or source.dtype != torch.long:
        raise ValueError(
            f"source: expected int64 tokens (batch, steps), got {source.dtype} "
            f"{tuple(source.shape)}"
        )
    lengths = torch.as_tensor(source_lengths)
    if lengths.dtype != torch.long:
        raise ValueError(f"source_lengths must be int64, got {lengths.dtype}")
    try:
        return check_lengths(lengths, source.shape[0], source.shape[1]).cpu()
    except ValueError as error:  # the check names its own argument; say which one it is here
        raise ValueError(f"source_lengths: {error}") from None


def _check_config(config: Seq2SeqConfig, source_size: int, target_size: int) -> None:
    config.__post_init__()  # again: fields may have been assigned since construction
    for name, value in (
        ("source_vocabulary_size", source_size),
        ("target_vocabulary_size", target_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
