"""In-context language learning (ICLL) on random probabilistic finite automata, after RegBench.

Akyurek et al. 2024, "In-Context Language Learning: Architectures and Algorithms"
(https://arxiv.org/abs/2401.12973). Every sequence has its own automaton, drawn as RegBench
draws them: ``num_states`` uniform in ``min_states .. max_states`` (4..12) plus a start state
0; an alphabet of ``min_alphabet_size .. max_alphabet_size`` (4..18) symbols out of
``num_symbols`` (20); from every state ``min_transitions .. max_transitions`` (1..4) edges,
with distinct symbols, to distinct states of ``1 .. num_states``. Every state accepts, so the
language is the set of walks from state 0. Edge probabilities are ``"random"`` (a flat
Dirichlet per state) or ``"uniform"``.

A sequence is ``SEPARATOR w_1 SEPARATOR w_2 ...``: strings sampled from the automaton (lengths
uniform in ``min_string_length .. max_string_length``), filling ``sequence_length + 1`` tokens
(the last string may be cut, still a word of this prefix-closed language). Inputs are tokens
``0 .. T-1``, targets tokens ``1 .. T``; a position is scored when its target is a symbol. For
every position the batch gives the symbols the automaton allows next and its true next-symbol
distribution (from the state reached in the current string), so a task scores "the predicted
symbol is allowed" (:func:`allowed_accuracy`) and the total variation distance
(:func:`total_variation`), as does the in-context n-gram baseline :func:`ngram_distribution`.

Tokens: ``SEPARATOR = 0``, symbol ``s`` is token ``1 + s``. Splits: by the hash of the
automaton's transition table, so test languages never appear in training.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from rnnkit.data.benchmarks.batches import Split, check_choice, check_int, draw_split

SEPARATOR = 0
PROBABILITIES = ("random", "uniform")


class ICLLBatch(NamedTuple):
    """Sequences of strings of one automaton each, with what the automaton allows next."""

    inputs: Tensor  # (B, T) int64
    targets: Tensor  # (B, T) int64: the next token
    mask: Tensor  # (B, T) bool: the target is a symbol (not a separator)
    allowed: Tensor  # (B, T, V) bool: the symbols the automaton allows after inputs[:, :t+1]
    distribution: Tensor  # (B, T, V) float32: the automaton's next-symbol distribution
    transitions: Tensor  # (B, S, V) int64: next state per (state, token), -1 without an edge
    probabilities: Tensor  # (B, S, V) float32: edge probabilities per state


@dataclass(frozen=True)
class ICLLConfig:
    """Options of the random-automaton generator (defaults: RegBench's)."""

    num_symbols: int = 20
    """Symbols shared by all automata."""
    min_states: int = 4
    """Fewest states besides the start state."""
    max_states: int = 12
    """Most states besides the start state."""
    min_alphabet_size: int = 4
    """Fewest symbols of one automaton."""
    max_alphabet_size: int = 18
    """Most symbols of one automaton, at most ``num_symbols``."""
    min_transitions: int = 1
    """Fewest edges out of a state."""
    max_transitions: int = 4
    """Most edges out of a state, at most ``min_states`` and ``min_alphabet_size``."""
    transition_probabilities: str = "random"
    """``"random"`` (flat Dirichlet per state) or ``"uniform"``."""
    min_string_length: int = 1
    """Shortest sampled string."""
    max_string_length: int = 20
    """Longest sampled string."""
    sequence_length: int = 256
    """Tokens per sequence ``T``."""

    def __post_init__(self) -> None:
        check_int("num_symbols", self.num_symbols, 1)
        check_int("min_states", self.min_states, 1)
        check_int("max_states", self.max_states, self.min_states)
        check_int("min_alphabet_size", self.min_alphabet_size, 1, self.num_symbols)
        check_int(
            "max_alphabet_size", self.max_alphabet_size, self.min_alphabet_size, self.num_symbols
        )
        check_int("min_transitions", self.min_transitions, 1)
        check_int(
            "max_transitions",
            self.max_transitions,
            self.min_transitions,
            min(self.min_states, self.min_alphabet_size),
        )
        check_choice("transition_probabilities", self.transition_probabilities, PROBABILITIES)
        check_int("min_string_length", self.min_string_length, 1)
        check_int("max_string_length", self.max_string_length, self.min_string_length)
        check_int("sequence_length", self.sequence_length, 2)

    @property
    def vocabulary_size(self) -> int:
        return 1 + self.num_symbols


def draw_batch(
    config: ICLLConfig, batch_size: int, generator: torch.Generator, split: Split = "train"
) -> ICLLBatch:
    """``batch_size`` sequences ``(B, T)``, each from its own random automaton."""
    return draw_split(
        lambda count: _stack([_draw_row(config, generator) for _ in range(count)]),
        lambda batch: batch.transitions.flatten(1),
        batch_size,
        split,
    )


def random_automaton(config: ICLLConfig, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``(S, V)`` transitions (next state or -1) and probabilities; ``S = max_states + 1``."""
    size = config.max_states + 1
    transitions = torch.full((size, config.vocabulary_size), -1, dtype=torch.long)
    probabilities = torch.zeros(size, config.vocabulary_size)
    num_states = _uniform_int(config.min_states, config.max_states, generator)
    alphabet_size = _uniform_int(config.min_alphabet_size, config.max_alphabet_size, generator)
    alphabet = 1 + torch.randperm(config.num_symbols, generator=generator)[:alphabet_size]
    for state in range(num_states + 1):
        edges = _uniform_int(config.min_transitions, config.max_transitions, generator)
        targets = 1 + torch.randperm(num_states, generator=generator)[:edges]
        letters = alphabet[torch.randperm(alphabet_size, generator=generator)[:edges]]
        weights = torch.ones(edges)
        if config.transition_probabilities == "random":  # flat Dirichlet: normalized exponentials
            weights = -torch.rand(edges, generator=generator).clamp_min(1e-12).log()
        transitions[state, letters] = targets
        probabilities[state, letters] = weights / weights.sum()
    return transitions, probabilities


def _draw_row(config: ICLLConfig, generator: torch.Generator) -> ICLLBatch:
    transitions, probabilities = random_automaton(config, generator)
    total = config.sequence_length + 1
    uniforms = torch.rand(total, generator=generator).tolist()
    lengths = torch.randint(
        config.min_string_length, config.max_string_length + 1, (total,), generator=generator
    ).tolist()
    edges = [_edges(transitions[state], probabilities[state]) for state in range(len(transitions))]
    tokens, states = [SEPARATOR], [0]  # states[t]: the state after reading tokens[t]
    remaining, strings = lengths[0], 1
    for step in range(1, total):
        if remaining == 0:
            tokens.append(SEPARATOR)
            states.append(0)
            remaining, strings = lengths[strings], strings + 1
            continue
        letters, cumulative, next_states = edges[states[-1]]
        choice = min(bisect.bisect_right(cumulative, uniforms[step]), len(letters) - 1)
        tokens.append(letters[choice])
        states.append(next_states[choice])
        remaining -= 1
    sequence = torch.tensor(tokens)
    reached = torch.tensor(states[:-1])  # (T,) the state each position's next symbol leaves
    targets = sequence[1:]
    return ICLLBatch(
        sequence[:-1],
        targets,
        targets != SEPARATOR,
        transitions[reached] >= 0,
        probabilities[reached],
        transitions,
        probabilities,
    )


def _edges(row: Tensor, probabilities: Tensor) -> tuple[list[int], list[float], list[int]]:
    letters = (row >= 0).nonzero().flatten().tolist()
    cumulative = list(itertools.accumulate(float(probabilities[letter]) for letter in letters))
    return letters, cumulative, [int(row[letter]) for letter in letters]


def _stack(rows: list[ICLLBatch]) -> ICLLBatch:
    return ICLLBatch(*(torch.stack(list(field)) for field in zip(*rows, strict=True)))


def _uniform_int(low: int, high: int, generator: torch.Generator) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def allowed_accuracy(predictions: Tensor, batch: ICLLBatch) -> float:
    """Share of scored positions whose predicted token ``(B, T)`` the automaton allows."""
    hits = batch.allowed.gather(2, predictions.unsqueeze(2)).squeeze(2)  # (B, T)
    return float(hits[batch.mask].double().mean())


def total_variation(distribution: Tensor, batch: ICLLBatch) -> float:
    """Mean total variation distance between a predicted next-token distribution ``(B, T, V)``
    and the automaton's, over the scored positions. The prediction is renormalized over the
    symbols (the separator is where a string was cut, not part of the automaton's choice);
    where it gives the symbols no mass it counts as uniform."""
    symbols = distribution[..., 1:].double().clamp_min(0)
    mass = symbols.sum(-1, keepdim=True)
    uniform = torch.full_like(symbols, 1.0 / symbols.shape[-1])
    predicted = torch.where(mass > 0, symbols / mass.clamp_min(1e-300), uniform)
    distance = 0.5 * (predicted - batch.distribution[..., 1:].double()).abs().sum(-1)
    return float(distance[batch.mask].mean())


def ngram_distribution(inputs: Tensor, order: int, vocabulary_size: int) -> Tensor:
    """``(B, T, V)``: the in-context n-gram estimate of the next token at every position.

    At position ``t`` the context is the last ``order - 1`` inputs ``x[t-order+2 .. t]``; the
    estimate is the frequency of the tokens that followed the same context earlier in the same
    sequence (``x[j+1]`` for ``j < t``). Without such an occurrence it backs off to order - 1,
    down to the unigram frequency of ``x[1 .. t]``, and to uniform at ``t = 0``.
    """
    check_int("order", order, 1, 3)
    count, length = inputs.shape
    estimate = torch.full((count, length, vocabulary_size), 1.0 / vocabulary_size)
    for row, tokens in enumerate(inputs.tolist()):
        counts: dict[tuple[int, ...], dict[int, int]] = {}
        for position, _ in enumerate(tokens):
            if position > 0:  # record x[position] as the successor of its contexts
                for size in range(order):
                    if position - size >= 0:
                        context = tuple(tokens[position - size : position])
                        followers = counts.setdefault(context, {})
                        followers[tokens[position]] = followers.get(tokens[position], 0) + 1
            for size in range(order - 1, -1, -1):
                if position + 1 - size < 0:
                    continue
                followers = counts.get(tuple(tokens[position + 1 - size : position + 1]), {})
                if followers:
                    total = sum(followers.values())
                    estimate[row, position] = 0.0
                    for token, seen in followers.items():
                        estimate[row, position, token] = seen / total
                    break
    return estimate


def ngram_baseline(batch: ICLLBatch, order: int, vocabulary_size: int) -> dict[str, float]:
    """The metrics of the order-``order`` n-gram baseline on ``batch`` (argmax prediction)."""
    estimate = ngram_distribution(batch.inputs, order, vocabulary_size)
    return {
        "allowed_accuracy": allowed_accuracy(estimate.argmax(-1), batch),
        "total_variation": total_variation(estimate, batch),
    }
