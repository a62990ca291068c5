"""The sequence model of the benchmark tasks: pre-norm residual blocks around a mixer.

    x_0 = E[tokens]  or  W_in inputs                      (B, T, D)
    for each block b:
        x = x + dropout(mixer_b(norm(x)))                 recurrent cell or causal attention
        x = x + dropout(MLP_b(norm(x)))                   MLP(z) = W_2 gelu(W_1 z), 4D hidden
    outputs = head(norm(x))                               (B, T, output_size)

A recurrent mixer is ``recurrent.build(D)`` (any registered cell, any strategy), followed by a
linear map to D only when its output size differs from D. The attention mixer is
``CausalSelfAttention`` (rotary positions; a sliding window of ``attention_window`` positions
when set). ``mixer="titans_mag"`` is Titans' memory as a gate (``titans_mag.py``): the attention
gated by a memory branch, ``recurrent`` with the titans cell. ``mixer="attention"`` puts
attention in every block; ``attention_every=k`` makes every k-th block (the k-th, 2k-th, ...)
attention and the others the recurrent cell (or ``titans_mag``), a hybrid.

The state is a tuple of one entry per block: the ``Recurrent``'s tuple of per-layer states, or
the attention's ``KVCache``. Padding is on the right (``lengths``): the recurrent layers take the
lengths, and causal attention needs no mask for the real positions. After a forward with lengths
the KV caches hold all T positions, so continue decoding from a state only for equal lengths.

With ``depth.recursion`` set (``--model.depth.recursion=universal``: a Universal Transformer
with ACT), a depth recursion of ``rnnkit.models.depth`` runs the blocks in depth and owns the
state; its loss term (``auxiliary_loss``, ACT's ponder cost) goes into the task loss.

The options are ``SequenceModelConfig`` (``sequence_config.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from rnnkit.cells import State
from rnnkit.models.causal_attention import CausalSelfAttention, KVCache
from rnnkit.models.depth import DepthRecursion, build_depth
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.sequence_config import SequenceModelConfig
from rnnkit.models.short_convolution import ShortConvolution
from rnnkit.models.titans_mag import TitansGatedAttention

BlockState = tuple[State, ...] | KVCache


class RecurrentMixer(nn.Module):
    """``Recurrent`` over ``(B, T, D)``, mapped back to D when its output size differs; with
    ``short_convolution`` K > 0 a ``ShortConvolution`` on its input first, whose state
    ``(B, K - 1, D)`` is the last entry of the mixer's state tuple."""

    def __init__(self, config: RecurrentConfig, model_size: int, short_convolution: int = 0):
        super().__init__()
        self.convolution = (
            ShortConvolution(model_size, short_convolution) if short_convolution else None
        )
        self.recurrent = config.build(model_size)
        output_size = self.recurrent.output_size
        self.projection = (
            nn.Linear(output_size, model_size) if output_size != model_size else nn.Identity()
        )

    def forward(
        self, inputs: Tensor, state: Sequence[State] | None, lengths: Tensor | None
    ) -> tuple[Tensor, tuple[State, ...]]:
        """``(B, T, D)`` -> ``(B, T, D)`` and the final per-layer states (then the
        convolution's)."""
        if self.convolution is None:
            outputs, final_state = self.recurrent(inputs, state, lengths)
            assert isinstance(outputs, Tensor)  # padded inputs give padded outputs
            return self.projection(outputs), final_state
        layer_state, convolution_state = self._split(state)
        convolved, convolution_state = self.convolution(inputs, convolution_state, lengths)
        outputs, final_state = self.recurrent(convolved, layer_state, lengths)
        assert isinstance(outputs, Tensor)
        return self.projection(outputs), (*final_state, convolution_state)

    def step(
        self, inputs: Tensor, state: Sequence[State] | None
    ) -> tuple[Tensor, tuple[State, ...]]:
        """``(B, D)`` -> ``(B, D)`` and the new states, by ``Recurrent.step``."""
        if self.convolution is None:
            outputs, new_state = self.recurrent.step(inputs, state)
            return self.projection(outputs), new_state
        layer_state, convolution_state = self._split(state)
        convolved, convolution_state = self.convolution.step(inputs, convolution_state)
        outputs, new_state = self.recurrent.step(convolved, layer_state)
        return self.projection(outputs), (*new_state, convolution_state)

    def state_size(self) -> int:
        """Floats of state per sequence: every cell's state sizes (and the convolution's
        ``(K - 1) D``), summed."""
        cells = sum(sum(cell.state_sizes()) for cell in self.recurrent.layer_cells())
        if self.convolution is None:
            return cells
        return cells + (self.convolution.kernel_size - 1) * self.convolution.size

    def _split(self, state: Sequence[State] | None) -> tuple[tuple[State, ...] | None, Any]:
        """The per-layer states and the convolution's (the last entry)."""
        if state is None:
            return None, None
        return tuple(state[:-1]), state[-1]


