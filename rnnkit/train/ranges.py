"""Range checks for config dataclasses: one message shape for every field.

Each ``__post_init__`` calls these, so a bad value is refused when the config is built (before
any data is read or any step is taken); ``config.from_dict`` prefixes the dotted path.
"""

from __future__ import annotations

import math


def _refuse(name: str, value: object, allowed: str) -> None:
    raise ValueError(f"{name} must be {allowed}, got {value!r}")


def at_least(name: str, value: float | None, minimum: float, optional: bool = False) -> None:
    """Refuse ``value < minimum`` and NaN or infinity (``None`` too unless ``optional``)."""
    if value is None:
        if not optional:
            _refuse(name, value, f"a number >= {minimum}")
        return
    if not (math.isfinite(value) and value >= minimum):
        extra = " or null" if optional else ""
        kind = "an integer" if isinstance(value, int) else "a finite number"
        _refuse(name, value, f"{kind} >= {minimum}{extra}")


def positive(name: str, value: float | None, optional: bool = False) -> None:
    """Refuse ``value <= 0`` and NaN or infinity (``None`` too unless ``optional``)."""
    if value is None:
        if not optional:
            _refuse(name, value, "a number > 0")
        return
    if not (math.isfinite(value) and value > 0):
        extra = " or null" if optional else ""
        _refuse(name, value, f"a finite number > 0{extra}")


def between(name: str, value: float, low: float, high: float, high_included: bool) -> None:
    """Refuse values outside ``[low, high]`` (or ``[low, high)``) and NaN."""
    inside = low <= value <= high if high_included else low <= value < high
    if not (math.isfinite(value) and inside):
        closing = "]" if high_included else ")"
        _refuse(name, value, f"in [{low}, {high}{closing}")


def choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Refuse a value that is not one of ``allowed``."""
    if value not in allowed:
        _refuse(name, value, f"one of {', '.join(repr(option) for option in allowed)}")
