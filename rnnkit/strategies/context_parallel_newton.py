"""Context parallelism for Newton's method (DEER, ParaRNN): the time axis split over ranks for
nonlinear cells, each rank holding one consecutive chunk (rank 0 the first).

Each Newton iteration linearizes every step at the current guess and solves the linear
recurrence ``s_t = J_t s_{t-1} + c_t`` over the whole sequence (``newton.py``). Split over
ranks, that solve is the affine composition of ``context_parallel.py``: each rank solves its
chunk from the zero state (rank 0 from the initial state), the chunk's transition is the
product ``J_T ... J_1`` (elementwise for a diagonal Jacobian, a tree of matrix products for
block and dense ones); one all-gather composes each rank's incoming state, and each rank
``r > 0`` solves its chunk again from it (twice the solve's work there, exact). The residual
is all-reduced (maximum), so every rank stops at the same iteration as one process would.

Backward, by the implicit function theorem as ``newton.py``: the adjoint ``l_t = g_t + J_{t+1}^T
l_{t+1}`` runs from the last rank to the first; a chunk's reverse transition is ``(J_T ...
J_1)^T`` and what it passes to the rank before it is ``J_1^T l_1``: one all-gather composes
each rank's adjoint entering from the right. Parameter gradients are each rank's share and sum
over ranks to one process's; the initial state's gradient lands on rank 0.

Cells: those ``newton`` runs whose outputs are a state field (``output_field``); without
``lengths`` and ``resets``; no damping and no compiled Newton kernels (the Jacobian is the
cell's ``state_jacobian`` or autograd's). ``state`` is read on rank 0 only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies import newton_linear as linear
from rnnkit.strategies.context_parallel import incoming_state
from rnnkit.strategies.native import StrategyUnsupportedError
from rnnkit.strategies.newton import unsupported_reason
from rnnkit.strategies.validation import prepare


def identities(jacobian: linear.Jacobian, like: Tensor) -> Tensor:
    """The identity in ``jacobian``'s structure, shaped as one step ``like (B, ...)``."""
    if jacobian.structure == "diagonal":
        return torch.ones_like(like)
    eye = torch.eye(like.shape[-1], dtype=like.dtype, device=like.device)
    return eye.expand_as(like)


def product(jacobian: linear.Jacobian) -> Tensor:
    """``J_T ... J_1`` over the time axis of ``jacobian.values (B, T, ...)``: ``(B, ...)``."""
    values = jacobian.values
    if jacobian.structure == "diagonal":
        return values.prod(1)
    while values.shape[1] > 1:
        if values.shape[1] % 2:  # an identity after the last step
            values = torch.cat([values, identities(jacobian, values[:, 0]).unsqueeze(1)], 1)
        values = torch.matmul(values[:, 1::2], values[:, 0::2])  # later @ earlier
    return values[:, 0]


def times(structure: str, matrix: Tensor, vector: Tensor) -> Tensor:
    """``matrix (B, ...)`` in ``structure`` times ``vector (B, S)``."""
    return linear.multiply(linear.Jacobian(structure, matrix[:, None]), vector[:, None])[:, 0]


def transposed(jacobian: linear.Jacobian) -> linear.Jacobian:
    if jacobian.structure == "diagonal":
        return jacobian
    return linear.Jacobian(jacobian.structure, jacobian.values.transpose(-1, -2))


def solve_across(
    jacobian: linear.Jacobian, offsets: Tensor, start: Tensor, group: dist.ProcessGroup | None
) -> tuple[Tensor, Tensor]:
    """``s_t = J_t s_{t-1} + c_t`` over every rank's chunk: this rank's incoming state and its
    states ``(B, T, S)``; ``start`` is rank 0's initial state (unused elsewhere)."""
    first = dist.get_rank(group) == 0
    states = linear.solve(jacobian, offsets, start if first else torch.zeros_like(start))
    # rank 0's transition is never read
    transition = torch.zeros_like(jacobian.values[:, 0]) if first else product(jacobian)

    def compose(matrix: Tensor, vector: Tensor) -> Tensor:
        return times(jacobian.structure, matrix, vector)

    incoming = incoming_state(transition, states[:, -1], compose, group)
    if first:
        return start, states
    return incoming, linear.solve(jacobian, offsets, incoming)


