"""The Newton strategy: a nonlinear recurrence solved for all time steps at once.

DEER (Lim et al. 2023, https://arxiv.org/abs/2309.12252) and ParaRNN (Danieli et al. 2025,
https://arxiv.org/abs/2510.21450): the states s_1..s_T of ``s_t = f(s_{t-1}, p_t)`` are the
root of ``r_t(s) = s_t - f(s_{t-1}, p_t)``. Linearizing f around the current trajectory gives a
Newton step that is a linear recurrence, solved with a scan:

    s_t <- J_t s_{t-1} + (f(s'_{t-1}, p_t) - J_t s'_{t-1}),     J_t = df/ds at s'_{t-1}

Each iteration makes at least one more step exact, so T iterations always suffice; contractive
cells converge in a few. Options:

- ``jacobian="exact"`` (Newton) or ``"diagonal"`` (quasi-Newton, quasi-DEER: only the diagonal
  of J, Gonzalez et al. 2024, https://arxiv.org/abs/2407.19115);
- ``damping=True``: Levenberg-Marquardt steps (as ELK damps DEER, Gonzalez et al. 2024):
  the Newton equations ``s_t - J_t s_{t-1} = c_t`` get ``lambda (s_t - s'_t)`` added, so the
  step is still one scan, ``s_t = (J_t s_{t-1} + c_t + lambda s'_t) / (1 + lambda)``; lambda
  starts at 0 (plain Newton), grows four-fold (at least to 0.01) after an iteration that did not
  lower the best residual and shrinks four-fold (to 0 below 0.001) after one that did;
- stop when ``max |s_t - f(s_{t-1}, p_t)| <= tolerance`` (default 1e-10 in float64, 1e-5
  otherwise) or after ``max_iterations`` linear solves. When not converged, the documented
  fallback finishes sequentially from the first step whose residual is above the tolerance; it is
  counted in ``fallbacks``, recorded in the report and warned about, never silent.

Gradients come from the implicit function theorem: with ``G = dL/ds``, the adjoint
``l_t = G_t + J_{t+1}^T l_{t+1}`` is one linear recurrence in reverse, solved with the same
scans, and one vector-Jacobian product of f at the solution gives the gradients of the inputs,
the initial state and the parameters. No autograd graph is kept through the iterations.

With ``resets (B, T)``, a restart step reads the zero state instead of ``s_{t-1}``: f is
evaluated there at 0 and ``J_t = 0``, so the Newton steps and the adjoint do not cross the
boundary.

``reports`` holds a ``NewtonReport`` (iterations, final residual, convergence, fallback) for
each of the recent calls.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils.stateless import _reparametrize_module

from rnnkit.cells.base import Cell, State
from rnnkit.strategies import newton_linear as linear
from rnnkit.strategies import newton_op
from rnnkit.strategies.kernels import pararnn_cpu
from rnnkit.strategies.native import StrategyUnsupportedError
from rnnkit.strategies.scan import time_mask
from rnnkit.strategies.validation import all_finite, compiling, prepare_with_resets


@dataclass
class NewtonReport:
    """What one Newton solve did."""

    cell: str
    steps: int
    iterations: int  # linear solves
    residual: float  # max |s_t - f(s_{t-1}, p_t)| before any fallback
    converged: bool
    fallback_from: int | None  # first step recomputed sequentially, None when not needed


class NewtonStrategy:
    """``run(cell, inputs, state=None, lengths=None, resets=None)`` by Newton's method; see the
    module."""

    def __init__(
        self,
        jacobian: str = "exact",
        damping: bool = False,
        tolerance: float | None = None,
        max_iterations: int = 30,
        history: int = 100,
        memory_limit_bytes: int = 2 * 1024**3,
    ) -> None:
        if jacobian not in ("exact", "diagonal"):
            raise ValueError(f"jacobian must be 'exact' or 'diagonal', got {jacobian!r}")
        if not isinstance(max_iterations, int) or max_iterations < 1:
            raise ValueError(f"max_iterations must be a positive integer, got {max_iterations!r}")
        self.jacobian = jacobian
        self.damping = damping
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        if not isinstance(memory_limit_bytes, int) or memory_limit_bytes < 1:
            raise ValueError(
                f"memory_limit_bytes must be a positive integer, got {memory_limit_bytes!r}"
            )
        self.memory_limit_bytes = memory_limit_bytes
        self.reports: deque[NewtonReport] = deque(maxlen=history)
        self.fallbacks = 0

    def __call__(
        self,
        cell: Cell,
        inputs: Tensor,
        state: State | None = None,
        lengths: Tensor | Sequence[int] | None = None,
        resets: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        reason = unsupported_reason(cell)
        if reason is not None:
            raise StrategyUnsupportedError(f"strategy 'newton' cannot run this cell: {reason}")
        state, lengths, resets = prepare_with_resets(cell, inputs, state, lengths, resets)
        cell.begin_sequence(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
        projected = cell.project_inputs(inputs)  # (B, T, P)
        initial = cell.flatten_state(state)  # (B, S)
        active = None if lengths is None else time_mask(lengths, inputs.shape[1], inputs.device)
        restart = None if resets is None else resets.unsqueeze(-1)  # (B, T, 1)
        self.check_memory(cell, projected, initial)
        if compiling():  # the data-dependent loop as one custom op (newton_op.py)
            states = newton_op.solve(self, cell, projected, initial, active, restart)
        else:
            parameters = [p for p in cell.parameters() if p.requires_grad]
            states = NewtonSolve.apply(self, cell, projected, initial, active, restart, *parameters)
        if cell.output_field is not None:  # y_t is part of s_t: no second pass over the cell
            outputs = getattr(cell.unflatten_state(states), cell.output_field)
        else:
            previous = linear.shift(states, initial, restart=restart)
            outputs, _ = linear.evaluate(cell, projected, previous)
        if active is not None:
            outputs = torch.where(active, outputs, torch.zeros((), dtype=outputs.dtype))
        return outputs, cell.unflatten_state(states[:, -1])

    def describe(self) -> str:
        """The registered name this object matches, with its options."""
        name = "newton:quasi" if self.jacobian == "diagonal" else "newton"
        if self.damping:
            name = "newton:damped" if self.jacobian == "exact" else "newton (quasi, damped)"
        return (
            f"{name} (tolerance={self.tolerance}, max_iterations={self.max_iterations}, "
            f"memory_limit_bytes={self.memory_limit_bytes})"
        )

    def check_memory(self, cell: Cell, projected: Tensor, initial: Tensor) -> None:
        """Refuse, before allocating, dense ``(B, T, S, S)`` Jacobians above the limit.

        Only cells without a declared ``jacobian_structure`` and without a fused kernel get
        dense Jacobians (built from ``torch.func``, also for ``newton:quasi``, which keeps the
        diagonal only afterwards)."""
        if cell.jacobian_structure is not None:
            return
        if pararnn_cpu.lookup(cell, projected.device, projected.dtype) is not None:
            return
        batch, steps = projected.shape[:2]
        size = initial.shape[-1]
        needed = batch * steps * size * size * projected.element_size()
        if needed > self.memory_limit_bytes:
            raise MemoryError(
                f"strategy 'newton' would allocate {needed / 2**30:.2f} GiB of dense Jacobians "
                f"(B={batch}, T={steps}, S={size}, {projected.dtype}) for {type(cell).__name__}, "
                f"above memory_limit_bytes={self.memory_limit_bytes}; run smaller chunks "
                f"(fewer steps per call or a smaller batch), try 'newton:quasi' (keeps only the "
                f"diagonal) with smaller chunks, or raise memory_limit_bytes"
            )

    def solve(
        self,
        cell: Cell,
        projected: Tensor,
        initial: Tensor,
        active: Tensor | None,
        restart: Tensor | None = None,
    ):
        """The states ``(B, T, S)`` without gradients; the report goes to ``reports``."""
        tolerance = self.tolerance or (1e-10 if projected.dtype == torch.float64 else 1e-5)
        fused = pararnn_cpu.lookup(cell, projected.device, projected.dtype)
        previous = initial.unsqueeze(1).expand(-1, projected.shape[1], -1)
        states, _ = _linearize(cell, projected, previous, active, fused)  # one step from s_0
        strength, best = 0.0, float("inf")  # Levenberg-Marquardt lambda, best residual
        iterations, residual = 0, float("inf")
        diagonal_only = self.jacobian == "diagonal"
        # one compiled pass for linearization, offsets and residual where the kernel has one
        # and nothing else changes them (no padding, no resets, no damping)
        plain = active is None and restart is None and not self.damping
        iterate = fused.iterate if fused is not None and plain else None
        while True:
            if iterate is not None:
                next_states, diagonal, offsets, residual = _iterate(
                    iterate, cell, projected, states, initial
                )
                if residual <= tolerance or iterations == self.max_iterations:
                    break
                states = linear.solve(diagonal, offsets, initial)
                iterations += 1
                continue
            previous = linear.shift(states, initial, restart=restart)
            next_states, jacobian = _linearize(cell, projected, previous, active, fused, restart)
            residual = float((states - next_states).abs().max())
            if residual <= tolerance or iterations == self.max_iterations:
                break
            if jacobian is None:
                jacobian = linear.jacobian(cell, projected, previous, diagonal_only)
                jacobian = _masked(jacobian, active, restart)
            elif diagonal_only:
                jacobian = linear.to_diagonal(jacobian, states.shape[-1])
            offsets = next_states - linear.multiply(jacobian, previous)
            if self.damping:
                strength = _next_strength(strength, improved=residual < best)
                best = min(best, residual)
                jacobian, offsets = _levenberg_marquardt(jacobian, offsets, states, strength)
            states = linear.solve(jacobian, offsets, initial)
            iterations += 1
        if iterate is not None and not all_finite(next_states):
            residual = float("nan")  # the compiled residual may hide a NaN (fastmath)
        converged = residual <= tolerance
        report = NewtonReport(
            type(cell).__name__, projected.shape[1], iterations, residual, converged, None
        )
        if not converged:
            errors = (states - next_states).abs().flatten(2).amax(dim=(0, 2))  # (T,)
            # not <=: a NaN error is a step to recompute too
            report.fallback_from = int(torch.nonzero(~(errors <= tolerance))[0])
            states = _finish_sequentially(
                cell, projected, initial, states, active, restart, report.fallback_from
            )
            self.fallbacks += 1
            warnings.warn(
                f"rnnkit newton: {report.cell} did not converge in {iterations} iterations "
                f"(residual {residual:.3g} > tolerance {tolerance:.3g}); finished sequentially "
                f"from step {report.fallback_from} of {report.steps}",
                RuntimeWarning,
                stacklevel=2,
            )
        self.reports.append(report)
        return states

    def gradients(
        self,
        cell: Cell,
        projected: Tensor,
        initial: Tensor,
        states: Tensor,
        active: Tensor | None,
        restart: Tensor | None,
        grad_states: Tensor,
    ) -> tuple[Tensor, Tensor, dict[str, Tensor | None]]:
        """``(dL/dprojected, dL/dinitial, dL/dparameter by name)`` from ``dL/dstates``: the
        adjoint recurrence solved with the scans, then one vector-Jacobian product of f."""
        previous = linear.shift(states, initial, reuse=True, restart=restart)
        fused = pararnn_cpu.lookup(cell, projected.device, projected.dtype)
        with torch.no_grad():
            _, jacobian = _linearize(cell, projected, previous, active, fused, restart)
            if jacobian is None:
                jacobian = linear.jacobian(cell, projected, previous, False)
                jacobian = _masked(jacobian, active, restart)
            adjoint = linear.solve_adjoint(jacobian, grad_states)
        if fused is not None:
            grads = _fused_vjp(fused, cell, projected, previous, adjoint, active)
        else:
            grads = _functional_vjp(cell, projected, previous, adjoint, active)
        grad_projected, grad_previous, named = grads
        return grad_projected, grad_previous[:, 0], named


def unsupported_reason(cell: Cell) -> str | None:
    """Why ``newton`` cannot run ``cell``, or None when it can."""
    reason = cell.time_parallel_unsupported_reason()
    if reason is not None:
        return reason
    parameter = next(cell.parameters(), None)
    if parameter is not None and parameter.is_complex():
        return "complex parameters are not supported"
    if any(field.is_complex() for field in cell.initial_state(1)):
        return f"cell {type(cell).__name__} has a complex state; use 'scan'"
    if cell.linear_form not in (None, "diagonal"):
        return f"cell {type(cell).__name__} has a {cell.linear_form} state; use 'scan'"
    return None


class NewtonSolve(torch.autograd.Function):
    """States by Newton's method forward; the implicit-function adjoint backward."""

    @staticmethod
    def forward(ctx, strategy, cell, projected, initial, active, restart, *parameters):
        with torch.no_grad():
            states = strategy.solve(cell, projected.detach(), initial.detach(), active, restart)
        ctx.strategy, ctx.cell, ctx.active, ctx.restart = strategy, cell, active, restart
        ctx.save_for_backward(projected, initial, states)
        return states

    @staticmethod
    def backward(ctx, grad_states):
        projected, initial, states = ctx.saved_tensors
        cell, active, restart = ctx.cell, ctx.active, ctx.restart
        grad_projected, grad_initial, named = ctx.strategy.gradients(
            cell, projected.detach(), initial, states, active, restart, grad_states
        )
        names = {id(p): name for name, p in cell.named_parameters()}
        parameters = [p for p in cell.parameters() if p.requires_grad]
        grad_parameters = [named.get(names[id(p)]) for p in parameters]
        return (None, None, grad_projected, grad_initial, None, None, *grad_parameters)


