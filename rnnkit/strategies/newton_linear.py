"""The linear algebra of the Newton strategy: evaluating a cell for all steps at once, its
Jacobians, and the linear recurrences a Newton step and the adjoint pass solve.

States are flat ``(B, T, S)`` tensors in the cell's ``flatten_state`` layout. A Jacobian
``J_t = d f(s_{t-1}, p_t) / d s_{t-1}`` comes in one of three structures:

- ``"diagonal"``: ``(B, T, S)``;
- ``"block"``: ``(B, T, S / k, k, k)``, blocks along the flat state;
- ``"dense"``: ``(B, T, S, S)``.

With resets, ``restart (B, T, 1)`` is True at the steps where a sequence restarts: there
``s_{t-1}`` is the zero state (``shift``) and ``J_t = 0`` (``zero_where_restarted``), since
the step does not depend on the state before it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from rnnkit.cells.base import Cell
from rnnkit.strategies.kernels import diagonal_scan
from rnnkit.strategies.kernels.affine import affine_scan_blocks, affine_scan_chunked
from rnnkit.strategies.kernels.workspace import Workspace

# temporaries of the adjoint pass reused across calls (see workspace.py for why and how)
WORKSPACE = Workspace()


def _scratch(role: str, like: Tensor) -> Tensor:
    """An uninitialized tensor like ``like``: from the workspace on the CPU, else fresh."""
    if like.device.type != "cpu":
        return torch.empty_like(like)
    return WORKSPACE.take(role, tuple(like.shape), like.dtype)


class Jacobian(NamedTuple):
    structure: str  # "diagonal", "block" or "dense"
    values: Tensor


def evaluate(cell: Cell, projected: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
    """All steps as one batch: ``y_t, s_t = recur(p_t, s_{t-1})`` for ``previous (B, T, S)``;
    returns outputs ``(B, T, O)`` and next states ``(B, T, S)``."""
    batch, steps = previous.shape[:2]
    outputs, new_state = cell.recur(
        projected.flatten(0, 1), cell.unflatten_state(previous.flatten(0, 1))
    )
    return outputs.unflatten(0, (batch, steps)), cell.flatten_state(new_state).unflatten(
        0, (batch, steps)
    )


def jacobian(cell: Cell, projected: Tensor, previous: Tensor, diagonal_only: bool) -> Jacobian:
    """J at every step: the cell's own where it gives one, else dense from ``torch.func``.

    ``diagonal_only`` keeps only the diagonal (quasi-Newton, quasi-DEER).
    """
    batch, steps, size = previous.shape
    flat_projected, flat_previous = projected.flatten(0, 1), previous.flatten(0, 1)
    structure = cell.jacobian_structure
    if structure is not None:
        values = cell.state_jacobian(flat_projected, cell.unflatten_state(flat_previous))
        result = Jacobian(structure, values.unflatten(0, (batch, steps)))
    else:

        def step(state: Tensor, inputs: Tensor) -> Tensor:
            _, new_state = cell.recur(inputs[None], cell.unflatten_state(state[None]))
            return cell.flatten_state(new_state)[0]

        values = torch.func.vmap(torch.func.jacrev(step))(flat_previous, flat_projected)
        result = Jacobian("dense", values.unflatten(0, (batch, steps)))
    return to_diagonal(result, size) if diagonal_only else result


def to_diagonal(jacobian_: Jacobian, size: int) -> Jacobian:
    if jacobian_.structure == "diagonal":
        return jacobian_
    diagonal = jacobian_.values.diagonal(dim1=-2, dim2=-1)
    return Jacobian("diagonal", diagonal.reshape(*diagonal.shape[:2], size))


def identity_where_inactive(jacobian_: Jacobian, active: Tensor | None) -> Jacobian:
    """``J = I`` at padded steps (``active (B, T, 1)`` False), where the state is copied."""
    if active is None:
        return jacobian_
    values = jacobian_.values
    if jacobian_.structure == "diagonal":
        return Jacobian("diagonal", torch.where(active, values, torch.ones_like(values)))
    eye = torch.eye(values.shape[-1], dtype=values.dtype, device=values.device)
    mask = active.view(*active.shape[:2], *([1] * (values.dim() - 2)))
    return Jacobian(jacobian_.structure, torch.where(mask, values, eye))


def zero_where_restarted(jacobian_: Jacobian, restart: Tensor | None) -> Jacobian:
    """``J = 0`` at restart steps (``restart (B, T, 1)`` True), which read the zero state."""
    if restart is None:
        return jacobian_
    values = jacobian_.values
    mask = restart.view(*restart.shape[:2], *([1] * (values.dim() - 2)))
    return Jacobian(jacobian_.structure, torch.where(mask, 0, values))


def multiply(jacobian_: Jacobian, vectors: Tensor) -> Tensor:
    """``J_t v_t`` for ``vectors (B, T, S)``."""
    if jacobian_.structure == "diagonal":
        return jacobian_.values * vectors
    if jacobian_.structure == "dense":
        return torch.matmul(jacobian_.values, vectors.unsqueeze(-1)).squeeze(-1)
    blocks = jacobian_.values.shape[-1]
    grouped = vectors.unflatten(-1, (-1, blocks)).unsqueeze(-1)  # (B, T, G, k, 1)
    return torch.matmul(jacobian_.values, grouped).squeeze(-1).flatten(-2)


def solve(jacobian_: Jacobian, offsets: Tensor, initial: Tensor, reverse: bool = False) -> Tensor:
    """``s_t = J_t s_{t-1} + c_t`` from ``initial (B, S)`` (or ``s_{t+1}`` with reverse)."""
    if jacobian_.structure == "diagonal":
        return diagonal_scan(jacobian_.values, offsets, initial, reverse)
    if jacobian_.structure == "dense":
        return affine_scan_chunked(jacobian_.values, offsets, initial, reverse)
    batch, steps, groups, blocks, _ = jacobian_.values.shape
    # fold the G independent blocks into the batch: (B * G, T, k, k)
    matrices = jacobian_.values.permute(0, 2, 1, 3, 4).reshape(
        batch * groups, steps, blocks, blocks
    )
    grouped = offsets.unflatten(-1, (groups, blocks)).permute(0, 2, 1, 3)
    states = affine_scan_blocks(
        matrices,
        grouped.reshape(batch * groups, steps, blocks),
        initial.reshape(batch * groups, blocks),
        reverse,
    )
    return states.reshape(batch, groups, steps, blocks).permute(0, 2, 1, 3).flatten(-2)


def solve_adjoint(jacobian_: Jacobian, gradients: Tensor) -> Tensor:
    """``l_t = g_t + J_{t+1}^T l_{t+1}`` backwards from ``l_T = g_T``."""
    values = jacobian_.values
    if jacobian_.structure != "diagonal":
        values = values.transpose(-1, -2)
    shifted = _scratch("adjoint jacobian", values)
    shifted[:, :-1] = values[:, 1:]
    shifted[:, -1] = 0
    zeros = torch.zeros_like(gradients[:, 0])
    return solve(Jacobian(jacobian_.structure, shifted), gradients, zeros, reverse=True)


def shift(
    states: Tensor, initial: Tensor, reuse: bool = False, restart: Tensor | None = None
) -> Tensor:
    """``s_{t-1}`` for every t: ``initial`` then ``states[:, :-1]``, and the zero state at the
    steps where ``restart (B, T, 1)`` is True; ``reuse``: into a workspace buffer, without
    autograd (for the adjoint pass)."""
    if not reuse:
        previous = torch.cat([initial.unsqueeze(1), states[:, :-1]], 1)
    else:
        previous = _scratch("previous", states.detach())
        previous[:, 0] = initial.detach()
        previous[:, 1:] = states.detach()[:, :-1]
        initial = initial.detach()
    if restart is None:
        return previous
    zero = torch.zeros((), dtype=previous.dtype, device=previous.device)
    return torch.where(restart, zero, previous)