class Block(nn.Module):
    """``x + mixer(norm(x))``, then ``x + MLP(norm(x))``."""

    def __init__(self, config: SequenceModelConfig, mixer: str) -> None:
        super().__init__()
        size = config.model_size
        self.mixer_name = mixer
        heads, base, window = config.num_heads, config.rotary_base, config.attention_window
        self.mixer: RecurrentMixer | CausalSelfAttention | TitansGatedAttention
        if mixer == "attention":
            self.mixer = CausalSelfAttention(size, heads, base, window)
        elif mixer == "titans_mag":
            self.mixer = TitansGatedAttention(config.recurrent, size, heads, base, window)
        else:
            self.mixer = RecurrentMixer(config.recurrent, size, config.short_convolution)
        self.mixer_norm = nn.LayerNorm(size)
        self.mlp_norm = nn.LayerNorm(size)
        hidden = config.mlp_expansion * size
        self.mlp = nn.Sequential(nn.Linear(size, hidden), nn.GELU(), nn.Linear(hidden, size))
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, inputs: Tensor, state: BlockState | None, lengths: Tensor | None
    ) -> tuple[Tensor, BlockState]:
        """``(B, T, D)`` -> ``(B, T, D)`` and this block's final state."""
        normed = self.mixer_norm(inputs)
        if isinstance(self.mixer, CausalSelfAttention):
            mixed, new_state = self.mixer(normed, _as_cache(state))
        else:
            mixed, new_state = self.mixer(normed, state, lengths)
        hidden = inputs + self.dropout(mixed)
        return hidden + self.dropout(self.mlp(self.mlp_norm(hidden))), new_state

    def step(self, inputs: Tensor, state: BlockState | None) -> tuple[Tensor, BlockState]:
        """``(B, D)`` -> ``(B, D)`` and this block's new state."""
        normed = self.mixer_norm(inputs)
        new_state: BlockState
        if isinstance(self.mixer, CausalSelfAttention):
            mixed, new_state = self.mixer.step(normed, _as_cache(state))
        else:
            mixed, new_state = self.mixer.step(normed, state)
        hidden = inputs + self.dropout(mixed)
        return hidden + self.dropout(self.mlp(self.mlp_norm(hidden))), new_state

    def state_size_per_token(self) -> int:
        """Recurrent: floats of state (per sequence, any length); attention: KV floats per
        token (2 D); titans_mag: both, summed."""
        if isinstance(self.mixer, CausalSelfAttention):
            return 2 * self.mixer.model_size
        if isinstance(self.mixer, TitansGatedAttention):
            return 2 * self.mixer.attention.model_size + self.mixer.state_size()
        return self.mixer.state_size()


def _as_cache(state: BlockState | None) -> KVCache | None:
    if state is not None and not isinstance(state, KVCache):
        raise ValueError(f"an attention block's state must be a KVCache, got {type(state)}")
    return state


