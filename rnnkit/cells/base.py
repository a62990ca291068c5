"""The cell protocol: what recurs, and nothing about how it is run.

A cell holds parameters and defines one step of a recurrence

    y_t, s_t = step(x_t, s_{t-1})

split into a part that does not depend on the state, computed for all time steps at once,
and the recurrence proper:

    p_t        = project_inputs(x_t)        (time-parallel, e.g. W_ih x_t + b_ih)
    y_t, s_t   = recur(p_t, s_{t-1})

so that ``step(x_t, s) == recur(project_inputs(x_t), s)``. States are NamedTuples of
``(B, size)`` tensors (``LSTMState(h, c)``), tuple-compatible with torch.

Strategies read only the capabilities a cell declares, all declared here with a default:

- ``is_linear``: the recurrence is linear in the state (a parallel scan can run it);
- ``linear_form``: which linear recurrence it is, ``"diagonal"``, ``"matrix"``, ``"delta"``
  or ``"softmax_prefix"`` (None: not linear). Each form names hooks the scan strategy calls,
  with the shapes given in ``rnnkit/strategies/scan.py``: ``scan_terms``, ``scan_initial``,
  ``scan_readout`` (diagonal); ``matrix_terms``, ``matrix_initial``, ``matrix_readout``
  (matrix); ``delta_terms`` with ``matrix_initial``, ``matrix_readout`` (delta);
  ``prefix_terms``, ``prefix_initial``, ``prefix_readout`` (softmax prefix). Here they raise
  NotImplementedError naming the cell and the form. ``"chunkwise"`` (Titans) is the one form
  of a cell that keeps ``is_linear = False``: linear within each chunk of ``chunk_size`` steps
  given the chunk-start state, with ``chunk_initial``, ``chunk_final``, ``chunk_terms``,
  ``chunk_shapes``, ``chunk_gradient_factors``, ``chunk_read`` (shapes in
  ``rnnkit/strategies/chunkwise.py``);
- ``virtual_steps``: delta form only, the delta-rule writes per input step (1; a DeltaProduct's
  ``num_householder``): ``delta_terms`` then returns ``T * virtual_steps`` steps (input step
  ``t``'s j-th write at ``t * virtual_steps + j - 1``) and ``matrix_readout`` gets the outputs
  of each input step's last write;
- ``native_kernel``: the name of the torch fused kernel that computes exactly this cell
  (``"lstm"``, ``"gru"``, ``"rnn_tanh"``, ``"rnn_relu"``) with ``native_weights()`` and
  ``native_unsupported_reason()`` saying why it cannot be used in the current configuration;
- ``compiled_kernel``: the name of a compiled kernel that computes exactly this cell from
  ``compiled_weights()`` (a dict of tensors by role, such as ``{"recurrent": ...,
  "peephole": ...}``), or None: Newton's ``"paragru"``, ``"paralstm"``
  (``kernels/pararnn_cpu.py``), the scan's ``"mingru_g"``, ``"minlstm_g"``, ...
  (``kernels/gated_scan_cpu.py``);
- ``fused_kernel``: the name of a kernel of the ``fused`` strategy that runs the whole time loop
  of exactly this cell (``"lstm"``, ``"gru"``, ``"elman"``, ...; ``rnnkit/strategies/fused.py``)
  from ``fused_weights()`` (tensors and settings by role, the regularization already applied:
  W_hh after DropConnect, the recurrent-input dropout mask) and ``zoneout_masks()``;
- ``output_field``: the field of the new state that ``y_t`` is, when it is one (time-parallel
  strategies then read outputs off the solved states);
- ``begin_sequence``: draws the per-sequence random quantities of recurrent regularization;
  a cell takes regularization by setting ``regularization`` (``rnnkit.cells.regularization``,
  DropConnect on its ``weight_hh``) and calling ``regularized_inputs`` in ``project_inputs``,
  ``regularized_recurrence`` and ``zoneout`` in ``recur``; the default ``begin_sequence``,
  ``native_unsupported_reason`` and ``time_parallel_unsupported_reason`` then account for it;
- ``time_parallel_unsupported_reason()``: why the cell cannot be evaluated for all steps at once
  now (for example zoneout or recurrent dropout in training), or None;
- for the Newton strategy, ``jacobian_structure`` (``"diagonal"``, ``"block"`` with
  ``jacobian_block_size``, or None: the strategy differentiates ``recur`` itself) and
  ``state_jacobian(projected (N, P), state) -> (N, S)`` (diagonal) or ``(N, S / d, d, d)``
  (blocks of ``d = jacobian_block_size``): the Jacobian of the new state with respect to the
  previous one, in the layout of ``flatten_state``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

if TYPE_CHECKING:  # regularization.py imports this module
    from rnnkit.cells.regularization import Regularization, SequenceNoise

State = Any  # a NamedTuple of (B, size) tensors


class Cell(nn.Module):
    """Base class of every recurrent cell.

    Subclasses set ``state_type`` (a NamedTuple class), implement ``state_sizes``,
    ``recur`` and, where part of the step is independent of the state, ``project_inputs``.
    """

    is_linear: bool = False
    linear_form: str | None = None  # "diagonal", "matrix", "delta", "softmax_prefix", "chunkwise"
    chunk_size: int = 1  # chunkwise form: steps whose gradients share the chunk-start state
    jacobian_structure: str | None = None  # "diagonal", "block" or None (differentiate recur)
    jacobian_block_size: int = 1
    virtual_steps: int = 1  # delta form: delta-rule writes per input step, see docstring
    native_kernel: str | None = None
    compiled_kernel: str | None = None  # name in the compiled-kernel registry, see docstring
    fused_kernel: str | None = None  # name in the fused strategy's registry, see docstring
    state_type: type[Any]  # a NamedTuple class of (B, size) fields
    output_field: str | None = None  # y_t is this field of the new state (h for an LSTM)
    regularization: Regularization | None = None  # recurrent dropout, DropConnect, zoneout
    noise: SequenceNoise | None = None  # drawn by begin_sequence for one sequence

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
        """Draw what stays fixed over one sequence (dropout masks); a no-op without them.

        Every strategy calls this once per run, before ``project_inputs``.
        """
        regularization = self.regularization
        if regularization is None or not self.training or not regularization.uses_sequence_noise:
            self.noise = None
            return
        weight = self.weight_hh  # a Parameter, or a plain tensor under torch.func
        assert isinstance(weight, Tensor), "a regularized cell keeps W_hh in weight_hh"
        self.noise = regularization.draw(
            batch_size, self.input_size, self.output_size, weight, device, dtype
        )

    def _sequence_noise(self, batch_size: int) -> SequenceNoise | None:
        if self.regularization is None:
            return None
        return self.regularization.noise_for(self.noise, self.training, batch_size)

    def regularized_inputs(self, inputs: Tensor) -> Tensor:
        """Inputs ``(B, D)`` or ``(B, T, D)`` with the sequence's input dropout mask."""
        noise = self._sequence_noise(inputs.shape[0])
        if self.regularization is None:
            return inputs
        return self.regularization.apply_input_mask(inputs, noise)

    def regularized_recurrence(
        self, recurrent_input: Tensor, weight: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The recurrent input ``(B, R)`` with its dropout mask and W_hh after DropConnect."""
        noise = self._sequence_noise(recurrent_input.shape[0])
        if self.regularization is None:
            return recurrent_input, weight
        return (
            self.regularization.apply_hidden_mask(recurrent_input, noise),
            self.regularization.recurrent_weight(weight, noise),
        )

    def recurrence_noise(self, batch_size: int) -> tuple[Tensor | None, Tensor]:
        """This sequence's recurrent-input dropout mask ``(B, R)`` (None without one) and W_hh
        after DropConnect: what ``regularized_recurrence`` applies, for fused kernels."""
        weight = self.weight_hh
        assert isinstance(weight, Tensor), "a regularized cell keeps W_hh in weight_hh"
        noise = self._sequence_noise(batch_size)
        if self.regularization is None or noise is None:
            return None, weight
        return noise.hidden_mask, self.regularization.recurrent_weight(weight, noise)

    def zoneout(self, previous: State, candidate: State) -> State:
        """The new state after zoneout (the candidate itself without regularization)."""
        if self.regularization is None:
            return candidate
        return self.regularization.apply_zoneout(previous, candidate, self.training)

    def zoneout_masks(
        self, steps: int, batch_size: int, *, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, ...] | None:
        """Zoneout for ``steps`` steps drawn up front, for kernels that run the whole loop.

        Per state field the weight of the previous value, ``(steps, B, size)`` in training
        (drawn in the order ``recur`` draws them, so a seeded run gives the numbers of the
        sequential strategy) or ``(1, B, size)`` holding the probability in evaluation; None
        without zoneout.
        """
        if self.regularization is None:
            return None
        return self.regularization.draw_zoneout(
            steps, batch_size, self.state_sizes(), self.training, device, dtype
        )

    def fused_weights(self, batch_size: int) -> dict[str, Any]:
        """The tensors and settings the kernel named by ``fused_kernel`` reads, by role, for a
        sequence of ``batch_size`` rows (after ``begin_sequence``)."""
        raise NotImplementedError(f"cell {type(self).__name__} has no fused kernel")

    def flatten_state(self, state: State) -> Tensor:
        """The state as one ``(N, S)`` tensor (fields side by side); inverse of unflatten_state."""
        return torch.cat(tuple(state), -1) if len(state) > 1 else state[0]

    def unflatten_state(self, flat: Tensor) -> State:
        """``(N, S)`` -> the state NamedTuple."""
        return self.state_type(*torch.split(flat, list(self.state_sizes()), -1))

    def time_parallel_unsupported_reason(self) -> str | None:
        """Why ``recur`` cannot be evaluated for all steps at once as one batch, or None."""
        if self.regularization is None:
            return None
        return self.regularization.time_parallel_unsupported_reason(self.training)

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
        if self.regularization is None:
            return None
        return self.regularization.native_unsupported_reason(self.training)

    def state_jacobian(self, projected: Tensor, state: State) -> Tensor:
        """d s_t / d s_{t-1} in the layout ``jacobian_structure`` names (module docstring)."""
        raise NotImplementedError(
            f"cell {type(self).__name__} does not give its state Jacobian (jacobian_structure "
            f"{self.jacobian_structure!r}): state_jacobian"
        )

    def _missing_hook(self, form: str, hook: str) -> NotImplementedError:
        return NotImplementedError(
            f"cell {type(self).__name__} does not implement the {form!r} linear form: {hook}"
        )

    def scan_terms(self, projected: Tensor, state: State) -> tuple[Tensor, Tensor]:
        """Diagonal form: ``(a, b)`` of ``h_t = a_t * h_{t-1} + b_t``, each ``(B, T, N)``."""
        raise self._missing_hook("diagonal", "scan_terms")

    def scan_initial(self, state: State) -> Tensor:
        """Diagonal form: the part of the state the scan carries, ``(B, N)``."""
        raise self._missing_hook("diagonal", "scan_initial")

    def scan_readout(
        self, projected: Tensor, hidden: Tensor, state: State, lengths: Tensor | None
    ) -> tuple[Tensor, State]:
        """Diagonal form: outputs ``(B, T, O)`` and final state from ``hidden (B, T, N)``."""
        raise self._missing_hook("diagonal", "scan_readout")

    def matrix_terms(
        self, projected: Tensor, state: State, active: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Matrix form: ``(q, k, v, log_decay)``, each ``(B, heads, T, ...)``."""
        raise self._missing_hook("matrix", "matrix_terms")

    def delta_terms(
        self, projected: Tensor, state: State, active: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
        """Delta form: ``(q, k, v, beta (B, heads, T), log_decay (B, heads, T) or None)``."""
        raise self._missing_hook("delta", "delta_terms")

    def matrix_initial(self, state: State) -> Tensor:
        """Matrix and delta forms: ``S_0 (B, heads, d_k, d_v)``."""
        raise self._missing_hook(self.linear_form or "matrix", "matrix_initial")

    def matrix_readout(
        self, projected: Tensor, outputs: Tensor, final: Tensor, state: State, active: Tensor | None
    ) -> tuple[Tensor, State]:
        """Matrix and delta forms: outputs ``(B, T, O)`` and final state from ``o`` and ``S_T``."""
        raise self._missing_hook(self.linear_form or "matrix", "matrix_readout")

    def prefix_terms(self, projected: Tensor, state: State) -> tuple[Tensor, Tensor]:
        """Softmax prefix form: ``scores (B, heads, T)``, ``values (B, heads, T, d_v)``."""
        raise self._missing_hook("softmax_prefix", "prefix_terms")

    def prefix_initial(self, state: State) -> tuple[Tensor, Tensor, Tensor]:
        """Softmax prefix form: ``(m (B, heads), u (B, heads, d_v), w (B, heads))``."""
        raise self._missing_hook("softmax_prefix", "prefix_initial")

    def prefix_readout(
        self,
        projected: Tensor,
        attended: Tensor,
        final: tuple[Tensor, Tensor, Tensor],
        state: State,
        active: Tensor | None,
    ) -> tuple[Tensor, State]:
        """Softmax prefix form: outputs ``(B, T, O)`` and final state from ``u / w``."""
        raise self._missing_hook("softmax_prefix", "prefix_readout")

    def chunk_initial(self, state: State) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Chunkwise form: ``(M, S, M_c)`` each ``(B, G, W)``, steps into the chunk ``(B, 1)``."""
        raise self._missing_hook("chunkwise", "chunk_initial")

    def chunk_final(
        self, memory: Tensor, momentum: Tensor, reference: Tensor, position: Tensor
    ) -> State:
        """Chunkwise form: the state from ``chunk_initial``'s four quantities."""
        raise self._missing_hook("chunkwise", "chunk_final")

    def chunk_terms(self, projected: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Chunkwise form: ``log eta, log rho, theta``, each ``(B, T, G)``."""
        raise self._missing_hook("chunkwise", "chunk_terms")

    def chunk_shapes(self) -> list[tuple[int, int]]:
        """Chunkwise form: ``(rows, columns)`` of each weight matrix of a group's memory."""
        raise self._missing_hook("chunkwise", "chunk_shapes")

    def chunk_gradient_factors(
        self, reference: list[Tensor], projected: Tensor
    ) -> list[tuple[Tensor, Tensor]]:
        """Chunkwise form: ``M_c``'s matrices ``(B, G, rows, columns)``, ``projected (B, C, P)``
        -> each step's gradient as ``[(left (B, G, C, rows), right (B, G, C, columns))]``."""
        raise self._missing_hook("chunkwise", "chunk_gradient_factors")

    def chunk_read(self, multiply: Callable[[int, Tensor], Tensor], projected: Tensor) -> Tensor:
        """Chunkwise form: outputs ``(B, C, O)`` from ``multiply(i, x) = M_t^i x_t``."""
        raise self._missing_hook("chunkwise", "chunk_read")

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


def summed_bias(bias_ih: Tensor | None, bias_hh: Tensor | None) -> Tensor | None:
    """``b_ih + b_hh`` (both constant in time, so added once to the projected inputs), or None.

    A cell built with ``bias=False`` has neither; one built with biases has both.
    """
    if bias_ih is None or bias_hh is None:
        return None
    return bias_ih + bias_hh


def uniform_init(module: nn.Module, hidden_size: int) -> None:
    """torch.nn's RNN initialization: every parameter from U(-1/sqrt(H), 1/sqrt(H))."""
    bound = 1.0 / hidden_size**0.5
    for parameter in module.parameters(recurse=False):
        nn.init.uniform_(parameter, -bound, bound)
