"""What a task gives the trainer, and what the trainer gives back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from torch import Tensor, nn


class TrainingTask(Protocol):
    """What a task gives the trainer."""

    unit: str  # what a loss is averaged over, for throughput ("char")
    # A task whose loss is not a cross-entropy in nats names its unit in an attribute
    # ``loss_unit`` ("scaled MSE"); the trainer's progress lines print it.

    @property
    def model(self) -> nn.Module:
        """The model trained (read-only here, so a task may hold a subclass of nn.Module)."""

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        """Mean loss of the batch of ``step`` (with its graph) and the number of items in it."""

    def evaluate(self) -> dict[str, float]:
        """Validation metrics, at least ``loss`` (nats per item)."""

    def training_tensors(self) -> dict[str, Tensor]:
        """Tensors the task carries between steps (a recurrent state), for checkpoints."""

    def load_training_tensors(self, tensors: dict[str, Tensor]) -> None: ...

    def metadata(self) -> dict[str, Any]:
        """JSON the task needs to rebuild itself from a checkpoint (its vocabulary)."""


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass
class FitResult:
    step: int
    reason: str  # "steps", "time" or "interrupted"
    evaluation: dict[str, float]
    train_seconds: float
    signal_number: int = 2
    """The signal that interrupted the run (SIGINT, SIGTERM or SIGHUP); exit code 128 + it."""
