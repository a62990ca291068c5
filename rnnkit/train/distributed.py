"""Data-parallel training over the processes torchrun starts.

    torchrun --nproc_per_node=2 -m rnnkit train charlm --steps 1000 --trainer.batch_size=64

Every process (rank) holds a whole copy of the model and draws the same global batch of B rows
from the seed and the step; a task that splits its batch by rank trains rank ``r`` on rows
``r * B/N ... (r + 1) * B/N - 1`` (``Ranks.rows``). After the backward pass the gradients are
summed over the ranks, each rank's weighted by its share of the step's items::

    g = sum_r (n_r / n) * g_r          n_r: items (tokens, sequences) on rank r, n = sum_r n_r

which is the gradient of the mean loss over the whole batch: the update equals one process
training on B rows (up to the order of the floating-point sums), provided each rank's loss is
the mean over the items ``train_loss`` reports (a term that is not, like a depth recursion's
ponder cost, is averaged over the ranks instead). A task splits with
``supervised.rank_rows`` (charlm: ``charlm.rank_streams``) and declares
``splits_batch_by_rank = True``; one that does not trains every rank on the whole batch: the
same result, no speed-up. All ranks share one seed, so their dropout masks are drawn alike
(a run with dropout equals one process only in distribution).

Rank 0 alone writes metrics, plots and checkpoints; the ranks agree every step on the clock
(the slowest rank's) and on a stop (any rank's signal), so they stop and evaluate at the same
step.

Why not ``DistributedDataParallel``: DDP reduces gradients from hooks its own ``forward`` arms,
while a task calls its model through several methods inside ``train_loss`` (``forward``,
``loss``, ``teacher_forced``, ``forced``): no single forward to wrap. One ``all_reduce`` of the
flattened gradients after the backward pass is DDP's arithmetic without that requirement.

Backends: gloo for CPU tensors (rnnkit trains on the CPU), NCCL for CUDA ones when a GPU is
present (``"cpu:gloo,cuda:nccl"``). An error on one rank ends its process; torchrun then stops
the others (and a peer blocked in a collective sees the closed connection).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, distributed, nn

from rnnkit.train.metrics import Progress
from rnnkit.train.task import FitResult
from rnnkit.train.threads import threads_restored

if TYPE_CHECKING:  # the task registry imports the trainer, which imports this module
    from rnnkit.train.tasks.definition import TaskDefinition


@dataclass(frozen=True)
class Ranks:
    """This process's place among ``world_size`` training processes (one process: ``Ranks()``)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run folder."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of ``batch_size`` rows."""
        if batch_size % self.world_size:
            raise ValueError(
                f"trainer.batch_size {batch_size} does not split evenly over "
                f"{self.world_size} processes; use a multiple of {self.world_size}"
            )
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def combine(self, loss_value: float, items: int, splits: bool) -> tuple[float, int, float]:
        """The loss and items of the global batch, and this rank's gradient weight ``n_r / n``
        (one process: its own, weight 1). Without ``splits`` every rank trained on the whole
        batch: its items are counted once."""
        if not self.active:
            return loss_value, items, 1.0
        weighted, total = self.sum([loss_value * items, float(items)])
        return weighted / total, int(total) if splits else items, items / total

    def describe(self, splits: bool) -> str:
        share = "its share of each batch"
        if not splits:
            share = "the whole batch (this task does not split its batches by rank yet)"
        return f"data parallel over {self.world_size} processes; each trains on {share}"

    def barrier(self) -> None:
        if self.active:
            distributed.barrier()

    def sum(self, values: list[float]) -> list[float]:
        """``values`` summed over the ranks (float64)."""
        return self._reduce(values, distributed.ReduceOp.SUM)

    def maximum(self, values: list[float]) -> list[float]:
        """``values`` maximized over the ranks (float64)."""
        return self._reduce(values, distributed.ReduceOp.MAX)

    def _reduce(self, values: list[float], operation: Any) -> list[float]:
        if not self.active:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        distributed.all_reduce(tensor, operation)
        return tensor.tolist()

    def sum_gradients(self, parameters: list[nn.Parameter], weight: float) -> None:
        """Every gradient becomes ``sum_r weight_r * grad_r``; a parameter keeps no gradient
        (None, so the optimizer skips it) only when no rank gave it one."""
        if not self.active:
            return
        trained = [parameter for parameter in parameters if parameter.requires_grad]
        has_gradient = torch.tensor([float(p.grad is not None) for p in trained])
        distributed.all_reduce(has_gradient)
        for dtype in {parameter.dtype for parameter in trained}:
            group = [p for p in trained if p.dtype == dtype]
            flat = torch.cat(
                [
                    (p.grad * weight if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p in group
                ]
            )
            distributed.all_reduce(flat)
            for parameter, gradient in zip(
                group, flat.split([p.numel() for p in group]), strict=True
            ):
                parameter.grad = gradient.view_as(parameter).clone()
        for parameter, given in zip(trained, has_gradient.tolist(), strict=True):
            if not given:
                parameter.grad = None

    def gather_rows(self, tensor: Tensor, dim: int = 0) -> Tensor:
        """The ranks' ``tensor`` concatenated along ``dim`` in rank order (one rank: itself)."""
        if not self.active:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        distributed.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim)

    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's ``module``."""
        if not self.active:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                distributed.broadcast(tensor.data, src=0)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` (any picklable object) on every rank."""
        if not self.active:
            return value
        box = [value]
        distributed.broadcast_object_list(box, src=0)
        return box[0]


def current() -> Ranks:
    """The ranks of the process group torch has initialized (``Ranks()`` without one)."""
    if distributed.is_available() and distributed.is_initialized():
        return Ranks(distributed.get_rank(), distributed.get_world_size())
    return Ranks()


def start_from_environment() -> Ranks:
    """Join the process group torchrun describes (``WORLD_SIZE`` > 1 in the environment);
    without it, one process: ``Ranks()``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or distributed.is_initialized():
        return current()
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    distributed.init_process_group(backend)
    return current()


def follow(
    definition: TaskDefinition,
    config: Any,
    run_dir: Path,
    document: dict[str, Any] | None,
) -> FitResult:
    """A rank other than 0 trains its share of the run and writes nothing: the same task and
    trainer as rank 0's ``rnnkit.train.run.train`` (which holds the run folder's lock and writes
    it), no report."""
    from rnnkit.train.run import build_task, build_trainer  # the trainer imports this module

    with threads_restored(), open(os.devnull, "w") as silent:
        task = build_task(definition, config, document)
        progress = Progress(silent, interactive=False)
        return build_trainer(definition, config, task, run_dir, document, progress).fit()


def stop() -> None:
    """Leave the process group (if this process joined one)."""
    if distributed.is_available() and distributed.is_initialized():
        distributed.destroy_process_group()
