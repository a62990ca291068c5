"""Gradual magnitude pruning during training: weights, blocks and hidden units.

Narang et al. 2017, "Exploring Sparsity in Recurrent Neural Networks"
(https://arxiv.org/abs/1704.05119): every ``frequency`` steps from ``start_step`` to
``end_step`` each layer drops the weights whose magnitude is below a threshold that grows
with the step (theta = ``start_slope``, phi = ``ramp_slope``, f = ``frequency``)::

    eps(t) = theta (t - start + 1) / f                                  start <= t < ramp
    eps(t) = (theta (ramp - start + 1) + phi (t - ramp + 1)) / f        ramp <= t <= end

With the slopes unset, the paper's heuristic sets them per layer from q, the layer's
``final_sparsity`` quantile of the magnitudes (measured at each update, not once on a trained
model as in the paper): theta = 2 q f / (2 (ramp - start) + 3 (end - ramp)), phi = 1.5 theta,
so eps(end) ~ q; the threshold is capped at q and the update at ``end_step`` keeps exactly the
largest ``1 - final_sparsity`` of the layer. With the slopes set, the thresholds are absolute
as in the paper and the sparsity reached is whatever they give.

The ``cubic`` schedule (Zhu & Gupta 2017, https://arxiv.org/abs/1710.01878) prunes each
update to exactly s(t) = s_f (1 - (1 - (t - start) / (end - start))^3) of the layer.

What a score is (``granularity``): ``weight``, |w|; ``block``, the largest |w| of each
``block_rows x block_columns`` block (Narang et al. 2017b, "Block-Sparse Recurrent Neural
Networks", https://arxiv.org/abs/1711.02782), a pruned block is zero whole; ``unit``, the L2
norm of a hidden unit j of a cell: rows r = j (mod H) of every weight with a multiple of H rows
(all its gates), column j of ``weight_hh``; its ``bias*`` entries are zeroed with it, so an
LSTM, GRU or tanh Elman unit outputs exactly zero from a zero state and the layer can shrink.

Masks are kept: pruned weights get zero gradients and are zeroed again after every optimizer
step, so they stay zero; masks are saved with each checkpoint (``training_tensors``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnkit.cells.base import Cell
from rnnkit.train import ranges

SCHEDULES = ("narang", "cubic")
GRANULARITIES = ("weight", "block", "unit")
TARGETS = ("recurrent", "all")
TENSOR_PREFIX = "prune.keep."


@dataclass
class PruneConfig:
    """Gradual magnitude pruning during training (off while ``final_sparsity`` is 0)."""

    final_sparsity: float = 0.0
    """Fraction of each layer's scores (weights, blocks or units) pruned at ``end_step``
    (0: no pruning)."""
    schedule: str = "narang"
    """``narang`` (threshold growing by start_slope, then ramp_slope) or ``cubic`` (Zhu & Gupta)."""
    start_step: int | None = None
    """First step that may prune (None: 10% of trainer.max_steps)."""
    ramp_step: int | None = None
    """narang: the step where the threshold's slope rises to ramp_slope (None: halfway from
    start_step to end_step)."""
    end_step: int | None = None
    """The last update; masks are fixed after it (None: 50% of trainer.max_steps)."""
    frequency: int = 100
    """Update the masks at steps that are multiples of this (and at end_step)."""
    start_slope: float | None = None
    """narang theta, threshold growth per ``frequency`` steps (None: from each layer's quantile
    q of final_sparsity, which makes the final sparsity exact)."""
    ramp_slope: float | None = None
    """narang phi after ramp_step (None: 1.5 start_slope)."""
    granularity: str = "weight"
    """What is pruned: ``weight``, ``block`` (by its largest magnitude) or ``unit`` (hidden units
    of recurrent cells, by L2 norm)."""
    block_rows: int = 4
    """Rows of a block (granularity block)."""
    block_columns: int = 4
    """Columns of a block (granularity block)."""
    targets: str = "recurrent"
    """``recurrent``: every matrix of the recurrent layers (input, recurrent, gate and projection
    weights); ``all``: every matrix but embeddings (the output head too)."""

    def __post_init__(self) -> None:
        ranges.between("final_sparsity", self.final_sparsity, 0.0, 1.0, high_included=False)
        ranges.choice("schedule", self.schedule, SCHEDULES)
        ranges.choice("granularity", self.granularity, GRANULARITIES)
        ranges.choice("targets", self.targets, TARGETS)
        for name in ("start_step", "ramp_step", "end_step"):
            ranges.at_least(name, getattr(self, name), 0, optional=True)
        ranges.at_least("frequency", self.frequency, 1)
        ranges.positive("start_slope", self.start_slope, optional=True)
        ranges.positive("ramp_slope", self.ramp_slope, optional=True)
        ranges.at_least("block_rows", self.block_rows, 1)
        ranges.at_least("block_columns", self.block_columns, 1)
        if self.granularity == "unit" and self.targets != "recurrent":
            raise ValueError("granularity 'unit' prunes hidden units of cells: targets 'recurrent'")

    @property
    def enabled(self) -> bool:
        return self.final_sparsity > 0

    def steps(self, max_steps: int | None) -> tuple[int, int, int]:
        """``(start, ramp, end)`` with the defaults filled from ``max_steps``."""
        if max_steps is None and (self.start_step is None or self.end_step is None):
            raise ValueError("set prune.start_step and prune.end_step when max_steps is null")
        start = self.start_step if self.start_step is not None else (max_steps or 0) // 10
        end = self.end_step if self.end_step is not None else (max_steps or 0) // 2
        ramp = self.ramp_step if self.ramp_step is not None else (start + end) // 2
        if not start <= ramp <= end or start == end:
            raise ValueError(
                f"prune steps must be start <= ramp <= end and start < end, got start {start}, "
                f"ramp {ramp}, end {end}"
            )
        return start, ramp, end


def narang_threshold(
    step: int, steps: tuple[int, int, int], frequency: int, start_slope: float, ramp_slope: float
) -> float:
    """Narang et al.'s threshold eps(step) for ``steps = (start, ramp, end)`` (0 before start,
    eps(end) after end)."""
    start, ramp, end = steps
    if step < start:
        return 0.0
    step = min(step, end)
    if step < ramp:
        return start_slope * (step - start + 1) / frequency
    return (start_slope * (ramp - start + 1) + ramp_slope * (step - ramp + 1)) / frequency


def heuristic_start_slope(quantile: float, steps: tuple[int, int, int], frequency: int) -> float:
    """theta = 2 q f / (2 (ramp - start) + 3 (end - ramp)): with phi = 1.5 theta, eps(end) ~ q."""
    start, ramp, end = steps
    return 2 * quantile * frequency / (2 * (ramp - start) + 3 * (end - ramp))


def cubic_sparsity(step: int, start: int, end: int, final_sparsity: float) -> float:
    """Zhu & Gupta's s(step) = s_f (1 - (1 - (step - start) / (end - start))^3), in [0, s_f]."""
    progress = min(max((step - start) / (end - start), 0.0), 1.0)
    return final_sparsity * (1 - (1 - progress) ** 3)


