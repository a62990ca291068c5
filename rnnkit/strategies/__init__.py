"""How a cell runs over time: every strategy is a function

    run(cell, inputs, state=None, lengths=None) -> (outputs, final_state)

with ``inputs (B, T, D)``, ``outputs (B, T, O)`` and the final state as the cell's NamedTuple.
``STRATEGIES`` maps names to them.

Registered: ``sequential`` (the reference), ``native`` (torch's fused kernels), ``scan``
(linear cells, scan implementation chosen by device) and ``scan:loop``, ``scan:chunked``,
``scan:compiled``, ``scan:triton`` (one implementation each), ``newton`` (nonlinear cells by
Newton's method, parallel in time), ``newton:quasi`` (diagonal Jacobian) and ``newton:damped``
(trust-region steps), and ``auto``. ``auto`` never picks ``newton``: ask for it by name.

``auto`` rule: ``native`` when torch's fused kernel can compute the cell as configured (a
standard LSTM, GRU or Elman cell without peepholes, layer norm, zoneout or recurrent dropout in
training); else ``scan`` when the cell is linear in its state; else ``sequential``.
``choose(cell)`` returns the name ``auto`` picks and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies import native, scan, sequential
from rnnkit.strategies.kernels import SCAN_IMPLEMENTATIONS
from rnnkit.strategies.native import StrategyUnsupportedError
from rnnkit.strategies.newton import NewtonStrategy

Strategy = Callable[..., tuple[Tensor, State]]


def choose(cell: Cell) -> tuple[str, str]:
    """The strategy ``auto`` runs ``cell`` with now, and the reason."""
    native_reason = native.unsupported_reason(cell)
    if native_reason is None:
        return "native", f"torch's fused '{cell.native_kernel}' kernel computes this cell"
    scan_reason = scan.unsupported_reason(cell)
    if scan_reason is None:
        return "scan", f"the cell is linear in its state ({cell.linear_form} form)"
    return "sequential", f"{native_reason}; {scan_reason}"


def run_auto(
    cell: Cell,
    inputs: Tensor,
    state: State | None = None,
    lengths: Tensor | Sequence[int] | None = None,
) -> tuple[Tensor, State]:
    """``native`` where possible, else ``sequential`` (see ``choose``)."""
    name, _ = choose(cell)
    return STRATEGIES[name](cell, inputs, state, lengths)


STRATEGIES: dict[str, Strategy] = {
    "sequential": sequential.run,
    "native": native.run,
    "scan": scan.run,
    **{f"scan:{name}": scan.make_scan_strategy(name) for name in SCAN_IMPLEMENTATIONS},
    "newton": NewtonStrategy(),
    "newton:quasi": NewtonStrategy(jacobian="diagonal"),
    "newton:damped": NewtonStrategy(damping=True),
    "auto": run_auto,
}


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; unknown names raise with the known ones listed."""
    if name not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {name!r}; registered strategies: {', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[name]


__all__ = [
    "NewtonStrategy",
    "STRATEGIES",
    "Strategy",
    "StrategyUnsupportedError",
    "choose",
    "get_strategy",
]
