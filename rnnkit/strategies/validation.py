"""Checks every strategy runs before it starts: errors name the argument, what was expected
and what was got.

``prepare`` validates ``(inputs, state, lengths)``; ``prepare_with_resets`` also validates
``resets (B, T)`` and returns it in the form every strategy runs with: None when it resets
nothing (no True value, or only at step 0 or past each sequence's length, where a reset changes
nothing), else with those steps False.

Under ``torch.compile`` (``torch.compiler.is_compiling()``) the checks that read values become
``torch._assert_async`` asserts inside the graph, with the same messages (NaN or infinite inputs
and states, lengths outside [1, T]): they raise ``RuntimeError`` when the compiled graph runs
instead of ``ValueError`` before it. Shape, dtype and type checks are static and unchanged.
``effective_resets`` cannot return None by value there, so it returns the (possibly all-False)
reset tensor, which every strategy treats as "no reset".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State


def compiling() -> bool:
    """True while ``torch.compile`` traces (values are not known, checks go into the graph)."""
    return torch.compiler.is_compiling()


def assert_in_graph(condition: Tensor, message: str) -> None:
    """Under ``torch.compile``: assert a 0-d bool tensor when the graph runs (RuntimeError)."""
    torch._assert_async(condition, message)


def finite_tensor(tensor: Tensor) -> Tensor:
    """0-d bool tensor: no NaN or infinite element (the graph form of ``all_finite``)."""
    if tensor.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=tensor.device)
    return torch.isfinite(tensor).all()


def all_finite(tensor: Tensor) -> bool:
    """No NaN or infinite element. One fused min/max reduction for real floating tensors (NaN
    propagates through both, +-inf shows in one): ``torch.isfinite(...).all()`` builds two
    full-size temporaries and measured 60x slower at 32 MB."""
    if tensor.numel() == 0:
        return True
    if not tensor.is_floating_point():
        return bool(torch.isfinite(tensor).all())
    smallest, largest = torch.aminmax(tensor)
    return bool(torch.isfinite(smallest)) and bool(torch.isfinite(largest))


def check_inputs(cell: Cell, inputs: Tensor, finite: bool = True) -> None:
    """``inputs`` must be a finite floating tensor ``(B, T, input_size)`` in the cell's dtype.

    ``finite=False`` skips the one check that reads every element (a caller whose strategy will
    run the full check anyway).
    """
    if not isinstance(inputs, Tensor):
        raise TypeError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if inputs.dim() != 3:
        raise ValueError(
            f"inputs must have shape (batch, time, {cell.input_size}), got a "
            f"{inputs.dim()}-D tensor of shape {tuple(inputs.shape)}"
        )
    if inputs.shape[-1] != cell.input_size:
        raise ValueError(
            f"inputs must have {cell.input_size} features (input_size), got "
            f"{inputs.shape[-1]} in shape {tuple(inputs.shape)}"
        )
    if inputs.shape[1] == 0:
        raise ValueError(
            f"inputs must have at least one time step, got shape {tuple(inputs.shape)}"
        )
    parameter = next(cell.parameters(), None)
    if parameter is not None and inputs.dtype != parameter.dtype:
        raise TypeError(f"inputs must have the cell's dtype {parameter.dtype}, got {inputs.dtype}")
    if not inputs.is_floating_point() and not inputs.is_complex():
        raise TypeError(f"inputs must be floating point, got {inputs.dtype}")
    # meta tensors have no values to check (shapes and dtypes are checked above)
    if finite and compiling():
        assert_in_graph(finite_tensor(inputs), "inputs contain NaN or infinite values")
    elif finite and not inputs.is_meta and not all_finite(inputs):
        raise ValueError("inputs contain NaN or infinite values")


def check_state(cell: Cell, state: State, batch_size: int, inputs: Tensor | None = None) -> State:
    """A state given by the user, as the cell's NamedTuple of ``(B, size)`` tensors, with the
    dtypes the cell's own initial state has for ``inputs``."""
    sizes = cell.state_sizes()
    fields = cell.state_type._fields
    if isinstance(state, Tensor):
        state = (state,)
    if not isinstance(state, (tuple, list)) or len(state) != len(sizes):
        raise ValueError(
            f"state must be a {cell.state_type.__name__}{fields} of {len(sizes)} tensors, "
            f"got {type(state).__name__}"
            + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
        )
    for name, size, field in zip(fields, sizes, state, strict=False):
        expected = (batch_size, size)
        if not isinstance(field, Tensor) or tuple(field.shape) != expected:
            got = tuple(field.shape) if isinstance(field, Tensor) else type(field).__name__
            raise ValueError(f"state.{name} must have shape {expected}, got {got}")
        # A NaN in a given state would spread silently through every later step.
        if compiling():
            assert_in_graph(finite_tensor(field), f"state.{name} contains NaN or infinite values")
        elif not field.is_meta and not all_finite(field):
            raise ValueError(f"state.{name} contains NaN or infinite values")
    if inputs is not None:
        reference = cell.initial_state(1, device=inputs.device, dtype=inputs.dtype)
        for name, field, wanted in zip(fields, state, reference, strict=True):
            if field.dtype != wanted.dtype:
                raise TypeError(f"state.{name} must have dtype {wanted.dtype}, got {field.dtype}")
    return cell.state_type(*state)


