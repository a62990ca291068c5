"""The cell protocol: what recurs, and nothing about how it is run.

A cell holds parameters and defines one step of a recurrence

    y_t, s_t = step(x_t, s_{t-1})

split into a part that does not depend on the state, computed for all time steps at once,
and the recurrence proper:

    p_t        = project_inputs(x_t)        (time-parallel, e.g. W_ih x_t + b_ih)
    y_t, s_t   = recur(p_t, s_{t-1})

so that ``step(x_t, s) == recur(project_inputs(x_t), s)``. States are NamedTuples of
``(B, size)`` tensors (``LSTMState(h, c)``), tuple-compatible with torch.

Strategies read only the capabilities a cell declares:

- ``is_linear``: the recurrence is linear in the state (a parallel scan can run it);
- ``native_kernel``: the name of the torch fused kernel that computes exactly this cell
  (``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"``) with ``native_weights()`` and
  ``native_unsupported_reason()`` saying why it cannot be used in the current configuration;
- ``compiled_kernel``: the name of a compiled kernel (``"paragru"``, ``"paralstm"``) that
  computes exactly this cell from ``compiled_weights()`` (a dict of tensors by role, such as
  ``{"recurrent": ..., "peephole": ...}``), or None;
- ``output_field``: the field of the new state that ``y_t`` is, when it is one (time-parallel
  strategies then read outputs off the solved states);
- ``begin_sequence``: draws the per-sequence random quantities of recurrent regularization;
- ``time_parallel_unsupported_reason()``: why the cell cannot be evaluated for all steps at once
  now (for example zoneout or recurrent dropout in training), or None;
- for the Newton strategy, optionally ``jacobian_structure`` (``"diagonal"`` or ``"block"`` with
  ``jacobian_block_size``) and ``state_jacobian(projected, state)``: the Jacobian of the new
  state with respect to the previous one, in the layout of ``flatten_state``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

State = Any  # a NamedTuple of (B, size) tensors


class Cell(nn.Module):
    """Base class of every recurrent cell.

    Subclasses set ``state_type`` (a NamedTuple class), implement ``state_sizes``,
    ``recur`` and, where part of the step is independent of the state, ``project_inputs``.
    """

    is_linear: bool = False
    native_kernel: str | None = None
    compiled_kernel: str | None = None  # name in the compiled-kernel registry, see docstring
    state_type: type[NamedTuple]
    output_field: str | None = None  # y_t is this field of the new state (h for an LSTM)

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size

    @property
    def output_size(self) -> int:
        """Features of y_t."""
        return self.hidden_size

    def state_sizes(self) -> tuple[int, ...]:
        """Feature size of each field of the state, in field order."""
        return (self.hidden_size,)

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> State:
        """The zero state: each field ``(batch_size, size)``."""
        parameter = next(self.parameters(), None)
        if dtype is None:
            dtype = parameter.dtype if parameter is not None else torch.get_default_dtype()
        if device is None and parameter is not None:
            device = parameter.device
        return self.state_type(
            *(
                torch.zeros(batch_size, size, device=device, dtype=dtype)
                for size in self.state_sizes()
            )
        )

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """The state-independent part of the step, all steps at once: ``(..., D) -> (..., P)``."""
        return inputs

    def recur(self, projected: Tensor, state: State) -> tuple[Tensor, State]:
        """One step from the projected input ``(B, P)``: ``y_t (B, O)`` and the new state."""
        raise NotImplementedError

    def step(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        """One step of the recurrence: ``x_t (B, D)`` -> ``y_t (B, O)``, new state."""
        return self.recur(self.project_inputs(inputs), state)

    def begin_sequence(self, batch_size: int, *, device: torch.device, dtype: torch.dtype) -> None:
        """Draw what stays fixed over one sequence (dropout masks); a no-op by default.

        Every strategy calls this once per run, before ``project_inputs``.
        """

    def flatten_state(self, state: State) -> Tensor:
        """The state as one ``(N, S)`` tensor (fields side by side); inverse of unflatten_state."""
        return torch.cat(tuple(state), -1) if len(state) > 1 else state[0]

    def unflatten_state(self, flat: Tensor) -> State:
        """``(N, S)`` -> the state NamedTuple."""
        return self.state_type(*torch.split(flat, list(self.state_sizes()), -1))

    def time_parallel_unsupported_reason(self) -> str | None:
        """Why ``recur`` cannot be evaluated for all steps at once as one batch, or None."""
        return None

    def native_weights(self) -> list[Tensor]:
        """Weights in the order torch's fused kernel takes them."""
        raise NotImplementedError(f"{type(self).__name__} has no torch fused kernel")

    def compiled_weights(self) -> dict[str, Tensor]:
        """The tensors the compiled kernel named by ``compiled_kernel`` reads, by role."""
        raise NotImplementedError(f"cell {type(self).__name__} has no compiled kernel")

    def native_unsupported_reason(self) -> str | None:
        """Why the fused kernel cannot run this cell as configured, or None when it can."""
        if self.native_kernel is None:
            return f"cell {type(self).__name__} has no torch fused kernel"
        return None

    def extra_repr(self) -> str:
        return f"input_size={self.input_size}, hidden_size={self.hidden_size}"


def check_positive_int(name: str, value: object) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_probability(name: str, value: object) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")


def uniform_init(module: nn.Module, hidden_size: int) -> None:
    """torch.nn's RNN initialization: every parameter from U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / hidden_size**0.5
    for parameter in module.parameters(recurse=False):
        nn.init.uniform_(parameter, -bound, bound)
