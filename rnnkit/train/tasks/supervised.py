"""What the supervised tasks share (seq2seq, pointer networks, CTC): batches that depend only on
the seed and the step, and loading a trained run back.

A batch drawn from ``batch_generator(seed, step)`` is the same whenever step ``step`` runs, so
a resumed run sees exactly the batches the uninterrupted run would have seen, with nothing to
carry in the checkpoint. Validation and test sets come from their own fixed generators.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit.train import checkpoint as checkpoints
from rnnkit.train.config import from_dict
from rnnkit.train.threads import set_threads

VALIDATION_STREAM = 1
TEST_STREAM = 2
_STREAMS = 1_000_003  # separates the seeds of training steps from those of the fixed sets


def batch_generator(seed: int, step: int) -> torch.Generator:
    """The random generator of training step ``step``."""
    return torch.Generator().manual_seed(seed * _STREAMS * 4 + 4 * step + 3)


def fixed_generator(seed: int, stream: int) -> torch.Generator:
    """The generator of a fixed set: ``VALIDATION_STREAM`` or ``TEST_STREAM``."""
    return torch.Generator().manual_seed(seed * _STREAMS * 4 + stream)


class NoCarriedTensors:
    """For tasks whose batches carry nothing between steps (no recurrent state)."""

    def training_tensors(self) -> dict[str, Tensor]:
        return {}

    def load_training_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Nothing to restore (``tensors`` holds the optimizer's and the generators')."""


def load_run(
    run_dir: str | Path,
    name: str,
    config_type: type,
    build: Callable[[Any, dict[str, Any] | None], Any],
) -> tuple[Any, Any, int]:
    """``(config, task, step)`` of a trained run of task ``name``: weights loaded, eval mode,
    torch's and Numba's threads set as the run trained (``trainer.threads``, when not 0); each
    task's ``evaluate_run`` is decorated with ``restoring_threads`` so they are put back."""
    document = checkpoints.read_checkpoint(run_dir)
    if document.get("task") != name:
        raise checkpoints.CheckpointError(
            f"{run_dir}: a {document.get('task')!r} run, not a {name!r} one"
        )
    config: Any = from_dict(config_type, document["config"])  # the task's own config dataclass
    set_threads(config.trainer.threads)  # callers run inside threads_restored
    task = build(config, document["metadata"])
    checkpoints.load_weights(run_dir, document, task.model)
    task.model.eval()
    return config, task, int(document["step"])
