"""The benchmark problems on real-valued inputs, read at the last step: the adding problem and
the digits read pixel by pixel (see ``benchmark_problems`` for their metrics)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data.benchmarks import adding, sequential_digits
from rnnkit.data.benchmarks.batches import SequenceBatch
from rnnkit.models.sequence_model import SequenceModel
from rnnkit.train.tasks.benchmark_task import (
    EvaluationConfig,
    batched_logits,
    benchmark_config,
    fixed_set,
)

ADDING_TOLERANCE = 0.04
"""A sum read within this of the truth counts as right (``adding``'s accuracy)."""

# T = 100 (the papers go to 1,000: --data.sequence_length=1000).
AddingTaskConfig = benchmark_config(
    "AddingTaskConfig",
    "The adding problem",
    lambda: adding.AddingConfig(100),
    lambda: EvaluationConfig(sequences=1024, batch_size=256),
)
# The test split has 359 images with the default 20%: all of them are scored.
SequentialDigitsTaskConfig = benchmark_config(
    "SequentialDigitsTaskConfig",
    "8x8 digits read one pixel per step",
    sequential_digits.SequentialDigitsConfig,
    lambda: EvaluationConfig(sequences=360, batch_size=360),
)


class AddingProblem:
    """The sum is read from the model's output at the last step."""

    unit = "sequence"
    loss_unit = "(MSE)"
    vocabulary_size = None
    input_size: int | None = 2
    output_size = 1

    def __init__(self, config: Any) -> None:
        self.config, self.data = config, config.data
        self._sets: dict[int, SequenceBatch] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> SequenceBatch:
        return adding.draw_batch(self.data, batch_size, generator)

    def loss(self, model: SequenceModel, batch: SequenceBatch) -> tuple[Tensor, int]:
        outputs, _ = model(batch.inputs)  # (B, T, 1)
        return functional.mse_loss(outputs[:, -1, 0], batch.targets), len(batch.targets)

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        if stream not in self._sets:
            self._sets[stream] = fixed_set(
                self.config,
                stream,
                lambda count, generator: adding.draw_batch(self.data, count, generator),
            )
        batch = self._sets[stream]
        read = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)[:, -1, 0]
        error = read - batch.targets
        mse = float(error.square().mean())
        return {
            "loss": mse,
            "mse": mse,
            "accuracy": float((error.abs() < ADDING_TOLERANCE).double().mean()),
        }

    def describe(self) -> str:
        return (
            f"adding problem, T = {self.data.sequence_length}, markers "
            f"{self.data.marker_placement} (the constant 1 scores mse 0.167)"
        )


class SequentialDigitsProblem:
    """The digit is read from the model's output at the last pixel. Validation and test both
    score the held-out images (validation only watches training)."""

    unit = "sequence"
    vocabulary_size = None
    input_size: int | None = 1
    output_size = sequential_digits.NUM_CLASSES

    def __init__(self, config: Any) -> None:
        self.config, self.data = config, config.data
        self._test: SequenceBatch | None = None

    def train_batch(self, batch_size: int, generator: torch.Generator) -> SequenceBatch:
        return sequential_digits.draw_batch(self.data, batch_size, generator, "train")

    def loss(self, model: SequenceModel, batch: SequenceBatch) -> tuple[Tensor, int]:
        outputs, _ = model(batch.inputs)  # (B, 64, 10)
        return functional.cross_entropy(outputs[:, -1], batch.targets), len(batch.targets)

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        if self._test is None:
            whole = sequential_digits.load_split(self.data, "test")
            count = min(self.config.evaluation.sequences, len(whole.targets))
            self._test = SequenceBatch(whole.inputs[:count], whole.targets[:count])
        batch = self._test
        logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)[:, -1]
        return {
            "loss": float(functional.cross_entropy(logits, batch.targets)),
            "accuracy": float((logits.argmax(-1) == batch.targets).double().mean()),
        }

    def describe(self) -> str:
        order = "a fixed random pixel order" if self.data.permuted else "row by row"
        return f"scikit-learn's 8x8 digits read one pixel per step ({order}), T = 64"
