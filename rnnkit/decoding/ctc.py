"""Connectionist temporal classification (CTC): the loss, and greedy and prefix beam search.

CTC (Graves et al. 2006, https://www.cs.toronto.edu/~graves/icml_2006.pdf) reads a labelling
l off T frames of per-frame distributions y_t over C classes, one of them a blank. A path
pi in {0..C-1}^T has probability prod_t y_t[pi_t]; the collapse B(pi) merges repeated labels
and then drops blanks (B(a a - b b) = B(a - - b) = ab); and

    p(l | x) = sum over paths pi with B(pi) = l of prod_t y_t[pi_t].

The loss is -log p(l | x), computed by ``torch.nn.functional.ctc_loss`` (the forward-backward
recursion of the paper).

Greedy (best path) decoding collapses argmax_t y_t: the labelling of the single most likely
path, not always the most likely labelling.

Prefix beam search (Hannun et al. 2014, https://arxiv.org/abs/1408.2873) keeps for each prefix
l the probability of the kept paths that collapse to l and end in a blank, p_b(l), or in a
label, p_nb(l). Reading frame t with probabilities y:

    p_b(l)    += (p_b(l) + p_nb(l)) y[blank]         a blank keeps l
    p_nb(l)   += p_nb(l) y[last(l)]                  a repeat of l's last label merges into l
    p_nb(l+c) += (p_b(l) + p_nb(l)) y[c]             c != last(l)
    p_nb(l+c) += p_b(l) y[c]                         c == last(l): only after a blank

and the ``beam_width`` prefixes of highest score are kept. An external scorer S (a character
language model, say) adds to a prefix's score, in log space,

    score(l) = log(p_b(l) + p_nb(l)) + alpha sum_i S(l_<i, l_i) + beta |l|.

The scorer's terms depend on l alone, not on the path, so they are carried per prefix; this is
Hannun et al.'s p(c | l)^alpha factor at each extension, times the insertion bonus e^beta.
With a beam wide enough for every prefix the search is exact: each labelling gets exactly
p(l | x).

The example scorer, ``CharacterNgramScorer``, is an n-gram model with add-k smoothing:

    S(h, c) = log (count(h, c) + k) / (count(h) + k V)

with h the last n-1 labels (padded with a start symbol) and V the number of labels.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor
from torch.nn import functional

NEGATIVE_INFINITY = float("-inf")


class ExternalScorer(Protocol):
    """Scores a label extending a prefix: the log-probability of ``next_label`` after ``prefix``
    (labels are class indices, never the blank)."""

    def __call__(self, prefix: tuple[int, ...], next_label: int) -> float: ...


@dataclass(frozen=True)
class Hypothesis:
    """A labelling found by prefix beam search."""

    labels: tuple[int, ...]
    """The collapsed labelling (no blanks)."""
    log_probability: float
    """log p(labels | x) over the paths the beam kept (all of them with a wide enough beam)."""
    score: float
    """What the beam ranks by: log_probability plus the scorer's and the insertion bonus."""


def ctc_loss(
    log_probs: Tensor,
    lengths: Tensor,
    targets: Tensor,
    target_lengths: Tensor,
    blank: int = 0,
    zero_infinity: bool = False,
) -> Tensor:
    """CTC loss in nats per target label: sum over the batch of -log p(l | x) divided by the
    total number of target labels (torch's "mean" divides per sequence first instead).

    ``log_probs (B, T, C)`` batch first (torch's loss wants ``(T, B, C)``), ``lengths (B,)``
    frames per sequence, ``targets (B, L)`` padded labels, ``target_lengths (B,)``.
    """
    _check_log_probs(log_probs, blank)
    if targets.dim() != 2 or targets.shape[0] != log_probs.shape[0]:
        raise ValueError(
            f"targets must be (B, L) with B = {log_probs.shape[0]}, got {tuple(targets.shape)}"
        )
    total = functional.ctc_loss(
        log_probs.transpose(0, 1),
        targets,
        lengths,
        target_lengths,
        blank=blank,
        reduction="sum",
        zero_infinity=zero_infinity,
    )
    return total / target_lengths.sum().clamp_min(1)


