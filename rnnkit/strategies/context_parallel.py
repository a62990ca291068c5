"""Context (sequence) parallelism for linear recurrences: the time axis split over ranks.

Each rank of a ``torch.distributed`` process group holds one consecutive chunk of the
sequence, rank 0 the first, and calls the strategy on it, ``inputs (B, T_r, D)``; the chunks
may differ in length. A linear recurrence carries a state ``S`` through an affine map per
chunk, ``S_out = A_r(S_in) + F_r``, with ``F_r`` the chunk's final state from the zero state
and ``A_r`` its transition:

- ``"diagonal"`` (``h_t = a_t * h_{t-1} + b_t``): ``A_r = prod_t a_t`` elementwise ``(B, N)``;
- ``"matrix"`` (``S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T``): ``A_r = diag(exp(sum_t
  log_decay_t))``, ``(B, heads, d_k or 1)``;
- ``"delta"`` (``S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``): ``A_r =
  prod_t alpha_t (I - beta_t k_t k_t^T)``, ``(B, heads, d_k, d_k)``, the delta scan run with
  zero values from ``S_0 = I``.

Steps (one all-gather):

1. rank 0 scans its chunk from the given state, every other rank from the zero state, each
   giving its local hidden states, ``A_r`` and ``F_r``;
2. one all-gather of every rank's ``(A_r, F_r)``; rank r composes its incoming state
   ``S_in = F_{r-1} + A_{r-1}(F_{r-2} + A_{r-2}(... F_0))`` (zero on rank 0);
3. rank r corrects its chunk from ``S_in``: diagonal ``h_t += (prod_{s<=t} a_s) * S_in``;
   matrix ``o_t += S_in^T (exp(sum_{s<=t} log_decay_s) * q_t)``; the delta form has no cheap
   per-step correction, so each rank ``r > 0`` runs its chunk's delta scan a second time from
   ``S_in`` (twice the scan's work there, exact); then the cell's readout.

Backward mirrors it: the all-gather's backward all-reduces the gradients of the gathered
``(A_j, F_j)``, so the gradient of each incoming state flows to the earlier ranks. Input and
initial-state gradients land on the rank that holds them; parameter gradients are each rank's
share and sum over ranks (the all-reduce of data-parallel training) to one process's. Every
rank must run backward through every call (each holds one collective); rank 0's outputs carry
a zero-valued link to the gathered tensor so that it does too.

Runs cells whose whole state is the state the scan carries (minGRU, minLSTM, LRU, S4D, GLA,
DeltaNet, Gated DeltaNet, ...); a cell with more state (the selective SSM's convolution
window, the mLSTM's normalizer and stabilizer, whose terms depend on it), ``lengths`` and
``resets`` are refused with ``StrategyUnsupportedError``. ``state``, the initial state of the
whole sequence, is read on rank 0 only. Unidirectional only: a bidirectional layer's reverse
direction would need the ranks in reverse order, so ``Recurrent`` refuses it
(``splits_time_across_ranks``). Nonlinear cells:
``context_parallel_newton.py``.

Example, on each of N ranks (``torchrun --nproc_per_node=N``), rank r holding steps ``r * T/N``
to ``(r + 1) * T/N - 1``::

    layer = rnnkit.nn.Recurrent("gla", 64, 64, batch_first=True, strategy=ContextParallel())
    outputs, state = layer(inputs[:, start:stop])  # state: at the end of this rank's chunk
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.kernels import diagonal_scan
from rnnkit.strategies.kernels.delta import DELTA_SCAN_IMPLEMENTATIONS
from rnnkit.strategies.kernels.matrix import MATRIX_SCAN_IMPLEMENTATIONS
from rnnkit.strategies.linear_forms import matrix_implementation
from rnnkit.strategies.native import StrategyUnsupportedError
from rnnkit.strategies.validation import prepare

Compose = Callable[[Tensor, Tensor], Tensor]  # (A_j, S) -> A_j(S)


class _AllGather(torch.autograd.Function):
    """``(n,)`` on each rank -> ``(world, n)``; backward all-reduces, works on gloo."""

    @staticmethod
    def forward(ctx, tensor: Tensor, group: dist.ProcessGroup | None) -> Tensor:  # type: ignore[override]
        ctx.group = group
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad[dist.get_rank(ctx.group)], None


def _real_parts(tensor: Tensor) -> Tensor:
    return torch.view_as_real(tensor).flatten() if tensor.is_complex() else tensor.flatten()


def incoming_state(
    transition: Tensor,
    final: Tensor,
    compose: Compose,
    group: dist.ProcessGroup | None,
    reverse: bool = False,
) -> Tensor:
    """This rank's incoming state, shaped as ``final``, from every rank's ``transition`` and
    ``final`` (the chunk's final state from its start state): one all-gather. ``reverse``:
    the recurrence runs from the last rank to the first (an adjoint)."""
    parts = [_real_parts(transition), _real_parts(final)]
    sizes = [part.numel() for part in parts]
    gathered = _AllGather.apply(torch.cat(parts), group)  # (world, n)

    def unpack(row: Tensor, like: Tensor) -> Tensor:
        if like.is_complex():
            return torch.view_as_complex(row.reshape(*like.shape, 2))
        return row.reshape(like.shape)

    # zero-valued link: every rank's result depends on the gather, so every rank's backward
    # reaches the all-reduce
    state = torch.zeros_like(final) + 0 * gathered.sum()
    rank = dist.get_rank(group)
    for row in gathered[rank + 1 :].flip(0) if reverse else gathered[:rank]:
        transitions, finals = row.split(sizes)
        state = compose(unpack(transitions, transition), state) + unpack(finals, final)
    return state


def carries_whole_state(cell: Cell, state: State) -> bool:
    """Whether the scan's carried tensor is the cell's whole state (one field)."""
    if len(state) != 1:
        return False
    carried = cell.scan_initial(state) if cell.linear_form == "diagonal" else None
    if carried is None:
        carried = cell.matrix_initial(state)
    return carried.numel() == state[0].numel()


def with_carried(state: State, carried: Tensor) -> State:
    """The one-field ``state`` with its field replaced by ``carried`` (any layout)."""
    return type(state)(carried.reshape(state[0].shape))


def run_diagonal(
    cell: Cell, inputs: Tensor, state: State, group: dist.ProcessGroup | None, implementation: str
) -> tuple[Tensor, State]:
    """The diagonal form: correction ``h_t += (prod_{s<=t} a_s) * S_in``."""
    projected = cell.project_inputs(inputs)  # (B, T, P)
    a, b = cell.scan_terms(projected, state)
    a = torch.broadcast_to(a, b.shape)  # (B, T, N)
    start = cell.scan_initial(state)  # (B, N)
    hidden = diagonal_scan(a, b, start, implementation=implementation)
    decay = a.cumprod(1)  # prod_{s<=t} a_s
    incoming = incoming_state(decay[:, -1], hidden[:, -1], torch.mul, group)
    hidden = hidden + decay * incoming[:, None]
    return cell.scan_readout(projected, hidden, with_carried(state, start + incoming), None)


def run_matrix(
    cell: Cell, inputs: Tensor, state: State, group: dist.ProcessGroup | None, implementation: str
) -> tuple[Tensor, State]:
    """The matrix form: correction ``o_t += S_in^T (exp(sum_{s<=t} log_decay_s) * q_t)``."""
    scan = MATRIX_SCAN_IMPLEMENTATIONS[matrix_implementation("matrix", implementation)]
    projected = cell.project_inputs(inputs)  # (B, T, P)
    query, key, value, log_decay = cell.matrix_terms(projected, state, None)
    start = cell.matrix_initial(state)  # (B, heads, d_k, d_v)
    outputs, final = scan(query, key, value, log_decay, start)
    decay = log_decay.cumsum(2).exp()  # (B, heads, T, d_k or 1)

    def compose(transition: Tensor, carried: Tensor) -> Tensor:
        return transition.unsqueeze(-1) * carried

    incoming = incoming_state(decay[:, :, -1], final, compose, group)  # (B, heads, d_k, d_v)
    outputs = outputs + torch.einsum("bhtk,bhkv->bhtv", decay * query, incoming)
    final = final + compose(decay[:, :, -1], incoming)
    return cell.matrix_readout(
        projected, outputs, final, with_carried(state, start + incoming), None
    )


def run_delta(
    cell: Cell, inputs: Tensor, state: State, group: dist.ProcessGroup | None, implementation: str
) -> tuple[Tensor, State]:
    """The delta form: ranks after the first run their chunk again from ``S_in``."""
    scan = DELTA_SCAN_IMPLEMENTATIONS[matrix_implementation("delta", implementation)]
    projected = cell.project_inputs(inputs)  # (B, T, P)
    query, key, value, beta, log_decay = cell.delta_terms(projected, state, None)
    start = cell.matrix_initial(state)  # (B, heads, d_k, d_v)
    outputs, final = scan(query, key, value, beta, start, log_decay)
    batch, heads, _, key_size = key.shape
    first = dist.get_rank(group) == 0
    if first:  # rank 0's transition is never read: send zeros of its shape
        transition = key.new_zeros(batch, heads, key_size, key_size)
    else:  # prod_t alpha_t (I - beta_t k_t k_t^T): the scan with zero values from I
        identity = torch.eye(key_size, dtype=key.dtype, device=key.device)
        identity = identity.expand(batch, heads, key_size, key_size)
        _, transition = scan(query, key, torch.zeros_like(key), beta, identity, log_decay)
    incoming = incoming_state(transition, final, torch.matmul, group)
    if first:  # the incoming state is a zero-valued link here
        outputs, final = outputs + incoming.sum() * 0, final + incoming
    else:
        outputs, final = scan(query, key, value, beta, start + incoming, log_decay)
    writes = cell.virtual_steps
    outputs = outputs[:, :, writes - 1 :: writes]  # (B, heads, T, d_v): after each last write
    return cell.matrix_readout(
        projected, outputs, final, with_carried(state, start + incoming), None
    )


RUNNERS = {"diagonal": run_diagonal, "matrix": run_matrix, "delta": run_delta}


class ContextParallel:
    """The strategy for one rank's chunk of the time axis (module docstring):
    ``run(cell, inputs (B, T_r, D), state=None) -> (outputs (B, T_r, O), state at the chunk's
    end)``, usable as ``Recurrent(..., strategy=ContextParallel())`` on every rank.

    Args:
        group: the process group whose ranks hold the chunks in rank order (None: the default
            group, initialized before the first call).
        implementation: the scan implementation, as for ``scan:<implementation>``.
    """

    splits_time_across_ranks = True  # Recurrent refuses it for bidirectional layers

    def __init__(self, group: dist.ProcessGroup | None = None, implementation: str = "auto"):
        self.group = group
        self.implementation = implementation

    def __deepcopy__(self, memo: dict) -> ContextParallel:
        return ContextParallel(self.group, self.implementation)  # a process group is shared

    def __call__(
        self,
        cell: Cell,
        inputs: Tensor,
        state: State | None = None,
        lengths: Tensor | Sequence[int] | None = None,
        resets: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        if lengths is not None or resets is not None:
            raise StrategyUnsupportedError("context parallelism takes neither lengths nor resets")
        if not cell.is_linear or cell.linear_form not in RUNNERS:
            raise StrategyUnsupportedError(
                f"context parallelism runs the linear forms {sorted(RUNNERS)}; cell "
                f"{type(cell).__name__} has {cell.linear_form!r}"
            )
        zero = cell.initial_state(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
        if not carries_whole_state(cell, zero):
            raise StrategyUnsupportedError(
                f"context parallelism needs the scan to carry the whole state; cell "
                f"{type(cell).__name__} keeps more ({', '.join(zero._fields)})"
            )
        state, _ = prepare(cell, inputs, state if dist.get_rank(self.group) == 0 else None, None)
        cell.begin_sequence(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
        return RUNNERS[cell.linear_form](cell, inputs, state, self.group, self.implementation)

    def __repr__(self) -> str:
        return f"ContextParallel(implementation={self.implementation!r})"
