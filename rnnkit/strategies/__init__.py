"""How a cell runs over time: every strategy is a function

    run(cell, inputs, state=None, lengths=None) -> (outputs, final_state)

with ``inputs (B, T, D)``, ``outputs (B, T, O)`` and the final state as the cell's NamedTuple.
``STRATEGIES`` maps names to them.

``auto`` rule: ``native`` when torch's fused kernel can compute the cell as configured (a
standard LSTM, GRU or Elman cell without peepholes, layer norm, zoneout or recurrent dropout in
training), otherwise ``sequential``. ``choose(cell)`` returns the name ``auto`` picks and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies import native, sequential
from rnnkit.strategies.native import StrategyUnsupportedError

Strategy = Callable[..., tuple[Tensor, State]]


def choose(cell: Cell) -> tuple[str, str]:
    """The strategy ``auto`` runs ``cell`` with now, and the reason."""
    reason = native.unsupported_reason(cell)
    if reason is None:
        return "native", f"torch's fused '{cell.native_kernel}' kernel computes this cell"
    return "sequential", reason


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
    "auto": run_auto,
}


def get_strategy(name: str) -> Strategy:
    """The registered strategy ``name``; unknown names raise with the known ones listed."""
    if name not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {name!r}; registered strategies: {', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[name]


__all__ = ["STRATEGIES", "Strategy", "StrategyUnsupportedError", "choose", "get_strategy"]
