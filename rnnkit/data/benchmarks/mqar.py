"""Multi-query associative recall (MQAR), as Zoology defines it.

Arora et al. 2023, "Zoology: Measuring and Improving Recall in Efficient Language Models",
https://arxiv.org/abs/2312.04927 (the ``multiquery_ar`` generator of its code). A sequence of
length ``T`` is

    k_1 v_1 k_2 v_2 ... k_n v_n | q_1 . q_2 . ... (T - 2n tokens)

- ``n = num_pairs`` keys, distinct, from ``1 .. V/2 - 1``, and ``n`` values, distinct, from
  ``V/2 .. V - 1`` (``V = vocabulary_size``; the two halves are disjoint).
- The query region has ``space = (T - 2n) / 2`` slots at its even offsets. Every key is queried
  once: key ``k_i`` goes to slot ``gap_i``, the gaps drawn without replacement with probability
  ``p(g) ~ a * g^(a - 1)``, ``g = 1 .. space`` (``a = power_a``; small ``a`` favours short
  distances between a key and its query).
- The target at a query position is the value bound to the queried key; only query positions
  are scored. Other positions hold 0, or with ``random_non_queries`` a uniform token of
  ``0 .. V - 1`` (as in Zoology, such noise may repeat a key; it is never scored).

Splits: a sequence is train or test by the hash of its tokens (see ``batches``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnnkit.data.benchmarks.batches import (
    Split,
    TokenBatch,
    check_float,
    check_int,
    draw_split,
)


@dataclass(frozen=True)
class MQARConfig:
    """Options of the MQAR generator."""

    vocabulary_size: int = 8192
    """Tokens ``0 .. V - 1``: keys from the lower half (0 excluded), values from the upper."""
    sequence_length: int = 256
    """Tokens per sequence ``T``, even."""
    num_pairs: int = 16
    """Key-value pairs ``n`` at the start; each key is queried once. ``4n <= T``."""
    power_a: float = 0.01
    """Exponent of the power law over query slots, in (0, 1]; 1 is uniform."""
    random_non_queries: bool = True
    """Fill the unscored positions of the query region with random tokens instead of 0."""
    zipf_exponent: float = 0.0
    """0: keys and values uniform (Zoology). ``s > 0``: a heavy-tailed vocabulary, each key
    and value drawn with weight ``rank^-s`` (rank 1 the lowest id of its half), distinct within
    a sequence; the high ids are the rare tail (``tail_value`` tells them)."""

    def __post_init__(self) -> None:
        check_int("sequence_length", self.sequence_length, 4)
        if self.sequence_length % 2:
            raise ValueError(f"sequence_length: expected an even int, got {self.sequence_length!r}")
        check_int("num_pairs", self.num_pairs, 1, self.sequence_length // 4)
        check_int("vocabulary_size", self.vocabulary_size, 2 * self.num_pairs + 2)
        check_float("power_a", self.power_a, 0.0, 1.0, open_low=True)
        check_float("zipf_exponent", self.zipf_exponent, 0.0, 10.0, open_low=False)
        if not isinstance(self.random_non_queries, bool):
            raise ValueError(
                f"random_non_queries: expected a bool, got {self.random_non_queries!r}"
            )

    @property
    def num_keys(self) -> int:
        """Keys are tokens ``1 .. num_keys``; values ``num_keys + 1 .. V - 1``."""
        return self.vocabulary_size // 2 - 1

    def tail_value(self, values: torch.Tensor) -> torch.Tensor:
        """Whether each value token is in the rarer half of the values (the higher ids)."""
        half = self.vocabulary_size // 2
        return values - half >= (self.vocabulary_size - half) // 2


def draw_batch(
    config: MQARConfig, batch_size: int, generator: torch.Generator, split: Split = "train"
) -> TokenBatch:
    """``batch_size`` MQAR sequences ``(B, T)`` of ``split``, drawn from ``generator``."""
    return draw_split(
        lambda count: _draw_unsplit(config, count, generator),
        lambda batch: batch.inputs,
        batch_size,
        split,
    )


def _draw_unsplit(config: MQARConfig, count: int, generator: torch.Generator) -> TokenBatch:
    pairs, length = config.num_pairs, config.sequence_length
    half = config.vocabulary_size // 2
    exponent = config.zipf_exponent
    keys = 1 + _distinct(count, half - 1, pairs, generator, exponent)  # (B, n)
    values = half + _distinct(count, config.vocabulary_size - half, pairs, generator, exponent)
    space = (length - 2 * pairs) // 2
    slots = torch.arange(1, space + 1, dtype=torch.float64)
    weights = config.power_a * slots ** (config.power_a - 1)
    gaps = torch.multinomial(weights.expand(count, space), pairs, generator=generator)  # (B, n)
    query_positions = 2 * pairs + 2 * gaps

    inputs = torch.zeros(count, length, dtype=torch.long)
    targets = torch.zeros(count, length, dtype=torch.long)
    mask = torch.zeros(count, length, dtype=torch.bool)
    inputs[:, 0 : 2 * pairs : 2] = keys
    inputs[:, 1 : 2 * pairs : 2] = values
    if config.random_non_queries:
        noise = torch.randint(config.vocabulary_size, (count, length), generator=generator)
        inputs[:, 2 * pairs :] = noise[:, 2 * pairs :]
    inputs.scatter_(1, query_positions, keys)
    targets.scatter_(1, query_positions, values)
    mask.scatter_(1, query_positions, True)
    return TokenBatch(inputs, targets, mask)


def _distinct(
    count: int, population: int, size: int, generator: torch.Generator, exponent: float = 0.0
) -> torch.Tensor:
    """``(count, size)`` int64: per row, ``size`` distinct integers of ``0 .. population - 1``,
    uniform, or with ``exponent > 0`` drawn one after another with weight ``(i + 1)^-exponent``
    among those left (Efraimidis & Spirakis 2006: the ``size`` largest ``log(u) / weight``)."""
    scores = torch.rand(count, population, generator=generator)
    if exponent == 0.0:
        return scores.argsort(dim=1)[:, :size]
    weights = torch.arange(1, population + 1, dtype=torch.float64) ** -exponent
    keys = scores.double().clamp_min(torch.finfo(torch.float64).tiny).log() / weights
    return keys.argsort(dim=1, descending=True)[:, :size]
