"""The training loop every task reuses.

A task (``TrainingTask``) owns its model, data and loss; the ``Trainer`` owns everything else:
AdamW with warm-up and cosine decay, clipping, gradient noise, stopping on steps or on a
budget of training seconds, evaluation at intervals and at the end, ``metrics.jsonl``, the
progress display, checkpoints and resuming, the loss plot, and stopping cleanly on Ctrl-C or on
a NaN or infinite loss.

Under torchrun the trainer of every rank sums the gradients over the ranks and agrees with the
others on the clock and on stopping; rank 0 alone writes the run folder (see
``rnnkit.train.distributed``).

Clocks: ``train_seconds`` counts training steps only (the time budget and the schedule use it;
evaluation and checkpointing pause it); ``elapsed_seconds`` is the wall clock of the run.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rnnkit.train import checkpoint as checkpoints
from rnnkit.train import distributed, ranges
from rnnkit.train.metrics import (
    MetricsLog,
    Progress,
    TrainingMeter,
    bits_per_character,
    format_evaluation,
    format_rate,
    read_metrics,
)
from rnnkit.train.optimization import (
    OptimizerConfig,
    WarmupCosineSchedule,
    add_gradient_noise,
    build_optimizer,
    clip_gradients,
)
from rnnkit.train.plots import PLOT_FILE, plot_losses
from rnnkit.train.pruning import PruneConfig, Pruner
from rnnkit.train.task import FitResult, TrainingDiverged, TrainingTask


@dataclass
class TrainerConfig:
    """When to stop, evaluate, log and checkpoint."""

    max_steps: int | None = None
    """Stop after this many optimizer steps (None: only the time budget stops the run)."""
    time_budget_seconds: float | None = 300.0
    """Stop after this many seconds of training (None: only max_steps stops the run)."""
    batch_size: int = 32
    """Sequences (streams, for language models) per step."""
    eval_interval: int = 0
    """Evaluate (and checkpoint) every this many steps (0: by time only)."""
    eval_interval_seconds: float = 30.0
    """Evaluate (and checkpoint) every this many training seconds (0: by steps only)."""
    log_interval: int = 10
    """Steps averaged into each training record of metrics.jsonl."""
    log_seconds: float = 10.0
    """Least seconds between two plain log lines (when output is not a terminal)."""
    threads: int = 0
    """torch CPU threads (0: torch's default, one per core)."""
    prune: PruneConfig = field(default_factory=PruneConfig)
    """Gradual magnitude pruning during training (``--prune.KEY`` is short for
    ``--trainer.prune.KEY``; off by default)."""

    def __post_init__(self) -> None:
        ranges.at_least("max_steps", self.max_steps, 1, optional=True)
        ranges.positive("time_budget_seconds", self.time_budget_seconds, optional=True)
        if self.max_steps is None and self.time_budget_seconds is None:
            raise ValueError("set max_steps or time_budget_seconds (or both); both are null")
        ranges.at_least("batch_size", self.batch_size, 1)
        ranges.at_least("eval_interval", self.eval_interval, 0)
        ranges.at_least("eval_interval_seconds", self.eval_interval_seconds, 0)
        ranges.at_least("log_interval", self.log_interval, 1)
        ranges.at_least("log_seconds", self.log_seconds, 0)
        ranges.at_least("threads", self.threads, 0)
        if self.prune.enabled:
            self.prune.steps(self.max_steps)  # refuses steps that cannot be resolved


class Trainer:
    """Trains ``task.model`` into ``run_dir``; ``info`` is saved in every checkpoint."""

    def __init__(
        self,
        task: TrainingTask,
        config: TrainerConfig,
        optimizer_config: OptimizerConfig,
        run_dir: Path,
        info: dict[str, Any],
        progress: Progress | None = None,
    ) -> None:
        if config.max_steps is None and config.time_budget_seconds is None:
            raise ValueError("set trainer.max_steps or trainer.time_budget_seconds (or both)")
        self.task, self.config, self.run_dir, self.info = task, config, run_dir, info
        self.optimizer_config = optimizer_config
        self.optimizer = build_optimizer(task.model, optimizer_config)
        self.schedule = WarmupCosineSchedule(self.optimizer, optimizer_config)
        self.pruner = Pruner(task.model, config.prune, config.max_steps)
        self.ranks = distributed.current()
        # A task that trains each rank on its rows declares it (rnnkit.train.distributed).
        self.splits = bool(getattr(task, "splits_batch_by_rank", False))
        self.metrics = MetricsLog(run_dir)
        self.progress = progress or Progress(log_seconds=config.log_seconds)
        self.step = 0
        self.train_seconds = 0.0
        self.elapsed_offset = 0.0
        self.last_checkpoint_step: int | None = None
        self.last_plotted_step: int | None = None
        self.last_evaluation: dict[str, float] = {}
        self.last_evaluation_step: int | None = None
        self.last_eval_seconds = 0.0
        self.started: float | None = None
        self.stop_requested = False
        self.stop_agreed = False  # the ranks' agreed stop_requested, updated every step
        self.stop_signal = int(signal.SIGINT)
        self.meter = TrainingMeter()
        self.last_learning_rate, self.last_gradient_norm = 0.0, 0.0

    def progress_fraction(self) -> float:
        fractions = []
        if self.config.max_steps:
            fractions.append(self.step / self.config.max_steps)
        if self.config.time_budget_seconds:
            fractions.append(self.train_seconds / self.config.time_budget_seconds)
        return min(1.0, max(fractions))

    def finished(self) -> str | None:
        """Why the run is over, or None."""
        if self.config.max_steps is not None and self.step >= self.config.max_steps:
            return "steps"
        budget = self.config.time_budget_seconds
        if budget is not None and self.train_seconds >= budget:
            return "time"
        return None

    def fit(self) -> FitResult:
        """Train until a stop; evaluate, checkpoint and plot at the end."""
        self.started = time.monotonic() - self.elapsed_offset
        self.last_eval_seconds = self.train_seconds
        self.ranks.broadcast_module(self.task.model)  # every rank starts from rank 0's weights
        if self.ranks.active:
            self.progress.write(self.ranks.describe(self.splits))
        previous_handlers = self._install_interrupt_handler()
        try:
            reason = self.finished()
            while reason is None and not self._stopping():
                self.train_step()
                if self._evaluation_due():
                    self.evaluate_and_checkpoint()
                reason = self.finished()
        finally:
            for signum, previous in previous_handlers.items():
                signal.signal(signum, previous)
            self.progress.close()
        if reason is None:
            self.save()
            self.plot()
            return FitResult(
                self.step, "interrupted", {}, self.train_seconds, self.stop_signal
            )
        if self.meter.steps:
            self._record_training()
        if self.last_evaluation_step == self.step:
            evaluation = self.last_evaluation
        else:
            evaluation = self.evaluate_and_checkpoint()
        if self.step != self.last_plotted_step:
            self.plot()
        return FitResult(self.step, reason, evaluation, self.train_seconds)

    def train_step(self) -> None:
        """One optimizer step on the task's batch of ``self.step``."""
        self.task.model.train()
        started = time.perf_counter()
        self.last_learning_rate = self.schedule.apply(self.step, self.progress_fraction())
        loss, items = self.task.train_loss(self.step)
        loss_value, items, weight = self.ranks.combine(float(loss.detach()), items, self.splits)
        if not math.isfinite(loss_value):
            self._diverged(f"the loss is {loss_value}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        parameters = list(self.task.model.parameters())
        self.ranks.sum_gradients(parameters, weight)
        self.pruner.mask_gradients()
        gradient_norm = clip_gradients(parameters, self.optimizer_config.clip_norm)
        if not math.isfinite(gradient_norm):
            self._diverged(f"the gradient norm is {gradient_norm}")
        self.last_gradient_norm = gradient_norm
        add_gradient_noise(parameters, self.optimizer_config.gradient_noise, self.step)
        self.optimizer.step()
        if not all(bool(torch.isfinite(parameter).all()) for parameter in parameters):
            self._diverged("the update made some weights NaN or infinite")
        self.step += 1
        self.pruner.after_step(self.step)  # zeroes the pruned weights again
        seconds = time.perf_counter() - started
        self.train_seconds += seconds
        self._agree_across_ranks()
        self.meter.add(loss_value, items, seconds)
        if self.step % self.config.log_interval == 0:
            self._record_training()
        self._show_progress()

    def evaluate_and_checkpoint(self) -> dict[str, float]:
        """Evaluate, record, checkpoint; returns the evaluation."""
        self.task.model.eval()
        evaluation = {**self.task.evaluate(), **self.pruner.metrics()}
        self.last_eval_seconds = self.train_seconds
        self.last_evaluation, self.last_evaluation_step = evaluation, self.step
        not_finite = {k: v for k, v in evaluation.items() if not math.isfinite(float(v))}
        if not_finite:  # a checkpoint is kept as good only when its losses are finite
            self._diverged(f"the validation {not_finite} is not finite", self.step)
        if self.ranks.is_main:
            self.metrics.append({"kind": "validation", **self._clocks(), **evaluation})
        loss_unit = getattr(self.task, "loss_unit", "nats")  # see TrainingTask
        self.progress.write(
            f"step {self.step} | validation " + format_evaluation(evaluation, loss_unit)
        )
        self.save()
        return evaluation

    def save(self) -> None:
        """Checkpoint the current step."""
        optimizer_json, optimizer_tensors = checkpoints.optimizer_parts(self.optimizer)
        rng_json, rng_tensors = checkpoints.capture_rng()
        info = {
            **self.info,
            "metadata": self.task.metadata(),
            "optimizer": optimizer_json,
            "schedule": self.schedule.state_dict(),
            "rng": rng_json,
            "clocks": {"train_seconds": self.train_seconds, "elapsed_seconds": self._elapsed()},
            "meter": self.meter.state(),
        }
        # Every rank gives its training tensors (a task may gather its ranks' carried state).
        tensors = {**optimizer_tensors, **rng_tensors, **self.task.training_tensors()}
        tensors.update(self.pruner.state_tensors())
        if self.ranks.is_main:
            checkpoints.save_checkpoint(self.run_dir, self.step, self.task.model, tensors, info)
        self.ranks.barrier()  # the others wait until the checkpoint is whole
        self.last_checkpoint_step = self.step

    def restore(self, document: dict[str, Any]) -> None:
        """Continue from a checkpoint read by ``checkpoint.read_checkpoint`` (call before fit)."""
        tensors = checkpoints.load_training_tensors(self.run_dir, document)
        checkpoints.load_weights(self.run_dir, document, self.task.model)
        checkpoints.restore_optimizer(self.optimizer, document["optimizer"], tensors)
        self.schedule.load_state_dict(document["schedule"])
        self.task.load_training_tensors(tensors)
        self.pruner.load_state_tensors(tensors)
        checkpoints.restore_rng(document["rng"], tensors)
        self.step = int(document["step"])
        self.train_seconds = float(document["clocks"]["train_seconds"])
        self.elapsed_offset = float(document["clocks"]["elapsed_seconds"])
        self.meter.load_state(document["meter"])
        self.last_checkpoint_step = self.step
        if self.ranks.is_main:
            self.metrics.truncate_after(self.step)
        self.ranks.barrier()
        kept = read_metrics(self.metrics.path)
        # A finished run resumed with nothing left to do reuses its final evaluation instead of
        # appending a duplicate record (and re-saving the same step).
        final = [r for r in kept if r.get("kind") == "validation" and r["step"] == self.step]
        if final:
            clocks = ("kind", "step", "train_seconds", "elapsed_seconds")
            self.last_evaluation = {k: v for k, v in final[-1].items() if k not in clocks}
            self.last_evaluation_step = self.last_plotted_step = self.step

    def plot(self) -> None:
        """Redraw loss.png from metrics.jsonl."""
        self.last_plotted_step = self.step
        if not self.ranks.is_main:
            return
        plot_losses(read_metrics(self.metrics.path), self.run_dir / PLOT_FILE, str(self.run_dir))

    def _evaluation_due(self) -> bool:
        config = self.config
        if config.eval_interval and self.step % config.eval_interval == 0:
            return True
        return bool(
            config.eval_interval_seconds
            and self.train_seconds - self.last_eval_seconds >= config.eval_interval_seconds
        )

    def _stopping(self) -> bool:
        """A stop was requested (in any rank: the ranks' agreement of the last step)."""
        return self.stop_agreed if self.ranks.active else self.stop_requested

    def _agree_across_ranks(self) -> None:
        """All ranks take the slowest rank's training seconds and stop when any rank was asked
        to, so time budgets, evaluations and stops fall on the same step everywhere."""
        own_signal = float(self.stop_signal if self.stop_requested else 0)
        self.train_seconds, stop, signal_number = self.ranks.maximum(
            [self.train_seconds, float(self.stop_requested), own_signal]
        )
        self.stop_agreed = bool(stop)
        if self.stop_agreed and not self.stop_requested:  # exit as the signalled rank does
            self.stop_signal = int(signal_number)

    def _record_training(self) -> None:
        """Record the mean training loss of the steps since the last record."""
        record = self.meter.take_record()
        if not self.ranks.is_main:
            return
        self.metrics.append(
            {
                "kind": "train",
                **self._clocks(),
                "loss": record["loss"],
                "bpc": record["bpc"],
                "learning_rate": self.last_learning_rate,
                "gradient_norm": self.last_gradient_norm,
                **self.pruner.metrics(),
                f"{self.task.unit}s_per_second": record["items_per_second"],
            }
        )

    def _show_progress(self) -> None:
        """The smoothed loss and throughput, the last validation loss, the time left."""
        loss, rate = self.meter.smoothed_loss, self.meter.smoothed_rate
        values = {"loss": f"{loss:.3f}"}
        if self.task.unit == "char":
            values["bpc"] = f"{bits_per_character(loss):.3f}"
        if self.last_evaluation:
            values["val"] = f"{self.last_evaluation['loss']:.3f}"
        values[f"{self.task.unit}/s"] = format_rate(rate)
        fraction = self.progress_fraction()
        seconds_per_step = self.train_seconds / max(1, self.step)
        remaining = []
        if self.config.max_steps:
            remaining.append((self.config.max_steps - self.step) * seconds_per_step)
        if self.config.time_budget_seconds:
            remaining.append(self.config.time_budget_seconds - self.train_seconds)
        self.progress.update(self.step, fraction, values, min(remaining))

    def _clocks(self) -> dict[str, float]:
        return {
            "step": self.step,
            "train_seconds": round(self.train_seconds, 3),
            "elapsed_seconds": round(self._elapsed(), 3),
        }

    def _elapsed(self) -> float:
        if self.started is None:
            return self.elapsed_offset
        return time.monotonic() - self.started

    def _diverged(self, what: str, step: int | None = None) -> None:
        """Stop; the last checkpoint (finite losses and weights) is the last good one."""
        if self.last_checkpoint_step is None:
            raise TrainingDiverged(
                f"training stopped at step {step or self.step + 1}: {what}; no checkpoint had "
                "been written yet. Try a lower --optimizer.learning_rate or --optimizer.clip_norm."
            )
        lower = self.optimizer_config.learning_rate / 10
        raise TrainingDiverged(
            f"training stopped at step {step or self.step + 1}: {what}; the last good "
            f"checkpoint (step {self.last_checkpoint_step}) is kept in {self.run_dir}. Continue "
            f"from it with a lower learning rate: rnnkit train {self.info.get('task')} "
            f"--resume {self.run_dir} --optimizer.learning_rate={lower:g}"
        )

    def _install_interrupt_handler(self) -> dict:
        """First Ctrl-C, SIGTERM or SIGHUP: stop after this step with a checkpoint; a second
        one stops now (the last checkpoint stays whole: saves are atomic)."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def request_stop(signum, frame):
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            self.stop_signal = int(signum)
            name = signal.Signals(signum).name
            self.progress.write(f"{name}: stopping after this step and saving a checkpoint")

        wanted = [signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)]
        return {
            signum: signal.signal(signum, request_stop) for signum in wanted if signum is not None
        }
