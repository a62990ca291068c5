"""The benchmark problems scored at marked token positions: MQAR, copying and passkey retrieval
(see ``benchmark_problems`` for their metrics)."""

from __future__ import annotations

from typing import Any

import torch

from rnnkit.data.benchmarks import copying, mqar, passkey
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
    token_metrics,
)

# Zoology's shortest sequences (64 tokens, 8 pairs) over 64 tokens instead of 8,192, so that a
# CPU run learns the embeddings in minutes: attention at width 64 solves it in about 500 steps;
# over 256 tokens it is at 13% after 500.
MQARTaskConfig = benchmark_config(
    "MQARTaskConfig",
    "Multi-query associative recall",
    lambda: mqar.MQARConfig(vocabulary_size=64, sequence_length=64, num_pairs=8),
)
# Arjovsky et al.'s copy-memory task: 10 symbols of 8, then 20 blanks, then the copy.
CopyTaskConfig = benchmark_config(
    "CopyTaskConfig",
    "Copying a string after a delay",
    lambda: copying.CopyingConfig(variant="copy", num_symbols=8, string_length=10, delay=20),
)
# The Mamba paper's selective copying uses 16 symbols in 4,096 tokens; 8 in 64 here.
SelectiveCopyTaskConfig = benchmark_config(
    "SelectiveCopyTaskConfig",
    "Mamba's selective copying",
    lambda: copying.CopyingConfig(
        variant="selective-copy", num_symbols=8, string_length=8, sequence_length=64
    ),
)
PasskeyTaskConfig = benchmark_config(
    "PasskeyTaskConfig",
    "Passkey retrieval, trained short and tested long",
    lambda: passkey.PasskeyConfig(train_length=64, test_length_factor=16),
    lambda: EvaluationConfig(sequences=64, batch_size=64),
)


class TokenProblem(TokenProblemBase):
    """A token task scored at its batches' ``mask`` positions; ``draw(count, generator,
    split)`` gives a batch of the generator's ``"train"`` or ``"test"`` side."""

    def __init__(self, config: Any, draw: Any) -> None:
        super().__init__(config)
        self.draw = draw
        self._sets: dict[int, TokenBatch] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> TokenBatch:
        return self.draw(batch_size, generator, "train")

    def held_out(self, stream: int) -> TokenBatch:
        if stream not in self._sets:
            self._sets[stream] = fixed_set(
                self.config, stream, lambda count, generator: self.draw(count, generator, "test")
            )
        return self._sets[stream]

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        batch = self.held_out(stream)
        logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)
        return token_metrics(logits, batch.targets, batch.mask)

    def describe(self) -> str:
        return f"{self.data}"


class MQARProblem(TokenProblem):
    """MQAR's metrics, and ``head_accuracy`` and ``tail_accuracy``: the accuracy at queries
    whose value is in the frequent (lower ids) or rare half of the values; with
    ``data.zipf_exponent > 0`` the tail is rare in training too (Muon's tail-end claim)."""

    def __init__(self, config: Any) -> None:
        def draw(count: int, generator: torch.Generator, split: Any) -> TokenBatch:
            return mqar.draw_batch(config.data, count, generator, split)

        super().__init__(config, draw)

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        batch = self.held_out(stream)
        logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)
        correct = logits.argmax(-1) == batch.targets  # (N, T)
        tail = self.data.tail_value(batch.targets) & batch.mask
        head = batch.mask & ~tail
        split = {  # a half without queries in the held-out set has no accuracy to report
            f"{name}_accuracy": float(correct[where].double().mean())
            for name, where in (("head", head), ("tail", tail))
            if where.any()
        }
        return {**token_metrics(logits, batch.targets, batch.mask), **split}


def copy_problem(config: Any) -> TokenProblem:
    """The copy or selective-copy problem; ``data.variant`` must be the task's."""
    expected = "copy" if isinstance(config, CopyTaskConfig) else "selective-copy"
    if config.data.variant != expected:
        raise ValueError(
            f"data.variant: expected {expected!r} for the {expected} task, got "
            f"{config.data.variant!r}"
        )

    def draw(count: int, generator: torch.Generator, split: Any) -> TokenBatch:
        return copying.draw_batch(config.data, count, generator, split)

    return TokenProblem(config, draw)


def passkey_lengths(data: passkey.PasskeyConfig) -> list[int]:
    """The training length times 1, 2, 4, ... up to ``test_length_factor``, and the last."""
    longest = data.train_length * data.test_length_factor
    lengths, length = [], data.train_length
    while length < longest:
        lengths.append(length)
        length *= 2
    return [*lengths, longest]


class PasskeyProblem(TokenProblemBase):
    """The key is scored at the last ``key_digits`` positions (teacher forcing)."""

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self._sets: dict[int, list[TokenBatch]] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> TokenBatch:
        return passkey.draw_batch(self.data, batch_size, self.data.train_length, generator)

    def held_out(self, stream: int) -> list[TokenBatch]:
        """Held-out keys at each test length."""
        if stream not in self._sets:
            self._sets[stream] = fixed_sets_by_length(
                self.config,
                stream,
                passkey_lengths(self.data),
                lambda count, length, generator: passkey.draw_batch(
                    self.data, count, length, generator, "test"
                ),
            )
        return self._sets[stream]

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        by_length, digits, losses = {}, [], []
        for length, batch in zip(passkey_lengths(self.data), self.held_out(stream), strict=True):
            logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)
            metrics = token_metrics(logits, batch.targets, batch.mask)
            by_length[f"{LENGTH_PREFIX}{length}"] = metrics["sequence_accuracy"]
            digits.append(metrics["accuracy"])
            losses.append(metrics["loss"])
        return {
            "loss": losses[0],
            "accuracy": sum(by_length.values()) / len(by_length),
            "digit_accuracy": sum(digits) / len(digits),
            **by_length,
        }

    def describe(self) -> str:
        lengths = passkey_lengths(self.data)
        return (
            f"{self.data.key_digits}-digit passkeys in {self.data.filler} filler, trained at "
            f"{self.data.train_length} tokens, tested at {', '.join(map(str, lengths))}"
        )
