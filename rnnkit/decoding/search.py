"""Greedy decoding and beam search over any step function, batched over sources.

A decoder is seen only through one step

    log_probs, state = step(tokens, state)     tokens (N,) int64 -> log_probs (N, V)

where ``tokens`` are on the CPU (the step moves them to its device) and ``state`` is any nesting
of tuples, NamedTuples, lists and dicts of tensors whose dim 0 indexes the N rows
(``select_rows`` reorders such a state). The first call gets ``bos``; V is
whatever the decoder chooses among (a target vocabulary for seq2seq, input positions for a
pointer network).

Greedy decoding takes ``y_t = argmax_v log p(v | y_<t)`` until ``eos`` or ``max_length`` tokens.

Beam search (Sutskever et al. 2014, https://arxiv.org/abs/1409.3215) keeps the K best prefixes
of every source; the B x K prefixes are the N = BK rows of one batched step. At every step each
live prefix y is extended by every token v, with log-probability ``log p(y) + log p(v | y)``,
and the K best of the K x V candidates of a source survive. Candidates are ranked by the
length-normalized score

    score(y) = log p(y) / |y|^alpha          (|y| counts the tokens generated, eos included)

``alpha = 0`` ranks by log-probability (which favours short outputs), ``alpha = 1`` by the
average log-probability per token; values in between (Wu et al. 2016 use about 0.6 with their
GNMT penalty ``((5 + |y|) / 6)^alpha``; here the plain power ``|y|^alpha``) trade the two off.
A prefix that ends with ``eos`` is finished: it keeps its slot in the beam with its score, is
extended only by ``pad`` at no cost, and competes with the live prefixes until the search stops
(when every prefix of every source is finished or ``max_length`` tokens were generated). At the
first step only one prefix per source is live (the others score -inf), so the beam does not
fill up with K copies of the same extensions. With K = 1 beam search is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

StepFunction = Callable[[Tensor, Any], tuple[Tensor, Any]]


class Decoded(NamedTuple):
    """One output sequence per source."""

    tokens: Tensor
    """``(B, L)`` int64: generated tokens (no bos), ending with eos when finished, then pad."""
    lengths: Tensor
    """``(B,)`` int64: tokens generated, eos included."""
    log_probs: Tensor
    """``(B,)``: the sum of the log-probabilities of the generated tokens."""


class BeamSearchResult(NamedTuple):
    """The K hypotheses of every source, best first."""

    tokens: Tensor
    """``(B, K, L)`` int64: as ``Decoded.tokens``, K hypotheses per source."""
    lengths: Tensor
    """``(B, K)`` int64: tokens generated, eos included."""
    log_probs: Tensor
    """``(B, K)``: log-probability of each hypothesis (-inf for a slot that never filled)."""
    scores: Tensor
    """``(B, K)``: the length-normalized scores they are ranked by."""

    def best(self) -> Decoded:
        """The best hypothesis of every source."""
        return Decoded(self.tokens[:, 0], self.lengths[:, 0], self.log_probs[:, 0])


def select_rows(state: Any, index: Tensor) -> Any:
    """``state`` with every tensor ``t`` replaced by ``t[index]`` (rows along dim 0).

    ``state`` nests tuples, NamedTuples, lists and dicts of tensors; None stays None."""
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.index_select(0, index.to(state.device))
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(select_rows(value, index) for value in state))
    if isinstance(state, (tuple, list)):
        return type(state)(select_rows(value, index) for value in state)
    if isinstance(state, dict):
        return {key: select_rows(value, index) for key, value in state.items()}
    raise TypeError(
        f"state: expected tensors nested in tuples, lists or dicts, found a {type(state).__name__}"
    )


def normalized_scores(log_probs: Tensor, lengths: Tensor, alpha: float) -> Tensor:
    """``log_probs / lengths^alpha`` (lengths of at least 1)."""
    if alpha == 0:
        return log_probs
    return log_probs / lengths.clamp(min=1).to(log_probs.dtype) ** alpha


@torch.no_grad()
def greedy_search(
    step: StepFunction,
    state: Any,
    batch_size: int,
    bos: int,
    eos: int,
    max_length: int,
    pad: int = 0,
) -> Decoded:
    """The argmax token at every step, for ``batch_size`` rows of ``state``."""
    _check_arguments(batch_size, max_length, 1, 0.0)
    tokens = torch.full((batch_size,), bos, dtype=torch.long)
    finished = torch.zeros(batch_size, dtype=torch.bool)
    lengths = torch.zeros(batch_size, dtype=torch.long)
    total = torch.zeros(batch_size, dtype=torch.float64)
    generated = []
    for _ in range(max_length):
        log_probs, state = step(tokens, state)
        _check_log_probs(log_probs, batch_size)
        best, tokens = log_probs.max(-1)
        tokens = tokens.cpu().masked_fill(finished, pad)
        total += torch.where(finished, 0.0, best.double().cpu())
        lengths += (~finished).long()
        finished = finished | (tokens == eos)
        generated.append(tokens)
        if bool(finished.all()):
            break
    return Decoded(torch.stack(generated, 1), lengths, total.to(log_probs.dtype))


class _Beams(NamedTuple):
    """The K prefixes of every source during the search."""

    log_probs: Tensor  # (B, K) float64
    lengths: Tensor  # (B, K) int64, eos included
    finished: Tensor  # (B, K) bool
    history: Tensor  # (B, K, t) int64


@torch.no_grad()
def beam_search(
    step: StepFunction,
    state: Any,
    batch_size: int,
    bos: int,
    eos: int,
    max_length: int,
    beam_width: int = 4,
    length_penalty: float = 0.0,
    pad: int = 0,
) -> BeamSearchResult:
    """The ``beam_width`` best hypotheses of each of ``batch_size`` sources, best first.

    ``state`` has ``batch_size`` rows (one per source); it is repeated ``beam_width`` times
    (source-major: row ``b K + k`` is hypothesis k of source b) before the first step.
    ``length_penalty`` is alpha of ``score = log p(y) / |y|^alpha``.
    """
    _check_arguments(batch_size, max_length, beam_width, length_penalty)
    sources, width = batch_size, beam_width
    state = select_rows(state, torch.arange(sources).repeat_interleave(width))
    first_rows = torch.arange(sources).unsqueeze(1) * width  # (B, 1)
    log_probs = torch.full((sources, width), float("-inf"), dtype=torch.float64)
    log_probs[:, 0] = 0.0  # one live prefix per source at the start
    beams = _Beams(
        log_probs,
        torch.zeros(sources, width, dtype=torch.long),
        torch.zeros(sources, width, dtype=torch.bool),
        torch.zeros(sources, width, 0, dtype=torch.long),
    )
    tokens = torch.full((sources * width,), bos, dtype=torch.long)
    for _ in range(max_length):
        step_log_probs, state = step(tokens, state)
        _check_log_probs(step_log_probs, sources * width)
        beams, parents = _advance(beams, step_log_probs, eos, pad, length_penalty)
        state = select_rows(state, (parents + first_rows).view(-1))
        tokens = beams.history[:, :, -1].reshape(-1)
        if bool((beams.finished | torch.isinf(beams.log_probs)).all()):
            break
    scores = normalized_scores(beams.log_probs, beams.lengths, length_penalty)
    order = scores.argsort(dim=1, descending=True, stable=True)
    dtype = step_log_probs.dtype
    return BeamSearchResult(
        beams.history.gather(1, _expand(order, beams.history)),
        beams.lengths.gather(1, order),
        beams.log_probs.gather(1, order).to(dtype),
        scores.gather(1, order).to(dtype),
    )


def _advance(
    beams: _Beams, step_log_probs: Tensor, eos: int, pad: int, alpha: float
) -> tuple[_Beams, Tensor]:
    """One step of the search: the K best extensions of every source's prefixes, and the
    prefix ``(B, K)`` each one extends."""
    sources, width = beams.finished.shape
    extensions = _extensions(step_log_probs, beams.finished, pad)  # (B, K, V)
    vocabulary = extensions.shape[-1]
    candidates = (beams.log_probs.unsqueeze(-1) + extensions).view(sources, -1)  # (B, K V)
    lengths = beams.lengths + (~beams.finished).long()  # (B, K)
    candidate_lengths = lengths.repeat_interleave(vocabulary, dim=1)  # (B, K V)
    chosen = normalized_scores(candidates, candidate_lengths, alpha).topk(width, dim=1).indices
    parents = torch.div(chosen, vocabulary, rounding_mode="floor")  # (B, K)
    tokens = chosen % vocabulary
    history = beams.history.gather(1, _expand(parents, beams.history))
    advanced = _Beams(
        candidates.gather(1, chosen),
        candidate_lengths.gather(1, chosen),
        beams.finished.gather(1, parents) | (tokens == eos),
        torch.cat([history, tokens.unsqueeze(-1)], dim=2),
    )
    return advanced, parents


def _extensions(step_log_probs: Tensor, finished: Tensor, pad: int) -> Tensor:
    """``(B, K, V)`` log-probabilities of extending each prefix by each token: a finished
    prefix has one extension, ``pad``, at no cost."""
    sources, width = finished.shape
    extensions = step_log_probs.detach().double().cpu().view(sources, width, -1)
    frozen = torch.full_like(extensions[0, 0], float("-inf"))
    frozen[pad] = 0.0
    return torch.where(finished.unsqueeze(-1), frozen, extensions)


def _expand(index: Tensor, history: Tensor) -> Tensor:
    """``index (B, K)`` broadcast to gather whole rows of ``history (B, K, L)``."""
    return index.unsqueeze(-1).expand(-1, -1, history.shape[-1])


def _check_arguments(batch_size: int, max_length: int, beam_width: int, alpha: float) -> None:
    for name, value in (
        ("batch_size", batch_size),
        ("max_length", max_length),
        ("beam_width", beam_width),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if not alpha >= 0:
        raise ValueError(f"length_penalty: expected alpha >= 0, got {alpha!r}")


def _check_log_probs(log_probs: Tensor, rows: int) -> None:
    if log_probs.dim() != 2 or log_probs.shape[0] != rows:
        raise ValueError(
            f"step: expected log-probabilities of shape ({rows}, vocabulary), "
            f"got {tuple(log_probs.shape)}"
        )


class SearchDecoding:
    """``greedy`` and ``beam_search`` for an encoder-decoder model that defines
    ``encode(source (B, S), source_lengths (B,)) -> state`` and ``decoder_step(tokens (N,),
    state) -> (log-probabilities (N, V), state)`` (the ``step`` of ``greedy_search`` and
    ``beam_search``)."""

    def encode(self, source: Tensor, source_lengths: Tensor) -> Any:
        raise NotImplementedError

    def decoder_step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    @torch.no_grad()
    def greedy(
        self, source: Tensor, source_lengths: Tensor, bos: int, eos: int, max_length: int,
        pad: int = 0,
    ) -> Decoded:  # fmt: skip
        """Greedy decoding of every source: tokens ``(B, L)``, lengths, log-probabilities."""
        state = self.encode(source, source_lengths)
        return greedy_search(self.decoder_step, state, source.shape[0], bos, eos, max_length, pad)

    @torch.no_grad()
    def beam_search(
        self, source: Tensor, source_lengths: Tensor, bos: int, eos: int, max_length: int,
        beam_width: int = 4, length_penalty: float = 0.0, pad: int = 0,
    ) -> BeamSearchResult:  # fmt: skip
        """Beam search of every source: ``beam_width`` hypotheses each, best first."""
        state = self.encode(source, source_lengths)
        return beam_search(
            self.decoder_step, state, source.shape[0], bos, eos, max_length,
            beam_width, length_penalty, pad,
        )  # fmt: skip
