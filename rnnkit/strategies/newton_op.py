"""Newton solves under ``torch.compile``: the solve as the ``rnnkit::opaque`` custom op.

Newton's loop stops at a data-dependent iteration count (a Python ``while`` on the residual)
and its report reads values: Dynamo cannot trace that into one graph. Under
``torch.compile`` the strategy hands ``(projected, initial, active, restart)`` and the cell's
parameters and buffers to the op instead; the op runs the same eager solve (same numbers,
report appended to the strategy's ``reports``) with the cell's tensors swapped for the given
ones (``torch.nn.utils.stateless``), and its backward the same implicit-function adjoint.

The strategy and the cell reach the op through a registry keyed by their ids, written when the
graph is traced (``torch.compiler.assume_constant_result``) and held by weak references: a graph
whose strategy or cell was garbage collected raises instead of solving with another object. A
compiled graph may be reused for another cell of the same type and configuration (Dynamo guards
on those, not on the object): the parameters come from the op's inputs, so the numbers are the
other cell's. The backward reads the solved states (the op's output) and recomputes nothing.
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import Tensor
from torch.nn.utils.stateless import _reparametrize_module

from rnnkit.cells.base import Cell
from rnnkit.strategies.kernels import custom_ops

_SOLVERS: dict[str, tuple[weakref.ref, weakref.ref]] = {}
FIXED = 4  # projected, initial, active, restart


def _register(strategy: Any, cell: Cell) -> str:
    """The registry key of ``(strategy, cell)`` (runs once, when the graph is traced)."""
    key = f"{id(strategy)}-{id(cell)}"
    _SOLVERS[key] = (weakref.ref(strategy), weakref.ref(cell))
    return key


# what ``torch.compiler.assume_constant_result`` does (Dynamo runs the function when tracing and
# puts its result in the graph as a constant), without importing Dynamo (3 s) with rnnkit
setattr(_register, "_dynamo_marked_constant", True)  # noqa: B010


def _lookup(key: str) -> tuple[Any, Cell]:
    strategy, cell = (reference() for reference in _SOLVERS[key])
    if strategy is None or cell is None:
        raise RuntimeError(
            "a compiled Newton solve outlived its strategy or cell (garbage collected); "
            "compile the model again (torch._dynamo.reset())"
        )
    return strategy, cell


def solve(
    strategy: Any,
    cell: Cell,
    projected: Tensor,
    initial: Tensor,
    active: Tensor | None,
    restart: Tensor | None,
) -> Tensor:
    """The states ``(B, T, S)`` of ``strategy.solve`` through ``rnnkit::opaque``, differentiable
    in ``projected``, ``initial`` and the cell's parameters."""
    key = _register(strategy, cell)
    named = [*cell.named_parameters(), *cell.named_buffers()]
    names = ",".join(name for name, _ in named)
    tensors = [projected, initial, active, restart, *(tensor for _, tensor in named)]
    return custom_ops.call("newton", tensors, f"{key}|{names}")[0]


def _unpack(tensors: list, text: str) -> tuple[Any, Cell, list, dict[str, Tensor]]:
    key, names = text.split("|")
    strategy, cell = _lookup(key)
    swapped = dict(zip(names.split(",") if names else (), tensors[FIXED:], strict=True))
    return strategy, cell, tensors[:FIXED], swapped


def _run(tensors: list, text: str) -> list[Tensor]:
    strategy, cell, (projected, initial, active, restart), swapped = _unpack(tensors, text)
    with _reparametrize_module(cell, swapped):
        return [strategy.solve(cell, projected, initial, active, restart)]


def _fake(tensors: list, text: str) -> list[Tensor]:
    projected, initial = tensors[:2]
    return [initial.new_empty(projected.shape[0], projected.shape[1], initial.shape[-1])]


def _backward(
    tensors: list, text: str, grads: list[Tensor], outputs: list[Tensor]
) -> list[Tensor | None]:
    strategy, cell, (projected, initial, active, restart), swapped = _unpack(tensors, text)
    states = outputs[0]
    with _reparametrize_module(cell, swapped):
        grad_projected, grad_initial, named = strategy.gradients(
            cell, projected, initial, states, active, restart, grads[0]
        )
    return [grad_projected, grad_initial, None, None, *(named.get(name) for name in swapped)]


custom_ops.register_target("newton", _run, _fake, backward=_backward)

__all__ = ["solve"]