def _masked(
    jacobian: linear.Jacobian, active: Tensor | None, restart: Tensor | None
) -> linear.Jacobian:
    """J with ``I`` at padded steps and ``0`` at restart steps."""
    return linear.zero_where_restarted(linear.identity_where_inactive(jacobian, active), restart)


def _linearize(
    cell, projected, previous, active, fused, restart=None
) -> tuple[Tensor, linear.Jacobian | None]:
    """``f(s_{t-1}, p_t)`` for all t (padded steps copy), and J when a fused kernel gives it
    (``I`` at padded steps, ``0`` at restart steps)."""
    if fused is None:
        return _masked_step(cell, projected, previous, active), None
    batch, steps = previous.shape[:2]
    next_states, values = fused.linearize(cell, projected.flatten(0, 1), previous.flatten(0, 1))
    next_states = next_states.unflatten(0, (batch, steps))
    jacobian = linear.Jacobian(cell.jacobian_structure, values.unflatten(0, (batch, steps)))
    if active is not None:
        next_states = torch.where(active, next_states, previous)
    return next_states, _masked(jacobian, active, restart)


def _iterate(
    iterate, cell, projected, states, initial
) -> tuple[Tensor, linear.Jacobian, Tensor, float]:
    """``_linearize`` at ``shift(states)``, the offsets and the residual in one compiled pass."""
    batch, steps = states.shape[:2]
    next_states, values, offsets, residual = iterate(
        cell, projected.flatten(0, 1), states.flatten(0, 1), initial, steps
    )
    jacobian = linear.Jacobian("diagonal", values.unflatten(0, (batch, steps)))
    return (
        next_states.unflatten(0, (batch, steps)),
        jacobian,
        offsets.unflatten(0, (batch, steps)),
        residual,
    )


