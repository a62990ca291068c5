"""The config of one ``rnnkit.nn.Recurrent`` stack, composed by every model config.

Any cell and any strategy by their registered names, with their own options as mappings:

    --model.recurrent.cell=gla --model.recurrent.options.num_heads=4
    --model.recurrent.strategy=newton --model.recurrent.strategy_options.max_iterations=50

Cell options are checked against the chosen cell's constructor (``CELLS[cell].__init__``): an
option it does not take is an error naming the option, the cell and the options it takes, and
a value given as text (from the command line) is parsed to the option's annotated type.
Strategy options are checked by ``make_strategy``; their text values are read as literals
(``50`` an integer, ``1e-6`` a number, ``true``/``false``, ``none``, anything else a string).
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from rnnkit.cells import CELLS
from rnnkit.nn import Recurrent
from rnnkit.strategies import Strategy, get_registered, make_strategy

NOT_OPTIONS = ("self", "input_size", "hidden_size", "args", "kwargs")
"""Constructor parameters of a cell that the layer sets itself."""

TRUE_WORDS = ("true", "yes", "on")
FALSE_WORDS = ("false", "no", "off")
NONE_WORDS = ("none", "null")


def cell_option_types(cell: str) -> dict[str, Any]:
    """The options ``CELLS[cell]`` takes, each with its annotated type (``Any`` without one)."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}; registered cells: {', '.join(sorted(CELLS))}")
    constructor = CELLS[cell].__init__
    hints = typing.get_type_hints(constructor)
    return {
        name: hints.get(name, Any)
        for name in inspect.signature(constructor).parameters
        if name not in NOT_OPTIONS
    }


def check_cell_and_strategy(cell: str, strategy: str) -> None:
    """Raise ``ValueError`` naming a cell or strategy that is not registered."""
    cell_option_types(cell)
    get_registered(strategy)


def check_range(name: str, value: float, low: float, high: float | None = None) -> None:
    """Raise ``ValueError`` unless ``low <= value`` (and ``value < high`` when given)."""
    if value < low or (high is not None and value >= high):
        bounds = f"[{low:g}, {high:g})" if high is not None else f"{low:g} or more"
        raise ValueError(f"{name}: expected {bounds}, got {value!r}")


def parse_option(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint``: text is parsed, a typed value is checked; a ``ValueError``
    names the option, the expected type and the value."""
    members = _union_members(hint)
    if Any in members:
        return parse_literal(value) if isinstance(value, str) else value
    for member in members:
        converted = _convert(value, member)
        if converted is not _FAILED:
            return converted
    expected = " or ".join(getattr(member, "__name__", str(member)) for member in members)
    raise ValueError(f"option {name!r} expects {expected}, got {value!r}")


def parse_literal(text: str) -> Any:
    """Command-line text without a known type: integer, number, boolean, None, else the text."""
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS or lowered in FALSE_WORDS:
        return lowered in TRUE_WORDS
    if lowered in NONE_WORDS:
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


_FAILED = object()


def _union_members(hint: Any) -> list[Any]:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return list(typing.get_args(hint))
    return [hint]


def _convert(value: Any, kind: Any) -> Any:
    """``value`` as ``kind`` (one member of a union), or ``_FAILED``."""
    text = value.strip().lower() if isinstance(value, str) else None
    if kind is type(None):
        return None if value is None or text in NONE_WORDS else _FAILED
    if kind is bool:
        if isinstance(value, bool):
            return value
        return text in TRUE_WORDS if text in TRUE_WORDS + FALSE_WORDS else _FAILED
    if kind in (int, float):
        if isinstance(value, bool):
            return _FAILED
        if isinstance(value, int) or (kind is float and isinstance(value, float)):
            return kind(value)
        try:
            return kind(value) if isinstance(value, str) else _FAILED
        except ValueError:
            return _FAILED
    if kind is str:
        return value if isinstance(value, str) else _FAILED
    return value if isinstance(kind, type) and isinstance(value, kind) else _FAILED


@dataclass
class RecurrentConfig:
    """Cell, strategy, sizes, depth, direction and dropout of a ``rnnkit.nn.Recurrent``."""

    cell: str = "lstm"
    """A registered cell name (``rnnkit.cells.CELLS``)."""
    hidden_size: int = 128
    """Hidden size H of every layer."""
    num_layers: int = 1
    """Layers stacked."""
    bidirectional: bool = False
    """Run a second stack backwards in time and concatenate the outputs."""
    dropout: float = 0.0
    """Dropout between stacked layers."""
    strategy: str = "auto"
    """A registered strategy name (``rnnkit.strategies.STRATEGIES``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """The cell's own options (``num_heads``, ``peephole``, ``r_min``, ...): keywords of its
    constructor, parsed to their annotated types."""
    strategy_options: dict[str, Any] = field(default_factory=dict)
    """Options of the strategy object (Newton: ``tolerance``, ``max_iterations``, ...)."""

    def __post_init__(self) -> None:
        """Name, option and range checks, so a bad value fails when the config is read."""
        option_types = cell_option_types(self.cell)
        for name in self.options:
            if name not in option_types:
                takes = ", ".join(option_types) or "none"
                raise ValueError(
                    f"option {name!r} is not taken by the cell {self.cell!r}; its options: {takes}"
                )
        self.options = {
            name: parse_option(name, value, option_types[name])
            for name, value in self.options.items()
        }
        get_registered(self.strategy)
        self.strategy_options = {
            name: parse_literal(value) if isinstance(value, str) else value
            for name, value in self.strategy_options.items()
        }
        self.make_strategy()  # the registry's errors name unknown or bad strategy options
        for name in ("hidden_size", "num_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def make_strategy(self) -> Strategy:
        """A fresh strategy object with ``strategy_options``."""
        return make_strategy(self.strategy, **self.strategy_options)

    def build(self, input_size: int) -> Recurrent:
        """The layer over ``input_size`` features; each of its cells gets a fresh strategy object
        of ``strategy`` with ``strategy_options`` (``Recurrent.strategy_reports()``)."""
        return Recurrent(
            self.cell,
            input_size,
            self.hidden_size,
            num_layers=self.num_layers,
            dropout=self.dropout,
            bidirectional=self.bidirectional,
            strategy=self.strategy,
            strategy_options=dict(self.strategy_options),
            **self.options,
        )
