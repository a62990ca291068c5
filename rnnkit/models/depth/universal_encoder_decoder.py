"""Universal Transformer, encoder-decoder form (Dehghani et al. 2019,
https://arxiv.org/abs/1807.03819, figure 2): a shared encoder block and a shared decoder block,
each applied in depth with per-position ACT (``rnnkit.models.depth.universal``).

Source ``x (B, S)``, target inputs ``y (B, T)`` (teacher forcing: the targets shifted right):

    encoder block:  z = z + SelfAttention(norm z, source mask)         every source position
                    z = z + MLP(norm z)
    decoder block:  h = h + CausalSelfAttention(norm h)               rotary positions, KV cache
                    h = h + CrossAttention(norm h, Z, source mask)     Z: the encoder's output
                    h = h + MLP(norm h)
    Z      = UT_enc(E_src[x])           up to ``max_steps`` steps, ACT over the real positions
    H      = UT_dec(E_tgt[y]; Z)        the decoder consumes the final encoder representations
    logits = W_o norm(H)
    loss   = cross-entropy + tau (mean ponder cost of the encoder + of the decoder)

The attention is multi-head scaled dot-product; padded source positions get zero weight (a
score of -inf). Both depth recursions add the paper's position + timestep sinusoids at each step
and copy a halted position's state. ``decoder_step`` decodes one target token at a time from
``encode``'s memory and gives the teacher-forced logits.

With ``num_layers`` N > 1 and one depth step without ACT (``DepthConfig(max_steps=1,
act=False)``) the same class is a fixed-depth transformer: N distinct blocks per side, each once.
``TransformerSeq2Seq`` gives either form the interface of the recurrent
``rnnkit.models.seq2seq.Seq2Seq`` for the seq2seq tasks (``rnnkit train add --model.kind=...``):
teacher forcing, greedy decoding and beam search (the memory travels in the decoding state, so
beam search reorders it with the rows).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from rnnkit.decoding.search import SearchDecoding
from rnnkit.models.causal_attention import CausalSelfAttention
from rnnkit.models.depth.config import DepthConfig
from rnnkit.models.depth.universal import UniversalState, UniversalTransformer, length_mask


class MultiHeadAttention(nn.Module):
    """Queries ``(B, T, D)`` attend over keys/values ``(B, S, D)``; ``mask (B, S)`` False at
    padded key positions (not causal)."""

    def __init__(self, model_size: int, num_heads: int) -> None:
        super().__init__()
        if model_size % num_heads:
            raise ValueError(f"num_heads: expected a divisor of {model_size}, got {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(model_size, model_size)
        self.key_value = nn.Linear(model_size, 2 * model_size)
        self.output = nn.Linear(model_size, model_size)

    def forward(self, queries: Tensor, memory: Tensor, mask: Tensor) -> Tensor:
        batch, length, size = queries.shape
        heads = self.num_heads
        query = self.query(queries).view(batch, length, heads, -1).transpose(1, 2)  # (B,h,T,d)
        key, value = self.key_value(memory).view(batch, -1, 2, heads, size // heads).unbind(2)
        key, value = key.transpose(1, 2), value.transpose(1, 2)  # (B, h, S, d)
        allowed = mask[:, None, None, :]  # (B, 1, 1, S)
        attended = functional.scaled_dot_product_attention(query, key, value, attn_mask=allowed)
        return self.output(attended.transpose(1, 2).reshape(batch, length, size))


def mlp(size: int, expansion: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(size, expansion * size), nn.GELU(), nn.Linear(expansion * size, size)
    )


class EncoderBlock(nn.Module):
    """Pre-norm self-attention over the real source positions, then the MLP."""

    def __init__(self, model_size: int, num_heads: int, expansion: int) -> None:
        super().__init__()
        self.attention = MultiHeadAttention(model_size, num_heads)
        self.attention_norm, self.mlp_norm = nn.LayerNorm(model_size), nn.LayerNorm(model_size)
        self.mlp = mlp(model_size, expansion)

    def forward(self, inputs: Tensor, state: Any, lengths: Tensor | None) -> tuple[Tensor, None]:
        """``(B, S, D)`` -> ``(B, S, D)``; no state (the encoder sees the whole source)."""
        batch, length, _ = inputs.shape
        mask = length_mask(lengths, batch, length, inputs.device)
        normed = self.attention_norm(inputs)
        hidden = inputs + self.attention(normed, normed, mask)
        return hidden + self.mlp(self.mlp_norm(hidden)), None


class DecoderBlock(nn.Module):
    """Pre-norm causal self-attention (KV cache), cross-attention over the memory, the MLP."""

    def __init__(self, model_size: int, num_heads: int, expansion: int) -> None:
        super().__init__()
        self.self_attention = CausalSelfAttention(model_size, num_heads)
        self.cross_attention = MultiHeadAttention(model_size, num_heads)
        self.norms = nn.ModuleList(nn.LayerNorm(model_size) for _ in range(3))
        self.mlp = mlp(model_size, expansion)

    def forward(
        self, inputs: Tensor, state: Any, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, Any]:
        """``(B, T, D)`` after the cached positions -> ``(B, T, D)`` and the extended cache."""
        mixed, cache = self.self_attention(self.norms[0](inputs), state)
        hidden = inputs + mixed
        hidden = hidden + self.cross_attention(self.norms[1](hidden), memory, mask)
        return hidden + self.mlp(self.norms[2](hidden)), cache


class BoundDecoderBlock:
    """A decoder block with its memory fixed, called as a depth recursion calls a block."""

    def __init__(self, block: nn.Module, memory: Tensor, mask: Tensor) -> None:
        self.block, self.memory, self.mask = block, memory, mask

    def __call__(self, inputs: Tensor, state: Any, lengths: Tensor | None) -> tuple[Tensor, Any]:
        return self.block(inputs, state, self.memory, self.mask)


class Memory(NamedTuple):
    """The encoder's output ``(B, S, D)`` and the source mask ``(B, S)`` (True: real)."""

    outputs: Tensor
    mask: Tensor