def _functional_vjp(cell, projected, previous, adjoint, active):
    """Gradients of ``sum(adjoint * f(previous, projected))`` by ``torch.func.vjp`` through the
    cell (also inside the ``rnnkit::opaque`` op under ``torch.compile``, below autograd)."""
    parameters = {name: p.detach() for name, p in cell.named_parameters()}

    def evaluate(projected, previous, parameters):
        with _reparametrize_module(cell, parameters):
            return _masked_step(cell, projected, previous, active)

    _, pullback = torch.func.vjp(evaluate, projected.detach(), previous.detach(), parameters)
    return pullback(adjoint)


def _fused_vjp(fused, cell, projected, previous, adjoint, active):
    """The same with the compiled kernel; padded steps pass the adjoint straight through."""
    batch, steps = previous.shape[:2]
    masked = adjoint if active is None else adjoint * active
    grad_projected, grad_previous, named = fused.vjp(
        cell, projected.flatten(0, 1), previous.flatten(0, 1), masked.flatten(0, 1)
    )
    grad_previous = grad_previous.unflatten(0, (batch, steps))
    if active is not None:
        grad_previous = grad_previous + adjoint * ~active
    return grad_projected.unflatten(0, (batch, steps)), grad_previous, named


def _next_strength(strength: float, improved: bool) -> float:
    """Levenberg-Marquardt lambda: / 4 after an improvement (0 below 1e-3), else x 4 (>= 1e-2)."""
    if improved:
        return strength / 4 if strength / 4 >= 1e-3 else 0.0
    return max(strength * 4, 1e-2)