class ContextParallelNewton:
    """The Newton strategy for one rank's chunk of the time axis (module docstring): ``run(cell,
    inputs (B, T_r, D), state=None) -> (outputs (B, T_r, H), state at the chunk's end)``.

    Args:
        group: the process group whose ranks hold the chunks in rank order (None: default).
        tolerance: stop when the largest change of a state is at most this (None: 1e-10 in
            float64, 1e-5 otherwise).
        max_iterations: at most this many Newton steps (None: the whole sequence's length,
            after which Newton's method is exact).
        jacobian: ``"full"`` or ``"diagonal"`` (quasi-Newton: the Jacobian's diagonal).
    """

    splits_time_across_ranks = True  # Recurrent refuses it for bidirectional layers

    def __init__(
        self,
        group: dist.ProcessGroup | None = None,
        tolerance: float | None = None,
        max_iterations: int | None = None,
        jacobian: str = "full",
    ):
        if jacobian not in ("full", "diagonal"):
            raise ValueError(f"jacobian must be 'full' or 'diagonal', got {jacobian!r}")
        self.group, self.tolerance, self.max_iterations = group, tolerance, max_iterations
        self.jacobian = jacobian
        self.iterations: list[int] = []  # Newton steps of each call

    def __deepcopy__(self, memo: dict) -> ContextParallelNewton:
        options = (self.group, self.tolerance, self.max_iterations, self.jacobian)
        return ContextParallelNewton(*options)  # a process group is shared

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
        reason = unsupported_reason(cell)
        if reason is None and cell.output_field is None:
            reason = f"cell {type(cell).__name__} has no output_field"
        if reason is not None:
            raise StrategyUnsupportedError(f"context-parallel newton cannot run this: {reason}")
        first = dist.get_rank(self.group) == 0
        state, _ = prepare(cell, inputs, state if first else None, None)
        cell.begin_sequence(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
        projected = cell.project_inputs(inputs)  # (B, T, P)
        initial = cell.flatten_state(state)  # (B, S)
        parameters = [p for p in cell.parameters() if p.requires_grad]
        states = _Solve.apply(self, cell, projected, initial, *parameters)  # (B, T, S)
        assert cell.output_field is not None  # checked above
        outputs = getattr(cell.unflatten_state(states), cell.output_field)
        return outputs, cell.unflatten_state(states[:, -1])

    def solve(self, cell: Cell, projected: Tensor, initial: Tensor) -> tuple[Tensor, Tensor]:
        """This rank's incoming state and states ``(B, T, S)``, without gradients."""
        tolerance = self.tolerance or (1e-10 if projected.dtype == torch.float64 else 1e-5)
        limit = self.max_iterations
        if limit is None:
            steps = torch.tensor(projected.shape[1])
            dist.all_reduce(steps, group=self.group)
            limit = int(steps) + 1
        first = dist.get_rank(self.group) == 0
        incoming = initial if first else torch.zeros_like(initial)  # a guess on rank r > 0
        previous = incoming.unsqueeze(1).expand(-1, projected.shape[1], -1)
        _, states = linear.evaluate(cell, projected, previous)
        iterations = 0
        while True:
            previous = linear.shift(states, incoming)
            _, next_states = linear.evaluate(cell, projected, previous)
            residual = (states - next_states).abs().max().reshape(1)
            dist.all_reduce(residual, op=dist.ReduceOp.MAX, group=self.group)
            if not bool(residual > tolerance) or iterations == limit:
                break
            jacobian = linear.jacobian(cell, projected, previous, self.jacobian == "diagonal")
            offsets = next_states - linear.multiply(jacobian, previous)
            incoming, states = solve_across(jacobian, offsets, initial, self.group)
            iterations += 1
        self.iterations.append(iterations)
        return incoming, states


class _Solve(torch.autograd.Function):
    """States by context-parallel Newton forward; the adjoint across ranks backward."""

    @staticmethod
    def forward(ctx, strategy, cell, projected, initial, *parameters):  # type: ignore[override]
        with torch.no_grad():
            incoming, states = strategy.solve(cell, projected.detach(), initial.detach())
        ctx.cell, ctx.group = cell, strategy.group
        ctx.save_for_backward(projected, incoming, states)
        return states

    @staticmethod
    def backward(ctx, grad_states):  # type: ignore[override]
        projected, incoming, states = ctx.saved_tensors
        cell, group = ctx.cell, ctx.group
        previous = linear.shift(states, incoming)
        with torch.no_grad():
            jacobian = transposed(linear.jacobian(cell, projected.detach(), previous, False))
            # l_t = J_{t+1}^T l_{t+1} + g_t; the last step reads the adjoint from the right
            values = jacobian.values
            shifted = torch.cat([values[:, 1:], identities(jacobian, values[:, :1])], 1)
            shifted = linear.Jacobian(jacobian.structure, shifted)
            zeros = torch.zeros_like(grad_states[:, 0])
            adjoint = linear.solve(shifted, grad_states, zeros, reverse=True)
            # to the rank before: J_1^T l_1 = (J_T ... J_1)^T l_in + J_1^T l_1(l_in = 0)
            forward = transposed(jacobian)  # J_t again
            sent = times(jacobian.structure, values[:, 0], adjoint[:, 0])
            transition = transposed(linear.Jacobian(jacobian.structure, product(forward)[:, None]))

            def compose(matrix: Tensor, vector: Tensor) -> Tensor:
                return times(jacobian.structure, matrix, vector)

            arriving = incoming_state(transition.values[:, 0], sent, compose, group, reverse=True)
            if dist.get_rank(group) < dist.get_world_size(group) - 1:
                adjoint = linear.solve(shifted, grad_states, arriving, reverse=True)
        parameters = dict(cell.named_parameters())
        with torch.enable_grad():
            projected_leaf = projected.detach().requires_grad_(True)
            previous_leaf = previous.detach().requires_grad_(True)
            _, next_states = linear.evaluate(cell, projected_leaf, previous_leaf)
            grads = torch.autograd.grad(
                next_states,
                [projected_leaf, previous_leaf, *parameters.values()],
                adjoint,
                allow_unused=True,
            )
        named = dict(zip(parameters, grads[2:], strict=True))
        by_id = {id(p): name for name, p in cell.named_parameters()}
        grad_parameters = [named[by_id[id(p)]] for p in cell.parameters() if p.requires_grad]
        grad_initial = grads[1][:, 0] if dist.get_rank(group) == 0 else None
        return (None, None, grads[0], grad_initial, *grad_parameters)
