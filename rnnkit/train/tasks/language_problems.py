"""The benchmark problems on formal languages: word problems on groups (state tracking) and
in-context language learning on random automata (see ``benchmark_problems`` for their
metrics)."""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional

from rnnkit.data.benchmarks import icll
from rnnkit.data.benchmarks import state_tracking as groups
from rnnkit.data.benchmarks.batches import TokenBatch
from rnnkit.models.sequence_model import SequenceModel
from rnnkit.train.tasks.benchmark_task import (
    LENGTH_PREFIX,
    EvaluationConfig,
    TokenProblemBase,
    batched_logits,
    benchmark_config,
    fixed_set,
    fixed_sets_by_length,
)

HELD_AT = 0.9
"""``longest_length_at_90``: the accuracy every length up to it keeps."""
ICLL_NGRAM_ORDERS = (1, 2, 3)

StateTrackingTaskConfig = benchmark_config(
    "StateTrackingTaskConfig", "Word problems on a group", groups.StateTrackingConfig
)
# RegBench's automata, 128 tokens per sequence; 128 held-out sequences, each of its own
# test automaton.
ICLLTaskConfig = benchmark_config(
    "ICLLTaskConfig",
    "In-context language learning on random automata",
    lambda: icll.ICLLConfig(sequence_length=128),
    lambda: EvaluationConfig(sequences=128, batch_size=128),
)


class StateTrackingProblem(TokenProblemBase):
    """Training words have the training length L: every prefix is scored, so each word
    trains every length up to L."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._sets: dict[int, list[TokenBatch]] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> TokenBatch:
        return groups.draw_batch(self.data, batch_size, self.data.train_length, generator)

    def held_out(self, stream: int) -> list[TokenBatch]:
        """Held-out words of the training length, and random words of the longest length."""
        if stream not in self._sets:
            self._sets[stream] = fixed_sets_by_length(
                self.config,
                stream,
                [self.data.train_length, self.data.max_test_length],
                lambda count, length, generator: groups.draw_batch(
                    self.data, count, length, generator, "test"
                ),
            )
        return self._sets[stream]

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        short, long = self.held_out(stream)
        size, length = self.config.evaluation.batch_size, self.data.train_length
        short_logits = batched_logits(model, short.inputs, size)
        long_logits = batched_logits(model, long.inputs, size)
        per_position = torch.cat(
            [
                (short_logits.argmax(-1) == short.targets).double().mean(0),
                (long_logits.argmax(-1) == long.targets).double().mean(0)[length:],
            ]
        )  # (4L,): accuracy after 1, 2, ... elements
        held = per_position >= HELD_AT
        longest = len(held) if bool(held.all()) else int(held.long().argmin())
        loss = functional.cross_entropy(short_logits.flatten(0, 1), short.targets.flatten())
        return {
            "loss": float(loss),
            "accuracy": float(per_position.mean()),
            "accuracy_in_distribution": float(per_position[:length].mean()),
            "longest_length_at_90": float(longest),
            **{
                f"{LENGTH_PREFIX}{index + 1}": float(value)
                for index, value in enumerate(per_position)
            },
        }

    def describe(self) -> str:
        group = self.data.group if self.data.group != "cyclic" else f"Z_{self.data.cyclic_order}"
        return (
            f"word problems on {group} ({self.data.vocabulary_size} elements), trained at length "
            f"{self.data.train_length}, tested up to {self.data.max_test_length}"
        )


class ICLLProblem(TokenProblemBase):
    """Next-token prediction over strings of one automaton per sequence."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._sets: dict[int, tuple[icll.ICLLBatch, dict[str, float]]] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> icll.ICLLBatch:
        return icll.draw_batch(self.data, batch_size, generator, "train")

    def held_out(self, stream: int) -> tuple[icll.ICLLBatch, dict[str, float]]:
        """The held-out sequences and the n-gram baselines' metrics on them."""
        if stream not in self._sets:
            batch = fixed_set(
                self.config,
                stream,
                lambda count, generator: icll.draw_batch(self.data, count, generator, "test"),
            )
            baselines = {}
            for order in ICLL_NGRAM_ORDERS:
                metrics = icll.ngram_baseline(batch, order, self.data.vocabulary_size)
                baselines[f"ngram_{order}_accuracy"] = metrics["allowed_accuracy"]
                baselines[f"ngram_{order}_total_variation"] = metrics["total_variation"]
            self._sets[stream] = (batch, baselines)
        return self._sets[stream]

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        batch, baselines = self.held_out(stream)
        logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)
        loss = functional.cross_entropy(logits[batch.mask], batch.targets[batch.mask])
        return {
            "loss": float(loss),
            "accuracy": icll.allowed_accuracy(logits.argmax(-1), batch),
            "total_variation": icll.total_variation(logits.softmax(-1), batch),
            **baselines,
        }

    def describe(self) -> str:
        data = self.data
        return (
            f"random automata ({data.min_states}-{data.max_states} states, alphabets of "
            f"{data.min_alphabet_size}-{data.max_alphabet_size} of {data.num_symbols} symbols), "
            f"{data.sequence_length} tokens per sequence, test automata held out"
        )
