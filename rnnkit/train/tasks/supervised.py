"""What the supervised tasks share (seq2seq, pointer networks, CTC): batches that depend only on
the seed and the step, and loading a trained run back.

A batch drawn from ``batch_generator(seed, step)`` is the same whenever step ``step`` runs, so
a resumed run sees exactly the batches the uninterrupted run would have seen, with nothing to
carry in the checkpoint. Validation and test sets come from their own fixed generators.

Under torchrun every rank draws the same whole batch and trains on its rows (``rank_rows``), so
N ranks see exactly the global batch of one process; a task that does so declares
``splits_batch_by_rank = True`` (``rnnkit.train.distributed``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from rnnkit.train import checkpoint as checkpoints
from rnnkit.train import distributed
from rnnkit.train.config import from_dict
from rnnkit.train.threads import set_threads

Batch = TypeVar("Batch")

VALIDATION_STREAM = 1
TEST_STREAM = 2
_STREAMS = 1_000_003  # separates the seeds of training steps from those of the fixed sets


def batch_generator(seed: int, step: int) -> torch.Generator:
    """The random generator of training step ``step``."""
    return torch.Generator().manual_seed(seed * _STREAMS * 4 + 4 * step + 3)


def fixed_generator(seed: int, stream: int) -> torch.Generator:
    """The generator of a fixed set: ``VALIDATION_STREAM`` or ``TEST_STREAM``."""
    return torch.Generator().manual_seed(seed * _STREAMS * 4 + stream)


def rank_rows(batch: Batch, batch_size: int) -> Batch:
    """This rank's rows of a whole batch of ``batch_size`` rows drawn from ``batch_generator``:
    every tensor whose first dimension is ``batch_size`` (batch-first fields) is cut to the rows
    of ``distributed.Ranks.rows``, through tuples, NamedTuples, lists, dicts and dataclasses;
    anything else is kept. Padding stays that of the whole batch. One process: ``batch``."""
    ranks = distributed.current()
    if not ranks.active:
        return batch
    return _cut(batch, batch_size, ranks.rows(batch_size))


def _cut(value: Any, batch_size: int, rows: slice) -> Any:
    if isinstance(value, Tensor):
        return value[rows] if value.dim() and value.shape[0] == batch_size else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(_cut(item, batch_size, rows) for item in value))
    if isinstance(value, (tuple, list)):
        return type(value)(_cut(item, batch_size, rows) for item in value)
    if isinstance(value, dict):
        return {key: _cut(item, batch_size, rows) for key, item in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = [field.name for field in dataclasses.fields(value) if field.init]
        cut = {name: _cut(getattr(value, name), batch_size, rows) for name in fields}
        return dataclasses.replace(value, **cut)
    return value


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
