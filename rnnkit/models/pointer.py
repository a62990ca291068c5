"""Pointer network (Vinyals, Fortunato & Jaitly 2015, https://arxiv.org/abs/1506.03134):
attention used as a pointer over the positions of the input.

For inputs ``x_1..x_n`` (points, numbers: F features each, padded to N with ``lengths``):

    e_j = W_e x_j + b_e                                      embeddings        (B, N, E)
    k_1..k_n, s = Encoder(e_1..e_n)                          any cell          (B, N, O)
    k_0 = a learned "end" vector                             keys, end first   (B, N+1, O)
    d_i, s_i = Decoder(z_i, s_{i-1}),  s_0 = s                stepped one at a time
    z_1 = a learned start vector,  z_i = e_{p_{i-1}}         the element pointed at last
    u_ij = v^T tanh(W_q d_i + W_k k_j)                        additive attention scores
    p(p_i = j | p_<i, x) = softmax_j u_ij  over the positions j available at step i

With ``glimpses`` G > 0 (Bello et al. 2016, https://arxiv.org/abs/1611.09940) the query first
looks at the keys G times, each with its own additive attention over the same available
positions, and points with what it saw:

    g^0 = d_i,   g^t = sum_j softmax_j(v_t^T tanh(W_t g^{t-1} + V_t k_j)) k_j,   query = g^G

Pointer positions: 0 is the end position (the output stops there), ``j`` in 1..n is the input
element ``j - 1``; -1 pads targets and decoded outputs (``PADDING``).

Available positions at step i: the real elements (never padding); the end position when
``end_position`` is on (variable-length outputs such as a convex hull); with ``mask_chosen``,
not the elements already pointed at before step i (outputs that are permutations: sorting,
tours; Bello et al. 2016, https://arxiv.org/abs/1611.09940, mask the same way). When nothing
would be left (only after an output is complete, at steps whose targets are padding) the step
falls back to the real positions so that its softmax stays defined. Without ``end_position``
an output has exactly one pointer per input element.

A bidirectional encoder gives the decoder twice the hidden size: its initial state is the
forward and reverse final states side by side, field by field.

Under ``torch.compile`` the teacher-forced ``forward`` compiles whole (``fullgraph=True``); its
check of the target positions is an in-graph assert (``rnnkit.strategies.validation``):
RuntimeError when the graph runs, not ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells import State
from rnnkit.models.attention import Attention
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.nn import Recurrent
from rnnkit.strategies.validation import (
    assert_in_graph,
    check_lengths,
    compiling,
    length_mask,
)

END_POSITION = 0
PADDING = -1


@dataclass
class PointerNetworkConfig:
    """Sizes and options of a pointer network."""

    embedding_size: int = 128
    """Features E of the embedding of an input element."""
    recurrent: RecurrentConfig = field(default_factory=RecurrentConfig)
    """The encoder: cell, strategy, sizes, direction, its own options
    (``--model.recurrent.cell=gru``). The decoder is the same cell and layers, one direction,
    with hidden size ``recurrent.hidden_size`` times the encoder's directions."""
    attention_size: int = 64
    """Hidden size of the additive attention that points (and of each glimpse)."""
    glimpses: int = 0
    """Attention glimpses over the keys before pointing (0: point with the decoder output; one
    glimpse learned convex hulls slower here, 0.26 against 0.15 nats after 600 steps)."""
    mask_chosen: bool = True
    """Never point twice at the same element (outputs are permutations or subsets)."""
    end_position: bool = False
    """Position 0 ends the output (variable-length outputs); off: one pointer per element."""

    def __post_init__(self) -> None:
        """Name and range checks, so a bad value fails when the config is read, not mid-build."""
        for name in ("embedding_size", "attention_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if self.glimpses < 0:
            raise ValueError(f"glimpses: expected 0 or more, got {self.glimpses}")


class PointerMemory(NamedTuple):
    """What the decoder reads at every step, computed once per batch by ``encode``."""

    table: Tensor
    """``(B, N+1, E)``: the decoder input for each previous position (0: the start vector)."""
    keys: Tensor
    """``(B, N+1, O)``: the encoder outputs, the end vector first."""
    prepared: tuple[Tensor, ...]
    """``(B, N+1, A)`` each: the keys prepared for each glimpse, then for the pointer."""
    mask: Tensor
    """``(B, N+1)``: True where a position may be pointed at (real elements, the end if on)."""
    lengths: Tensor
    """``(B,)``: elements per example."""
    state: tuple[State, ...]
    """The decoder's initial state (the encoder's final state)."""


class PointerNetwork(nn.Module):
    """Encoder, decoder and pointing attention over ``input_size`` features per element."""

    def __init__(self, config: PointerNetworkConfig, input_size: int) -> None:
        super().__init__()
        if input_size < 1:
            raise ValueError(
                f"input_size: expected a positive number of features, got {input_size}"
            )
        config.__post_init__()  # again: fields may have been assigned since construction
        self.config = config
        self.input_size = input_size
        self.embedding = nn.Linear(input_size, config.embedding_size)
        self.encoder = config.recurrent.build(config.embedding_size)
        directions = 2 if config.recurrent.bidirectional else 1
        decoder = replace(
            config.recurrent, hidden_size=directions * config.recurrent.hidden_size,
            bidirectional=False,
        )  # fmt: skip
        self.decoder = decoder.build(config.embedding_size)
        if config.recurrent.bidirectional:
            _check_mergeable(self.encoder, self.decoder)
        key_size = self.encoder.output_size
        query_sizes = [self.decoder.output_size] + [key_size] * config.glimpses
        self.glimpses = nn.ModuleList(
            Attention("additive", size, key_size, config.attention_size)
            for size in query_sizes[:-1]
        )
        self.attention = Attention("additive", query_sizes[-1], key_size, config.attention_size)
        scale = config.embedding_size**-0.5
        self.start = nn.Parameter(torch.randn(config.embedding_size) * scale)
        self.end = nn.Parameter(torch.randn(key_size) * key_size**-0.5)

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def encode(self, inputs: Tensor, lengths: Tensor | None = None) -> PointerMemory:
        """Embed and encode ``inputs (B, N, F)`` with ``lengths (B,)`` (None: all N)."""
        lengths = self._check_inputs(inputs, lengths)
        batch_size, size, _ = inputs.shape
        embedded = self.embedding(inputs)  # (B, N, E)
        outputs, final = self.encoder(embedded, lengths=lengths)  # (B, N, O)
        keys = torch.cat([self.end.expand(batch_size, 1, -1), outputs], 1)  # (B, N+1, O)
        table = torch.cat([self.start.expand(batch_size, 1, -1), embedded], 1)  # (B, N+1, E)
        elements = length_mask(lengths, size, inputs.device)  # (B, N)
        assert elements is not None  # lengths is checked, not None
        mask = functional.pad(elements, (1, 0), value=False)  # (B, N+1): slot 0 is the end
        if self.config.end_position:
            mask[:, END_POSITION] = True
        state = _merge_directions(final) if self.config.recurrent.bidirectional else final
        attentions = [*self.glimpses, self.attention]
        prepared = tuple(attention.prepare(keys) for attention in attentions)
        return PointerMemory(table, keys, prepared, mask, lengths, state)

    def forward(self, inputs: Tensor, lengths: Tensor | None, target_positions: Tensor) -> Tensor:
        """Teacher forcing: log-probabilities ``(B, L, N+1)`` of every position at every step,
        each step fed the target of the step before. ``target_positions (B, L)``: pointer
        positions (0 the end, j the element j-1, -1 padding)."""
        memory = self.encode(inputs, lengths)
        targets = self._check_targets(target_positions, memory)
        previous = torch.cat([targets.new_zeros(targets.shape[0], 1), targets[:, :-1]], 1)
        decoder_inputs = _gather_rows(memory.table, previous.clamp(min=0))  # (B, L, E)
        queries, _ = self.decoder(decoder_inputs, memory.state)  # (B, L, Q)
        available = memory.mask.unsqueeze(1).expand(-1, targets.shape[1], -1)  # (B, L, N+1)
        if self.config.mask_chosen:
            picked = functional.one_hot(targets.clamp(min=0), memory.mask.shape[1])
            picked = picked * (targets > END_POSITION).unsqueeze(-1)  # (B, L, N+1)
            available = _without(available, (picked.cumsum(1) - picked) > 0)
        return self._point(queries, memory, available)

    def step(
        self,
        memory: PointerMemory,
        previous: Tensor,
        state: tuple[State, ...],
        chosen: Tensor | None = None,
    ) -> tuple[Tensor, tuple[State, ...]]:
        """One decoder step: ``previous (B,)`` the positions pointed at last (0 before the
        first step), ``chosen (B, N+1)`` the elements pointed at so far -> log-probabilities
        ``(B, N+1)`` and the next state."""
        decoder_input = _gather_rows(memory.table, previous.clamp(min=0).unsqueeze(1))
        query, state = self.decoder(decoder_input, state)  # (B, 1, Q)
        available = memory.mask
        if self.config.mask_chosen and chosen is not None:
            available = _without(available, chosen)
        return self._point(query[:, 0], memory, available), state

    @torch.no_grad()
    def decode(
        self, inputs: Tensor, lengths: Tensor | None = None, max_steps: int | None = None
    ) -> Tensor:
        """Greedy decoding: the most likely position at each step, the decoder state carried
        from step to step. Returns pointer positions ``(B, L)``: an output ends after its end
        position (0), or after one pointer per element without ``end_position``; -1 after.
        ``max_steps`` defaults to N + 1 (N without ``end_position``)."""
        memory = self.encode(inputs, lengths)
        batch_size, positions = memory.mask.shape
        if max_steps is None:
            max_steps = positions - (0 if self.config.end_position else 1)
        if max_steps < 1:
            raise ValueError(f"max_steps: expected a positive number of steps, got {max_steps}")
        device = memory.mask.device
        previous = torch.zeros(batch_size, dtype=torch.long, device=device)
        chosen = torch.zeros(batch_size, positions, dtype=torch.bool, device=device)
        finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
        lengths, rows = memory.lengths.to(device), torch.arange(batch_size, device=device)
        state, outputs = memory.state, []
        for step in range(max_steps):
            log_probabilities, state = self.step(memory, previous, state, chosen)
            choice = log_probabilities.argmax(-1).masked_fill(finished, PADDING)
            outputs.append(choice)
            chosen[rows, choice.clamp(min=0)] |= choice > END_POSITION
            previous = choice
            if self.config.end_position:
                finished |= choice == END_POSITION
            else:
                finished |= lengths <= step + 1
            if bool(finished.all()):
                break
        return torch.stack(outputs, 1)

    def _point(self, queries: Tensor, memory: PointerMemory, available: Tensor) -> Tensor:
        """Glimpses, then log-probabilities of pointing: queries ``(B, Q)`` or ``(B, L, Q)``,
        ``available`` ``(B, N+1)`` or ``(B, L, N+1)``."""
        for glimpse, prepared in zip(self.glimpses, memory.prepared, strict=False):
            assert isinstance(glimpse, Attention)  # self.glimpses holds only attentions
            scores = glimpse.scores(queries, prepared, memory.mask)
            weights = torch.softmax(scores.masked_fill(~available, float("-inf")), -1)
            queries = torch.einsum("b...s,bso->b...o", weights, memory.keys)  # (B, [L,] O)
        scores = self.attention.scores(queries, memory.prepared[-1], memory.mask)
        return torch.log_softmax(scores.masked_fill(~available, float("-inf")), -1)

    def _check_inputs(self, inputs: Tensor, lengths: Tensor | None) -> Tensor:
        if inputs.dim() != 3 or inputs.shape[2] != self.input_size or inputs.shape[1] < 1:
            raise ValueError(
                f"inputs: expected (batch, elements, {self.input_size}) with at least one "
                f"element, got {tuple(inputs.shape)}"
            )
        batch_size, size, _ = inputs.shape
        if lengths is None:
            return torch.full((batch_size,), size, dtype=torch.long)
        if lengths.dtype != torch.long or lengths.device.type != "cpu":
            raise ValueError(
                f"lengths must be a CPU int64 tensor, got {lengths.dtype} on {lengths.device}"
            )
        return check_lengths(lengths, batch_size, size)

    def _check_targets(self, targets: Tensor, memory: PointerMemory) -> Tensor:
        batch_size = memory.mask.shape[0]
        if targets.dim() != 2 or targets.shape[0] != batch_size or targets.dtype != torch.long:
            raise ValueError(
                f"target_positions: expected an int64 tensor (batch={batch_size}, steps), got "
                f"{targets.dtype} of shape {tuple(targets.shape)}"
            )
        real = targets >= 0
        pointable = memory.mask.gather(1, targets.clamp(min=0))
        valid = (targets >= PADDING).all() & (pointable | ~real).all()
        message = (
            "target_positions: expected -1 (padding), "
            + ("0 (the end), " if self.config.end_position else "")
            + "or an element position 1..length of its example"
        )
        if compiling():  # an in-graph assert, RuntimeError when the graph runs
            assert_in_graph(valid, message)
        elif not bool(valid):
            raise ValueError(message)
        return targets


def positions_from_indices(indices: Tensor, end_position: bool) -> Tensor:
    """Element indices ``(B, L)`` (0-based, -1 padding) -> pointer positions ``(B, L')``:
    indices shifted by one, and with ``end_position`` the end (0) after each output."""
    positions = torch.where(indices >= 0, indices + 1, PADDING)
    if not end_position:
        return positions
    positions = torch.cat([positions, positions.new_full((positions.shape[0], 1), PADDING)], 1)
    ends = (indices >= 0).sum(1, keepdim=True)  # (B, 1): where each output's end goes
    return positions.scatter(1, ends, END_POSITION)


def indices_from_positions(positions: Tensor) -> list[list[int]]:
    """Pointer positions ``(B, L)`` -> one list of element indices per example (0-based, up to
    its end position, padding dropped)."""
    outputs = []
    for row in positions.tolist():
        indices = []
        for position in row:
            if position <= END_POSITION:
                break
            indices.append(position - 1)
        outputs.append(indices)
    return outputs


def _without(mask: Tensor, chosen: Tensor) -> Tensor:
    """``mask`` less the chosen positions, except where that would leave none (a complete
    output: the step is padding, and the full mask keeps its softmax defined)."""
    available = mask & ~chosen
    return torch.where(available.any(-1, keepdim=True), available, mask)


def _gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table (B, P, E)`` at ``index (B, L)`` -> ``(B, L, E)``."""
    return table.gather(1, index.unsqueeze(-1).expand(-1, -1, table.shape[2]))


def _merge_directions(states: tuple[State, ...]) -> tuple[State, ...]:
    """``(layer0, layer0_reverse, layer1, ...)`` -> one state per layer, each field the forward
    and reverse fields side by side."""
    merged = []
    for forward, reverse in zip(states[0::2], states[1::2], strict=True):
        fields = (torch.cat(pair, -1) for pair in zip(forward, reverse, strict=True))
        merged.append(type(forward)(*fields))
    return tuple(merged)


def _check_mergeable(encoder: Recurrent, decoder: Recurrent) -> None:
    encoder_cell, decoder_cell = encoder.layer_cells()[0], decoder.layer_cells()[0]
    encoder_sizes = tuple(2 * size for size in encoder_cell.state_sizes())
    decoder_sizes = tuple(decoder_cell.state_sizes())
    if encoder_sizes != decoder_sizes:
        raise ValueError(
            f"bidirectional: the {type(encoder_cell).__name__} state cannot be handed to the "
            f"decoder side by side (fields {encoder_sizes} vs {decoder_sizes}); use "
            "bidirectional=False with this cell"
        )