def collapse(path: Iterable[int], blank: int = 0) -> tuple[int, ...]:
    """B(pi): merge repeated labels, then drop blanks."""
    labels, previous = [], None
    for label in path:
        if label != previous and label != blank:
            labels.append(label)
        previous = label
    return tuple(labels)


def greedy_decode(
    log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0
) -> list[tuple[int, ...]]:
    """Best path decoding: the collapse of the per-frame argmax of ``log_probs (B, T, C)``,
    reading the first ``lengths[b]`` frames of sequence b (all T when None)."""
    _check_log_probs(log_probs, blank)
    lengths = _check_lengths(lengths, log_probs)
    best = log_probs.argmax(dim=-1).tolist()  # (B, T)
    return [
        collapse(path[:length], blank) for path, length in zip(best, lengths.tolist(), strict=True)
    ]


def prefix_beam_search(
    log_probs: Tensor,
    lengths: Tensor | None = None,
    beam_width: int = 8,
    blank: int = 0,
    scorer: ExternalScorer | None = None,
    scorer_weight: float = 1.0,
    insertion_bonus: float = 0.0,
    label_threshold: float | None = None,
) -> list[list[Hypothesis]]:
    """Prefix beam search over ``log_probs (B, T, C)`` (log-softmax outputs).

    Returns, per sequence, the final beam sorted by score, best first. ``scorer`` is applied
    with weight alpha = ``scorer_weight`` and bonus beta = ``insertion_bonus`` per label (see
    the module docstring); ``label_threshold`` skips extensions by labels whose frame
    log-probability is below it (None: try every label, as the exactness tests need).
    """
    _check_log_probs(log_probs, blank)
    lengths = _check_lengths(lengths, log_probs)
    if beam_width < 1:
        raise ValueError(f"beam_width must be a positive integer, got {beam_width}")
    frames = log_probs.detach().to(torch.float64).tolist()  # (B, T, C)
    return [
        _search_one(
            sequence_frames[:length],
            beam_width,
            blank,
            scorer,
            scorer_weight,
            insertion_bonus,
            label_threshold,
        )
        for sequence_frames, length in zip(frames, lengths.tolist(), strict=True)
    ]


def _search_one(
    frames: list[list[float]],
    beam_width: int,
    blank: int,
    scorer: ExternalScorer | None,
    scorer_weight: float,
    insertion_bonus: float,
    label_threshold: float | None,
) -> list[Hypothesis]:
    """The prefix beam search of one sequence of frames ``(T, C)``."""
    # prefix -> [log p_b, log p_nb, the scorer's and the bonus's share of the score]
    beam: dict[tuple[int, ...], list[float]] = {(): [0.0, NEGATIVE_INFINITY, 0.0]}
    labels = [label for label in range(len(frames[0]) if frames else 0) if label != blank]
    for frame in frames:
        candidates = [
            label for label in labels if label_threshold is None or frame[label] >= label_threshold
        ]
        following: dict[tuple[int, ...], list[float]] = {}
        for prefix, (blank_ending, label_ending, bonus) in beam.items():
            total = _log_add(blank_ending, label_ending)
            kept = _entry(following, prefix, bonus)
            kept[0] = _log_add(kept[0], total + frame[blank])
            last = prefix[-1] if prefix else None
            if last is not None:
                kept[1] = _log_add(kept[1], label_ending + frame[last])
            for label in candidates:
                extended = prefix + (label,)
                entry = following.get(extended)
                if entry is None:
                    extra = 0.0 if scorer is None else scorer_weight * scorer(prefix, label)
                    entry = _entry(following, extended, bonus + extra + insertion_bonus)
                source = blank_ending if label == last else total
                entry[1] = _log_add(entry[1], source + frame[label])
        # a prefix with no path yet (l+c with c = last(l) before any blank) is dropped: its
        # mass can only come from its parent again, which recreates it
        reached = [item for item in following.items() if _log_add(*item[1][:2]) > NEGATIVE_INFINITY]
        beam = dict(sorted(reached, key=lambda item: -_score(item[1]))[:beam_width])
    hypotheses = [
        Hypothesis(prefix, _log_add(entry[0], entry[1]), _score(entry))
        for prefix, entry in beam.items()
    ]
    return sorted(hypotheses, key=lambda hypothesis: -hypothesis.score)