class SequenceModel(nn.Module):
    """Token ids ``(B, T)`` or real inputs ``(B, T, input_size)`` -> ``(B, T, output_size)``.

    ``forward(inputs, state=None, lengths=None) -> (outputs, state)``; ``step(inputs, state)``
    takes ``(B,)`` ids or ``(B, input_size)`` and equals ``forward`` one position at a time.
    """

    def __init__(
        self,
        config: SequenceModelConfig,
        output_size: int,
        vocabulary_size: int | None = None,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        if (vocabulary_size is None) == (input_size is None):
            raise ValueError(
                "expected exactly one of vocabulary_size (token inputs) and input_size (real "
                f"inputs), got vocabulary_size={vocabulary_size}, input_size={input_size}"
            )
        for name, value in (
            ("output_size", output_size),
            ("vocabulary_size", vocabulary_size),
            ("input_size", input_size),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name}: expected a positive integer, got {value}")
        self.config = config
        self.vocabulary_size = vocabulary_size
        self.input_size = input_size
        self.output_size = output_size
        self.embedding: nn.Embedding | nn.Linear = (
            nn.Embedding(vocabulary_size, config.model_size)
            if vocabulary_size is not None
            else nn.Linear(input_size or 0, config.model_size)
        )
        self.blocks = nn.ModuleList(Block(config, mixer) for mixer in config.block_mixers())
        self.final_norm = nn.LayerNorm(config.model_size)
        self.head = nn.Linear(config.model_size, output_size)
        self.depth: DepthRecursion | None = build_depth(
            config.depth, config.model_size, self.block_list()
        )

    def forward(
        self,
        inputs: Tensor,
        state: Sequence[BlockState] | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, tuple[BlockState, ...]]:
        """``(B, T)`` ids or ``(B, T, input_size)`` -> ``(B, T, output_size)`` and the state of
        every block; ``lengths (B,)`` for right-padded batches."""
        if self.depth is not None:  # the blocks as one unit in depth; its own state
            embedded = self.embedding(inputs)  # (B, T, D)
            hidden, depth_state = self.depth(self.block_list(), embedded, state, lengths)
            return self.head(self.final_norm(hidden)), depth_state
        self._check_state(state)
        hidden = self.embedding(inputs)  # (B, T, D)
        new_states = []
        for index, block in enumerate(self.block_list()):
            hidden, block_state = block(hidden, None if state is None else state[index], lengths)
            new_states.append(block_state)
        return self.head(self.final_norm(hidden)), tuple(new_states)

    def step(
        self, inputs: Tensor, state: Sequence[BlockState] | None = None
    ) -> tuple[Tensor, tuple[BlockState, ...]]:
        """One position per row: ``(B,)`` ids or ``(B, input_size)`` -> ``(B, output_size)``
        and the new state; ``state=None`` starts the sequences."""
        if self.depth is not None:
            hidden, depth_state = self.depth.step(self.block_list(), self.embedding(inputs), state)
            return self.head(self.final_norm(hidden)), depth_state
        self._check_state(state)
        hidden = self.embedding(inputs)  # (B, D)
        new_states = []
        for index, block in enumerate(self.block_list()):
            hidden, block_state = block.step(hidden, None if state is None else state[index])
            new_states.append(block_state)
        return self.head(self.final_norm(hidden)), tuple(new_states)

    def parameter_count(self) -> int:
        """Trainable parameters, shared ones counted once."""
        return sum(parameter.numel() for parameter in self.parameters() if parameter.requires_grad)

    def auxiliary_loss(self) -> Tensor | None:
        """The depth recursion's term of the latest forward's loss (ACT's ``tau * ponder
        cost``), to add to the task loss; None without one."""
        return None if self.depth is None else self.depth.auxiliary_loss()

    def depth_statistics(self) -> dict[str, float]:
        """The depth recursion's metrics since ``reset_depth_statistics`` (mean ponder steps);
        empty without one."""
        return {} if self.depth is None else self.depth.statistics()

    def reset_depth_statistics(self) -> None:
        """Start counting ``depth_statistics`` afresh."""
        if self.depth is not None:
            self.depth.reset_statistics()

    def state_size_per_token(self) -> list[int]:
        """Per block: floats of recurrent state per sequence (a recurrent mixer, whatever the
        length), or floats of KV cache per token (attention, 2 D)."""
        return [block.state_size_per_token() for block in self.block_list()]

    def block_mixers(self) -> list[str]:
        """The mixer of each block: ``attention`` or the cell's name."""
        return [block.mixer_name for block in self.block_list()]

    def block_list(self) -> list[Block]:
        """The blocks of ``self.blocks``, typed."""
        blocks: list[Block] = []
        for block in self.blocks:
            assert isinstance(block, Block)  # __init__ builds nothing else
            blocks.append(block)
        return blocks

    def _check_state(self, state: Sequence[BlockState] | None) -> None:
        if state is not None and len(state) != len(self.blocks):
            raise ValueError(
                f"state: expected one entry per block ({len(self.blocks)}), got {len(state)}"
            )


def build_sequence_model(
    config: SequenceModelConfig,
    *,
    vocabulary_size: int | None = None,
    input_size: int | None = None,
    output_size: int | None = None,
) -> SequenceModel:
    """The model over ``vocabulary_size`` token ids or ``input_size`` real features, with
    ``output_size`` outputs (default: ``vocabulary_size``, next-token logits)."""
    if output_size is None:
        if vocabulary_size is None:
            raise ValueError("output_size: expected a positive integer for real inputs, got None")
        output_size = vocabulary_size
    return SequenceModel(config, output_size, vocabulary_size, input_size)


def with_mixer(
    config: SequenceModelConfig, name: str, options: dict[str, Any] | None = None
) -> SequenceModelConfig:
    """A copy of ``config`` whose blocks are ``name``: ``attention``, or a registered cell with
    its own ``options`` (the recurrent options of ``config`` are for its own cell, so they are
    replaced); one name for every mixer, as a sweep over mixers needs."""
    if name == "attention":
        return replace(config, mixer="attention", attention_every=0)
    recurrent = replace(config.recurrent, cell=name, options=dict(options or {}))
    return replace(config, mixer="recurrent", recurrent=recurrent)
