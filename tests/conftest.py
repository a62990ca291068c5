"""Helpers shared by the test modules: the cell configurations every test runs over, the
tolerance table per dtype and comparisons whose messages name the tensor that differs.

Test modules import them with ``from conftest import ...`` (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from oracle_table import ORACLE_TABLE
from torch import Tensor

from rnnkit.cells import Cell, make_cell
from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError
from rnnkit.strategies.native import unsupported_reason

# The classic cells' entries of the one oracle table (``oracle_table.ORACLE_TABLE``), for the
# cell, layer and validation tests written around them; no second table of configurations.
CLASSIC_CELLS = ("elman", "jordan", "lstm", "gru")
CELL_CONFIGS: dict[str, tuple[str, dict]] = {
    config: entry for config, entry in ORACLE_TABLE.items() if entry[0] in CLASSIC_CELLS
}

TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-10},
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
}

DTYPE_NAMES = {torch.float64: "f64", torch.float32: "f32"}


def build_cell(
    config: str,
    input_size: int,
    hidden_size: int,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
    **extra_options,
) -> Cell:
    """The cell of ``CELL_CONFIGS[config]`` with parameters drawn from ``seed``.

    Layer-norm gains and biases start as ones and zeros; they are perturbed so that a formula
    that forgot them would not pass."""
    name, options = CELL_CONFIGS[config]
    torch.manual_seed(seed)
    cell = make_cell(name, input_size, hidden_size, **options, **extra_options)
    with torch.no_grad():
        for parameter_name, parameter in cell.named_parameters():
            if parameter_name.startswith("norm_"):
                parameter.add_(0.3 * torch.randn_like(parameter))
    return cell.to(dtype)


# Newton's method stops at a residual tolerance rather than at the reference's floating-point
# result, and each call costs several solves: the newton strategies are compared with the
# reference in their own tests, with their own tolerance, not held to TOLERANCES here.
ITERATIVE_STRATEGY_FAMILIES = {"newton"}


def fast_strategies(cell: Cell) -> list[str]:
    """Every registered non-iterative strategy but the reference that can run ``cell``.

    A strategy that cannot run a cell refuses it with ``StrategyUnsupportedError`` before it
    computes anything; a one-step probe finds out. ``native`` is also asked directly."""
    probe = torch.zeros(1, 1, cell.input_size, dtype=next(cell.parameters()).dtype)
    names = []
    for name, strategy in STRATEGIES.items():
        if name == "sequential" or name.split(":")[0] in ITERATIVE_STRATEGY_FAMILIES:
            continue
        if name == "native" and unsupported_reason(cell) is not None:
            continue
        try:
            with torch.no_grad():
                strategy(cell, probe)
        except StrategyUnsupportedError:
            continue
        names.append(name)
    return names


def random_state(cell: Cell, batch_size: int, generator: torch.Generator):
    """A random state of ``cell`` (each field ``(B, size)``) that requires grad."""
    dtype = next(cell.parameters()).dtype
    return cell.state_type(
        *(
            torch.randn(batch_size, size, dtype=dtype, generator=generator).requires_grad_()
            for size in cell.state_sizes()
        )
    )


def assert_close(actual: Tensor, expected: Tensor, name: str, dtype: torch.dtype) -> None:
    """``actual`` equals ``expected`` within ``TOLERANCES[dtype]``; the message names ``name``."""
    assert actual.shape == expected.shape, (
        f"{name}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}"
    )
    torch.testing.assert_close(
        actual, expected, **TOLERANCES[dtype], msg=lambda message: f"{name} differs: {message}"
    )


def assert_states_close(actual, expected, name: str, dtype: torch.dtype) -> None:
    """Two states of the same NamedTuple type, compared field by field (``name.h``, ...)."""
    assert type(actual) is type(expected), (
        f"{name}: {type(actual).__name__} != {type(expected).__name__}"
    )
    for field, actual_field, expected_field in zip(expected._fields, actual, expected, strict=True):
        assert_close(actual_field, expected_field, f"{name}.{field}", dtype)


def assert_all_close(
    actual: Sequence[Tensor | None],
    expected: Sequence[Tensor | None],
    names: Sequence[str],
    dtype: torch.dtype,
) -> None:
    """Pairwise ``assert_close``; a None gradient must be matched by a None one."""
    for name, actual_tensor, expected_tensor in zip(names, actual, expected, strict=True):
        if expected_tensor is None or actual_tensor is None:
            assert actual_tensor is None and expected_tensor is None, f"{name}: one is None"
        else:
            assert_close(actual_tensor, expected_tensor, name, dtype)
