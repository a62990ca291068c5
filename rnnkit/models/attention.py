"""Attention for recurrent decoders: a query attends over the encoder's outputs.

For a query ``q`` (a decoder state) and keys ``k_s`` (encoder outputs, ``s = 1..S``):

    additive (Bahdanau et al. 2015, https://arxiv.org/abs/1409.0473):
        score(q, k_s) = v^T tanh(W_q q + W_k k_s)
    dot (Luong et al. 2015, https://arxiv.org/abs/1508.04025):   score = q^T k_s
    general (Luong):                                              score = q^T W k_s
    concat (Luong):                                               score = v^T tanh(W [q; k_s])

    weights_s = softmax_s(score(q, k_s)) over the unmasked positions,  context = sum_s weights_s v_s

with values ``v_s`` the keys unless given. Padded source positions (``mask`` False) get a score
of -inf, so exactly zero weight. The key-side projection depends only on the source and is
computed once per sequence (``prepare``), not once per decoder step.

Under ``torch.compile`` the mask check (every sequence has an unmasked position) is an
in-graph assert (``rnnkit.strategies.validation``): RuntimeError when the graph runs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.strategies.validation import assert_in_graph, compiling

ATTENTION_KINDS = ("additive", "dot", "general", "concat")


class Attention(nn.Module):
    """Scores, weights and context of a query over keys.

    Args:
        kind: one of ``ATTENTION_KINDS``.
        query_size: size of a query (the decoder's hidden size).
        key_size: size of a key (the encoder's output size).
        attention_size: size of the hidden layer of ``additive`` and ``concat`` (default:
            ``query_size``).
    """

    def __init__(
        self, kind: str, query_size: int, key_size: int, attention_size: int | None = None
    ) -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"attention kind: expected one of {ATTENTION_KINDS}, got {kind!r}")
        if kind == "dot" and query_size != key_size:
            raise ValueError(
                f"dot attention needs query_size == key_size, got {query_size} and {key_size}; "
                "use 'general' to score between different sizes"
            )
        self.kind = kind
        self.query_size, self.key_size = query_size, key_size
        attention_size = attention_size or query_size
        if kind in ("additive", "concat"):
            # concat's W [q; k] is W_q q + W_k k with W = [W_q, W_k]: one bias, as in Luong
            self.query_projection = nn.Linear(query_size, attention_size, bias=kind == "concat")
            self.key_projection = nn.Linear(key_size, attention_size, bias=kind == "additive")
            self.vector = nn.Linear(attention_size, 1, bias=False)
        elif kind == "general":
            self.key_projection = nn.Linear(key_size, query_size, bias=False)

    def prepare(self, keys: Tensor) -> Tensor:
        """The key side of the score, once per source: ``(B, S, key_size) -> (B, S, A)``."""
        if keys.dim() != 3 or keys.shape[-1] != self.key_size:
            raise ValueError(
                f"keys: expected (batch, source_length, {self.key_size}), got {tuple(keys.shape)}"
            )
        return keys if self.kind == "dot" else self.key_projection(keys)

    def scores(self, query: Tensor, prepared: Tensor, mask: Tensor | None = None) -> Tensor:
        """Masked scores: query ``(B, Q)`` or ``(B, L, Q)``, prepared keys ``(B, S, A)``, mask
        ``(B, S)`` (True where a position is real) -> ``(B, S)`` or ``(B, L, S)``, -inf where
        masked."""
        if query.shape[-1] != self.query_size or query.dim() not in (2, 3):
            raise ValueError(
                f"query: expected (batch, {self.query_size}) or (batch, steps, "
                f"{self.query_size}), got {tuple(query.shape)}"
            )
        single = query.dim() == 2
        if single:
            query = query.unsqueeze(1)  # (B, 1, Q)
        if self.kind in ("additive", "concat"):
            hidden = torch.tanh(
                self.query_projection(query).unsqueeze(2) + prepared.unsqueeze(1)
            )  # (B, L, S, A)
            scores = self.vector(hidden).squeeze(-1)
        else:
            scores = query @ prepared.transpose(1, 2)  # (B, L, S)
        if mask is not None:
            if mask.shape != prepared.shape[:2]:
                raise ValueError(
                    f"mask: expected (batch, source_length) = {tuple(prepared.shape[:2])}, "
                    f"got {tuple(mask.shape)}"
                )
            message = "mask: every sequence needs at least one unmasked position"
            if compiling():  # an in-graph assert, RuntimeError when the graph runs
                assert_in_graph(mask.any(dim=1).all(), message)
            elif not bool(mask.any(dim=1).all()):
                raise ValueError(message)
            scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        return scores.squeeze(1) if single else scores

    def forward(
        self,
        query: Tensor,
        keys: Tensor,
        mask: Tensor | None = None,
        values: Tensor | None = None,
        prepared: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``(context, weights)``: context ``(B, V)`` or ``(B, L, V)``, weights ``(B, S)`` or
        ``(B, L, S)`` (zero at masked positions). ``prepared``: ``prepare(keys)``, reused
        across decoder steps."""
        prepared = self.prepare(keys) if prepared is None else prepared
        weights = torch.softmax(self.scores(query, prepared, mask), dim=-1)
        values = keys if values is None else values
        context = weights @ values if weights.dim() == 3 else (weights.unsqueeze(1) @ values)[:, 0]
        return context, weights