def check_lengths(lengths: Tensor | Sequence[int], batch_size: int, steps: int) -> Tensor:
    """Lengths as a 1-D int64 tensor of ``batch_size`` values in [1, steps]."""
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1 or lengths.shape[0] != batch_size:
        raise ValueError(
            f"lengths must have one entry per sequence, shape ({batch_size},), "
            f"got shape {tuple(lengths.shape)}"
        )
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be integers, got {lengths.dtype}")
    if lengths.is_meta:  # no values to check
        return lengths.to(torch.int64)
    if compiling():
        assert_in_graph((lengths >= 1).all(), "lengths must be at least 1")
        assert_in_graph(
            (lengths <= steps).all(), f"lengths must not exceed the {steps} time steps of inputs"
        )
        return lengths.to(torch.int64)
    smallest, largest = int(lengths.min()), int(lengths.max())
    if smallest < 1:
        raise ValueError(f"lengths must be at least 1, got a length of {smallest}")
    if largest > steps:
        raise ValueError(
            f"lengths must not exceed the {steps} time steps of inputs, got a length of {largest}"
        )
    return lengths.to(torch.int64)


def length_mask(
    lengths: Tensor | None, steps: int, device: torch.device | str | None = None
) -> Tensor | None:
    """``(B, T)`` booleans, True where ``t < lengths[b]``; None without lengths."""
    if lengths is None:
        return None
    positions = torch.arange(steps, device=device if device is not None else lengths.device)
    return positions[None, :] < lengths.to(positions.device)[:, None]


def prepare(
    cell: Cell, inputs: Tensor, state: State | None, lengths: Tensor | Sequence[int] | None
) -> tuple[State, Tensor | None]:
    """Validate a strategy's arguments; return the state to start from and the lengths."""
    check_inputs(cell, inputs)
    batch_size, steps, _ = inputs.shape
    if lengths is not None:
        lengths = check_lengths(lengths, batch_size, steps)
    if state is None:
        state = cell.initial_state(batch_size, device=inputs.device, dtype=inputs.dtype)
    else:
        state = check_state(cell, state, batch_size, inputs)
    return state, lengths


def check_resets(resets: Tensor, batch_size: int, steps: int) -> Tensor:
    """``resets`` must be a bool tensor ``(batch_size, steps)``: True where a sequence restarts
    from the initial state before that step."""
    if not isinstance(resets, Tensor):
        raise TypeError(
            f"resets must be a torch.Tensor of shape ({batch_size}, {steps}) and dtype "
            f"torch.bool, got {type(resets).__name__}"
        )
    if tuple(resets.shape) != (batch_size, steps):
        raise ValueError(
            f"resets must have shape (batch, time) = ({batch_size}, {steps}), "
            f"got shape {tuple(resets.shape)}"
        )
    if resets.dtype != torch.bool:
        raise TypeError(f"resets must have dtype torch.bool, got {resets.dtype}")
    return resets


def effective_resets(resets: Tensor | None, lengths: Tensor | None) -> Tensor | None:
    """``resets (B, T)`` without step 0 (``prepare_with_resets`` has zeroed those rows' state)
    and the steps past each sequence's length, where a reset changes nothing; None when no step
    is left."""
    if resets is None or resets.is_meta:  # meta: no values, and shapes do not depend on them
        return None
    resets = resets.clone()
    resets[:, 0] = False
    active = length_mask(lengths, resets.shape[1], resets.device)
    if active is not None:
        resets &= active
    if compiling():  # no host value: an all-False tensor resets nothing
        return resets
    return resets if bool(resets.any()) else None


def prepare_with_resets(
    cell: Cell,
    inputs: Tensor,
    state: State | None,
    lengths: Tensor | Sequence[int] | None,
    resets: Tensor | None,
) -> tuple[State, Tensor | None, Tensor | None]:
    """``prepare``, and ``resets`` checked and reduced to the steps that restart a sequence
    (None when there is none), on the inputs' device. A reset at step 0 restarts its row from
    the zero state: that row's given state is replaced by zeros here, once for every strategy."""
    state, lengths = prepare(cell, inputs, state, lengths)
    if resets is None:
        return state, lengths, None
    batch_size, steps, _ = inputs.shape
    resets = check_resets(resets, batch_size, steps).to(inputs.device)
    first = resets[:, :1]  # (B, 1)
    if not resets.is_meta and (compiling() or bool(first.any())):
        zero = torch.zeros((), dtype=inputs.dtype, device=inputs.device)
        state = type(state)(*(torch.where(first, zero.to(field.dtype), field) for field in state))
    return state, lengths, effective_resets(resets, lengths)