class UniversalEncoderDecoder(nn.Module):
    """Source ids ``(B, S)`` and target input ids ``(B, T)`` -> logits ``(B, T, V_target)``.

    Args:
        source_vocabulary, target_vocabulary: token ids of each side.
        depth: ``max_steps``, ``act`` and the ACT options, for both recursions.
        model_size, num_heads, mlp_expansion: the blocks' sizes.
    """

    def __init__(
        self,
        source_vocabulary: int,
        target_vocabulary: int,
        depth: DepthConfig,
        model_size: int = 64,
        num_heads: int = 4,
        mlp_expansion: int = 4,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        self.source_embedding = nn.Embedding(source_vocabulary, model_size)
        self.target_embedding = nn.Embedding(target_vocabulary, model_size)
        self.encoder_blocks = nn.ModuleList(
            EncoderBlock(model_size, num_heads, mlp_expansion) for _ in range(num_layers)
        )
        self.decoder_blocks = nn.ModuleList(
            DecoderBlock(model_size, num_heads, mlp_expansion) for _ in range(num_layers)
        )
        self.encoder_depth = UniversalTransformer(depth, model_size)
        self.decoder_depth = UniversalTransformer(depth, model_size)
        self.encoder_norm, self.final_norm = nn.LayerNorm(model_size), nn.LayerNorm(model_size)
        self.head = nn.Linear(model_size, target_vocabulary)

    def encode(self, source: Tensor, source_lengths: Tensor | None = None) -> Memory:
        """``source (B, S)`` -> the memory the decoder attends over."""
        hidden, _ = self.encoder_depth(
            list(self.encoder_blocks), self.source_embedding(source), None, source_lengths
        )
        batch, length = source.shape
        return Memory(
            self.encoder_norm(hidden), length_mask(source_lengths, batch, length, source.device)
        )

    def decode(
        self, targets: Tensor, memory: Memory, state: UniversalState | None = None
    ) -> tuple[Tensor, UniversalState]:
        """Target input ids ``(B, T)`` after ``state``'s -> logits ``(B, T, V)``, new state."""
        blocks = [
            BoundDecoderBlock(block, memory.outputs, memory.mask) for block in self.decoder_blocks
        ]
        hidden, new_state = self.decoder_depth(blocks, self.target_embedding(targets), state, None)
        return self.head(self.final_norm(hidden)), new_state

    def forward(
        self, source: Tensor, targets: Tensor, source_lengths: Tensor | None = None
    ) -> Tensor:
        """Teacher forcing: logits ``(B, T, V)`` for target inputs ``(B, T)``."""
        logits, _ = self.decode(targets, self.encode(source, source_lengths))
        return logits

    def decoder_step(
        self, tokens: Tensor, memory: Memory, state: UniversalState | None
    ) -> tuple[Tensor, UniversalState]:
        """One target token per row ``(B,)`` -> logits ``(B, V)`` and the new state."""
        logits, new_state = self.decode(tokens[:, None], memory, state)
        return logits[:, 0], new_state

    def auxiliary_loss(self) -> Tensor | None:
        """``tau`` times the mean ponder costs of the latest encode and decode (None without
        ACT)."""
        losses = [
            loss
            for loss in (self.encoder_depth.auxiliary_loss(), self.decoder_depth.auxiliary_loss())
            if loss is not None
        ]
        return torch.stack(losses).sum() if losses else None


class EncoderDecoderOutput(NamedTuple):
    """As ``Seq2SeqOutput``: logits ``(B, L, V)``; no attention weights to plot."""

    logits: Tensor
    attention: Tensor | None


class DecodingState(NamedTuple):
    """What ``decoder_step`` carries: the memory (rows reordered with the beams) and the
    decoder's depth state (None before the first token)."""

    memory: Memory
    decoder: UniversalState | None


class TransformerSeq2Seq(SearchDecoding, nn.Module):
    """A ``UniversalEncoderDecoder`` with the seq2seq tasks' interface (``Seq2Seq``'s):
    ``kind`` ``transformer`` (``num_layers`` blocks per side, once each) or ``universal`` (one
    shared block per side, up to ``depth.max_steps`` steps, ACT per ``depth.act``)."""

    attention = None  # no attention weights to plot

    def __init__(
        self,
        kind: str,
        source_vocabulary: int,
        target_vocabulary: int,
        depth: DepthConfig,
        model_size: int,
        num_heads: int,
        mlp_expansion: int,
        num_layers: int,
    ) -> None:
        super().__init__()
        if kind not in ("transformer", "universal"):
            raise ValueError(f"kind: expected transformer or universal, got {kind!r}")
        self.kind, self.num_layers = kind, num_layers if kind == "transformer" else 1
        if kind == "transformer":
            depth = DepthConfig(max_steps=1, act=False)
        self.depth = depth
        self.network = UniversalEncoderDecoder(
            source_vocabulary, target_vocabulary, depth, model_size, num_heads, mlp_expansion,
            self.num_layers,
        )  # fmt: skip

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def forward(
        self, source: Tensor, source_lengths: Tensor, target_input: Tensor
    ) -> EncoderDecoderOutput:
        """Teacher forcing: ``source (B, S)``, ``source_lengths (B,)``, ``target_input (B, L)``
        -> logits ``(B, L, V)``."""
        return EncoderDecoderOutput(self.network(source, target_input, source_lengths), None)

    def encode(self, source: Tensor, source_lengths: Tensor) -> DecodingState:
        return DecodingState(self.network.encode(source, source_lengths), None)

    def decoder_step(self, tokens: Tensor, state: DecodingState) -> tuple[Tensor, DecodingState]:
        """``tokens (N,)`` -> log-probabilities ``(N, V)`` and the new state."""
        tokens = tokens.to(state.memory.outputs.device)
        logits, decoder = self.network.decoder_step(tokens, state.memory, state.decoder)
        return torch.log_softmax(logits, dim=-1), DecodingState(state.memory, decoder)

    def auxiliary_loss(self) -> Tensor | None:
        """ACT's ponder cost of the latest forward (None for the transformer)."""
        return self.network.auxiliary_loss() if self.kind == "universal" else None

    def ponder_steps(self) -> tuple[Tensor, Tensor] | None:
        """Steps N of the latest forward per source ``(B, S)`` and target ``(B, L)`` position
        (0 at padded source positions); None for the transformer."""
        encoder, decoder = self.network.encoder_depth, self.network.decoder_depth
        if self.kind != "universal" or encoder.latest_steps is None:
            return None
        assert decoder.latest_steps is not None
        return encoder.latest_steps, decoder.latest_steps

    def describe(self) -> str:
        network = self.network
        size = network.head.in_features
        if self.kind == "transformer":
            shape = f"transformer, {self.num_layers} encoder + {self.num_layers} decoder blocks"
        else:
            halting = "ACT" if self.depth.act else "no ACT"
            shape = (
                f"universal transformer, 1 shared encoder + 1 shared decoder block, up to "
                f"{self.depth.max_steps} steps ({halting})"
            )
        return f"model: {self.num_parameters():,} parameters, {shape}, width {size}"