def _entry(
    beam: dict[tuple[int, ...], list[float]], prefix: tuple[int, ...], bonus: float
) -> list[float]:
    """The entry of ``prefix`` in ``beam``, created empty (probability 0) if missing."""
    if prefix not in beam:
        beam[prefix] = [NEGATIVE_INFINITY, NEGATIVE_INFINITY, bonus]
    return beam[prefix]


def _score(entry: list[float]) -> float:
    return _log_add(entry[0], entry[1]) + entry[2]


def _log_add(first: float, second: float) -> float:
    """log(e^first + e^second), exact at -inf."""
    if first == NEGATIVE_INFINITY:
        return second
    if second == NEGATIVE_INFINITY:
        return first
    if first < second:
        first, second = second, first
    return first + math.log1p(math.exp(second - first))


def _check_log_probs(log_probs: Tensor, blank: int) -> None:
    if log_probs.dim() != 3:
        raise ValueError(
            f"log_probs must be (B, T, C) log-probabilities, got shape {tuple(log_probs.shape)}"
        )
    if not 0 <= blank < log_probs.shape[-1]:
        raise ValueError(f"blank must be a class index in [0, {log_probs.shape[-1]}), got {blank}")


def _check_lengths(lengths: Tensor | None, log_probs: Tensor) -> Tensor:
    """``lengths (B,)`` with values in [0, T]; all T when None."""
    batch_size, steps = log_probs.shape[:2]
    if lengths is None:
        return torch.full((batch_size,), steps, dtype=torch.int64)
    lengths = torch.as_tensor(lengths, dtype=torch.int64).cpu()
    if lengths.shape != (batch_size,):
        raise ValueError(f"lengths must be (B,) = ({batch_size},), got {tuple(lengths.shape)}")
    if batch_size and (int(lengths.min()) < 0 or int(lengths.max()) > steps):
        raise ValueError(
            f"lengths must lie in [0, T={steps}], got {lengths.min()}..{lengths.max()}"
        )
    return lengths


class CharacterNgramScorer:
    """An add-k smoothed n-gram model of label sequences, usable as an ``ExternalScorer``.

    ``order`` n (1: unigram), ``labels`` the labels it scores (V of them; the CTC classes but
    the blank), ``smoothing`` k > 0. Fit it with ``fit(sequences)`` before scoring.
    """

    START = -1
    """Pads the context before the first label."""

    def __init__(self, order: int, labels: Sequence[int], smoothing: float = 1.0) -> None:
        if order < 1:
            raise ValueError(f"order must be at least 1 (a unigram model), got {order}")
        if smoothing <= 0:
            raise ValueError(f"smoothing must be positive (add-k), got {smoothing}")
        if not labels:
            raise ValueError("labels must name at least one label, got none")
        self.order = order
        self.labels = frozenset(labels)
        self.smoothing = float(smoothing)
        self.pair_counts: Counter[tuple[tuple[int, ...], int]] = Counter()
        self.context_counts: Counter[tuple[int, ...]] = Counter()

    def fit(self, sequences: Iterable[Sequence[int]]) -> CharacterNgramScorer:
        """Count every (context, label) pair of ``sequences``; returns self."""
        for sequence in sequences:
            for position, label in enumerate(sequence):
                self._check_label(label)
                context = self.context(tuple(sequence[:position]))
                self.pair_counts[context, label] += 1
                self.context_counts[context] += 1
        return self

    def context(self, prefix: tuple[int, ...]) -> tuple[int, ...]:
        """The last n-1 labels of ``prefix``, padded on the left with ``START``."""
        width = self.order - 1
        if width == 0:
            return ()
        padded = (self.START,) * width + prefix
        return padded[-width:]

    def __call__(self, prefix: tuple[int, ...], next_label: int) -> float:
        """log P(next_label | the last n-1 labels of prefix)."""
        self._check_label(next_label)
        context = self.context(prefix)
        numerator = self.pair_counts[context, next_label] + self.smoothing
        denominator = self.context_counts[context] + self.smoothing * len(self.labels)
        return math.log(numerator / denominator)

    def _check_label(self, label: int) -> None:
        if label not in self.labels:
            raise ValueError(f"label {label} is not one of the scorer's {sorted(self.labels)}")
