"""How a cell runs over time: every strategy is a function

    run(cell, inputs, state=None, lengths=None, resets=None) -> (outputs, final_state)

with ``inputs (B, T, D)``, ``outputs (B, T, O)`` and the final state as the cell's NamedTuple;
``resets (B, T)`` bool restarts a row from the zero state before each flagged step (``state``
starts the first segment only).
``STRATEGIES`` maps names to registry entries that make FRESH strategy objects
(``make_strategy("newton", tolerance=1e-6)``), so no strategy state is shared by the process.

Registered: ``sequential`` (the reference), ``native`` (torch's fused kernels), ``scan``
(linear cells, scan implementation chosen by device) and ``scan:loop``, ``scan:chunked``,
``scan:compiled``, ``scan:triton`` (one implementation each), ``newton`` (nonlinear cells by
Newton's method, parallel in time), ``newton:quasi`` (diagonal Jacobian) and ``newton:damped``
(trust-region steps), and ``auto``. ``auto`` never picks ``newton``: ask for it by name.

``fused`` runs the whole time loop of a nonlinear cell in one compiled kernel (``fused.py``).

``auto`` rule: ``native`` when torch's fused kernel can compute the cell as configured (a
standard LSTM, GRU or Elman cell without peepholes, layer norm, zoneout or recurrent dropout in
training); else ``scan`` when the cell is linear in its state; else ``fused`` when the cell has
a fused kernel that runs here (CPU, float32 or float64); else ``sequential``.
``choose(cell)`` returns the name ``auto`` picks and why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies import fused, native, scan, sequential
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
        if cell.linear_form == "chunkwise":
            return "scan", "the cell is linear in its state within each chunk (chunkwise form)"
        return "scan", f"the cell is linear in its state ({cell.linear_form} form)"
    fused_reason = fused.unsupported_reason(cell)
    if fused_reason is None:
        return "fused", (
            f"{native_reason}; the fused strategy's compiled '{cell.fused_kernel}' kernel "
            "runs the cell's whole time loop"
        )
    return "sequential", f"{native_reason}; {scan_reason}; {fused_reason}"


def run_auto(
    cell: Cell,
    inputs: Tensor,
    state: State | None = None,
    lengths: Tensor | Sequence[int] | None = None,
    resets: Tensor | None = None,
) -> tuple[Tensor, State]:
    """``native``, ``scan`` or ``fused`` where possible, else ``sequential`` (see ``choose``)."""
    name, _ = choose(cell)
    return STRATEGIES[name](cell, inputs, state, lengths, resets)


class RegisteredStrategy:
    """A registry entry: makes fresh strategy objects, so no strategy state is shared.

    Calling the entry itself runs a fresh strategy made with the defaults (for one-off calls);
    ``create(**options)`` makes a configured one, naming unknown options.
    """

    def __init__(self, name: str, factory: Callable[..., Strategy], options: Sequence[str] = ()):
        self.name = name
        self.factory = factory
        self.options = tuple(options)

    def create(self, **options) -> Strategy:
        """A fresh strategy object; ``options`` must be among ``self.options``."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            takes = ", ".join(self.options) if self.options else "no options"
            raise ValueError(
                f"strategy {self.name!r} got unknown option(s) {', '.join(unknown)}; "
                f"it takes: {takes}"
            )
        return self.factory(**options)

    def __call__(
        self,
        cell: Cell,
        inputs: Tensor,
        state: State | None = None,
        lengths: Tensor | Sequence[int] | None = None,
        resets: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        if resets is None:  # strategies written before resets take four arguments
            return self.create()(cell, inputs, state, lengths)
        return self.create()(cell, inputs, state, lengths, resets=resets)


def _stateless(run: Strategy) -> Callable[[], Strategy]:
    return lambda: run


_NEWTON_OPTIONS = ("tolerance", "max_iterations", "jacobian", "damping", "memory_limit_bytes")


def _newton(**defaults) -> Callable[..., NewtonStrategy]:
    return lambda **options: NewtonStrategy(**{**defaults, **options})


STRATEGIES: dict[str, RegisteredStrategy] = {
    name: RegisteredStrategy(name, factory, options)
    for name, factory, options in [
        ("sequential", _stateless(sequential.run), ()),
        ("native", _stateless(native.run), ()),
        ("scan", _stateless(scan.run), ()),
        *[
            (f"scan:{name}", _stateless(scan.make_scan_strategy(name)), ())
            for name in SCAN_IMPLEMENTATIONS
        ],
        ("fused", _stateless(fused.run), ()),
        ("newton", _newton(), _NEWTON_OPTIONS),
        ("newton:quasi", _newton(jacobian="diagonal"), _NEWTON_OPTIONS),
        ("newton:damped", _newton(damping=True), _NEWTON_OPTIONS),
        ("auto", _stateless(run_auto), ()),
    ]
}


def make_strategy(spec: str | Strategy, **options) -> Strategy:
    """A strategy object: a FRESH one for a registered name (with ``options``), or ``spec``
    itself when it is already a strategy object (then ``options`` must be empty)."""
    if isinstance(spec, str):
        return get_registered(spec).create(**options)
    if not callable(spec):
        raise TypeError(f"strategy must be a registered name or a strategy object, got {spec!r}")
    if options:
        raise ValueError(f"options {sorted(options)} given with a strategy object {spec!r}")
    return spec


def get_registered(name: str) -> RegisteredStrategy:
    """The registry entry ``name``; unknown names raise with the known ones listed."""
    if name not in STRATEGIES:
        raise ValueError(
            f"unknown strategy {name!r}; registered strategies: {', '.join(sorted(STRATEGIES))}"
        )
    return STRATEGIES[name]


def get_strategy(name: str) -> RegisteredStrategy:
    """The registry entry ``name`` (callable; each call runs a fresh strategy object)."""
    return get_registered(name)


def strategy_name(strategy: Strategy) -> str:
    """A readable name for a strategy object (its registered name where it has one)."""
    if isinstance(strategy, NewtonStrategy):
        return strategy.describe()
    for name, entry in STRATEGIES.items():
        if entry.factory() is strategy:
            return name
    return getattr(strategy, "__name__", type(strategy).__name__)


__all__ = [
    "NewtonStrategy",
    "STRATEGIES",
    "RegisteredStrategy",
    "Strategy",
    "StrategyUnsupportedError",
    "choose",
    "get_registered",
    "get_strategy",
    "make_strategy",
    "strategy_name",
]