@dataclass
class PruneGroup:
    """A layer pruned as one: one matrix (weight, block) or one cell's parameters (unit)."""

    name: str
    parameters: list[tuple[str, nn.Parameter]]
    hidden_size: int = 0  # unit granularity: the cell's H


def find_groups(model: nn.Module, config: PruneConfig) -> list[PruneGroup]:
    """The layers pruned: named as in ``model.named_parameters()``."""
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    if config.granularity == "unit":
        groups = []
        for module_name, module in model.named_modules():
            if isinstance(module, Cell):
                owned = [(names[id(p)], p) for _, p in module.named_parameters() if id(p) in names]
                groups.append(PruneGroup(module_name, owned, module.hidden_size))
        if not groups:
            raise ValueError("prune.granularity 'unit' found no recurrent cell in the model")
        return groups
    recurrent: set[int] = set()
    embeddings: set[int] = set()
    for module in model.modules():
        if isinstance(module, Cell | nn.RNNBase) or hasattr(module, "all_weights"):
            recurrent.update(id(parameter) for parameter in module.parameters())
        if isinstance(module, nn.Embedding):
            embeddings.add(id(module.weight))
    chosen = recurrent if config.targets == "recurrent" else set(names) - embeddings
    return [
        PruneGroup(name, [(name, parameter)])
        for name, parameter in model.named_parameters()
        if parameter.dim() == 2 and id(parameter) in chosen
    ]