def _levenberg_marquardt(
    jacobian: linear.Jacobian, offsets: Tensor, current: Tensor, strength: float
) -> tuple[linear.Jacobian, Tensor]:
    """The damped step's recurrence: ``J / (1 + lambda)``, ``(c + lambda s') / (1 + lambda)``."""
    if strength == 0:
        return jacobian, offsets
    scale = 1.0 / (1.0 + strength)
    damped = linear.Jacobian(jacobian.structure, jacobian.values * scale)
    return damped, (offsets + strength * current) * scale


def _masked_step(cell: Cell, projected: Tensor, previous: Tensor, active: Tensor | None):
    """``f(s_{t-1}, p_t)`` for all t; padded steps copy the previous state."""
    _, next_states = linear.evaluate(cell, projected, previous)
    return next_states if active is None else torch.where(active, next_states, previous)


def _finish_sequentially(cell, projected, initial, states, active, restart, start: int) -> Tensor:
    """Recompute steps ``start..T-1`` one after another from the solved prefix."""
    states = states.clone()
    state = initial if start == 0 else states[:, start - 1]
    for t in range(start, states.shape[1]):
        if restart is not None:
            state = torch.where(restart[:, t], initial, state)
        _, new_state = cell.recur(projected[:, t], cell.unflatten_state(state))
        new_flat = cell.flatten_state(new_state)
        state = new_flat if active is None else torch.where(active[:, t], new_flat, state)
        states[:, t] = state
    return states