def _unit_parts(group: PruneGroup) -> list[tuple[nn.Parameter, str]]:
    """The parameters of a cell that belong to its units: ``rows``, ``columns`` or ``bias``."""
    size, parts = group.hidden_size, []
    for name, parameter in group.parameters:
        leaf = name.rsplit(".", 1)[-1]
        if parameter.dim() == 2 and parameter.shape[0] % size == 0:
            parts.append((parameter, "rows"))
        if parameter.dim() == 2 and leaf.startswith("weight_hh") and parameter.shape[1] == size:
            parts.append((parameter, "columns"))
        if parameter.dim() == 1 and leaf.startswith("bias") and parameter.shape[0] % size == 0:
            parts.append((parameter, "bias"))
    return parts


def group_scores(group: PruneGroup, config: PruneConfig) -> Tensor:
    """``(N,)`` magnitudes of the group's weights, blocks or units."""
    if config.granularity == "unit":
        device = group.parameters[0][1].device
        squares = torch.zeros(group.hidden_size, dtype=torch.float64, device=device)
        for parameter, kind in _unit_parts(group):
            values = parameter.detach().double() ** 2
            if kind == "rows":
                squares += values.reshape(-1, group.hidden_size, values.shape[1]).sum((0, 2))
            elif kind == "columns":
                squares += values.sum(0)
        return squares.sqrt()
    weight = group.parameters[0][1].detach().abs()
    if config.granularity == "weight":
        return weight.reshape(-1)
    rows, columns = config.block_rows, config.block_columns
    padded = nn.functional.pad(weight, (0, -weight.shape[1] % columns, 0, -weight.shape[0] % rows))
    blocks = padded.reshape(padded.shape[0] // rows, rows, padded.shape[1] // columns, columns)
    return blocks.amax(dim=(1, 3)).reshape(-1)  # (row blocks * column blocks,)


def group_masks(
    group: PruneGroup, keep: Tensor, config: PruneConfig
) -> list[tuple[nn.Parameter, Tensor]]:
    """Each parameter of the group with its boolean mask (True: kept) for ``keep`` ``(N,)``."""
    if config.granularity == "unit":
        masks: dict[int, tuple[nn.Parameter, Tensor]] = {}
        for parameter, kind in _unit_parts(group):
            mask = masks.get(
                id(parameter), (parameter, torch.ones_like(parameter, dtype=torch.bool))
            )[1]
            if kind == "columns":
                mask &= keep[None, :]
            else:
                units = keep.repeat(parameter.shape[0] // group.hidden_size)  # r -> r mod H
                mask &= units[:, None] if kind == "rows" else units
            masks[id(parameter)] = (parameter, mask)
        return list(masks.values())
    parameter = group.parameters[0][1]
    if config.granularity == "weight":
        return [(parameter, keep.reshape(parameter.shape))]
    row_blocks = -(-parameter.shape[0] // config.block_rows)
    mask = keep.reshape(row_blocks, -1).repeat_interleave(config.block_rows, 0)
    mask = mask.repeat_interleave(config.block_columns, 1)
    return [(parameter, mask[: parameter.shape[0], : parameter.shape[1]])]


def keep_largest(scores: Tensor, pruned: int) -> Tensor:
    """``(N,)`` True for all but the ``pruned`` smallest scores (ties: torch.topk's order)."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[scores.topk(scores.numel() - pruned).indices] = True
    return keep


class Pruner:
    """The masks of a model pruned during training; the trainer calls ``mask_gradients`` after
    ``backward`` and ``after_step(step)`` after each optimizer step (``step``: steps done)."""

    def __init__(self, model: nn.Module, config: PruneConfig, max_steps: int | None) -> None:
        self.config = config
        self.groups = find_groups(model, config) if config.enabled else []
        self.steps = config.steps(max_steps) if config.enabled else (0, 0, 0)  # start, ramp, end
        self.keep = {
            g.name: torch.ones(len(group_scores(g, config)), dtype=torch.bool) for g in self.groups
        }
        self._masks = self._expand()

    def due(self, step: int) -> bool:
        """Whether the masks are updated after ``step`` steps."""
        start, _, end = self.steps
        inside = start <= step < end and step % self.config.frequency == 0
        return self.config.enabled and (inside or step == end)

    def after_step(self, step: int) -> None:
        """Update the masks when due, then zero the pruned weights."""
        if self.due(step):
            for group in self.groups:
                self.keep[group.name] = self._updated(group, step)
            self._masks = self._expand()
        self.apply()

    def _updated(self, group: PruneGroup, step: int) -> Tensor:
        config, scores = self.config, group_scores(group, self.config).cpu()
        target = round(config.final_sparsity * scores.numel())
        if config.schedule == "cubic":
            fraction = cubic_sparsity(step, self.steps[0], self.steps[2], config.final_sparsity)
            return keep_largest(scores, round(fraction * scores.numel()))
        if config.start_slope is None:
            if step == self.steps[2]:
                return keep_largest(scores, target)
            quantile = float(scores.sort().values[min(target, scores.numel() - 1)])
            start_slope = heuristic_start_slope(quantile, self.steps, config.frequency)
        else:
            start_slope, quantile = config.start_slope, float("inf")
        ramp_slope = config.ramp_slope if config.ramp_slope is not None else 1.5 * start_slope
        threshold = narang_threshold(step, self.steps, config.frequency, start_slope, ramp_slope)
        return self.keep[group.name] & (scores >= min(threshold, quantile))

    def _expand(self) -> list[tuple[nn.Parameter, Tensor]]:
        """Every pruned parameter with its ``pruned`` mask (True: zero)."""
        pairs = [group_masks(group, self.keep[group.name], self.config) for group in self.groups]
        return [(p, (~mask).to(p.device)) for masks in pairs for p, mask in masks]

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights."""
        for parameter, pruned in self._masks:
            parameter.masked_fill_(pruned, 0.0)

    @torch.no_grad()
    def mask_gradients(self) -> None:
        """Zero the gradients of the pruned weights."""
        for parameter, pruned in self._masks:
            if parameter.grad is not None:
                parameter.grad.masked_fill_(pruned, 0.0)

    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of each layer's scores (weights, blocks or units) pruned."""
        return {name: 1.0 - keep.double().mean().item() for name, keep in self.keep.items()}

    def sparsity(self) -> float:
        """Fraction of the pruned layers' matrix entries that are pruned."""
        matrices = [pruned for parameter, pruned in self._masks if parameter.dim() == 2]
        total = sum(pruned.numel() for pruned in matrices)
        return sum(int(pruned.sum()) for pruned in matrices) / max(total, 1)

    def metrics(self) -> dict[str, float]:
        """``{"sparsity": ...}`` while pruning is on (nothing otherwise), for metrics.jsonl."""
        return {"sparsity": round(self.sparsity(), 6)} if self.config.enabled else {}

    def state_tensors(self) -> dict[str, Tensor]:
        """The masks (as kept-scores vectors) for a checkpoint."""
        return {TENSOR_PREFIX + name: keep for name, keep in self.keep.items()}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore the masks saved by ``state_tensors`` and zero the pruned weights."""
        for name in self.keep:
            saved = tensors.get(TENSOR_PREFIX + name)
            if saved is None or saved.shape != self.keep[name].shape:
                raise ValueError(f"the checkpoint has no pruning mask for {name!r} of this shape")
            self.keep[name] = saved.to(torch.bool)
        self._masks = self._expand()
        self.apply()
