"""The scan strategy: linear recurrences for all time steps at once.

It runs cells that declare ``is_linear = True`` and a ``linear_form`` it knows; each form
names the capabilities the cell provides:

``"diagonal"``: ``h_t = a_t * h_{t-1} + b_t`` elementwise over a ``(B, N)`` state (real or
complex), with

- ``scan_terms(projected (B, T, P), state) -> (a, b)``, both ``(B, T, N)`` (``a`` may
  broadcast), time-parallel;
- ``scan_initial(state) -> (B, N)``, the part of the state the scan carries;
- ``scan_readout(projected, hidden (B, T, N), state, lengths) -> (outputs (B, T, O), final
  state)``, time-parallel.

With ``lengths``, padded steps get ``a = 1, b = 0`` so the state stops changing at each
sequence's end, and padded outputs are zero, as in the sequential reference. A cell whose
``compiled_kernel`` names a compiled scan of ``kernels/gated_scan_cpu.py`` (minGRU, minLSTM)
runs it instead of ``scan_terms`` and the diagonal scan under ``scan`` and ``scan:compiled``
(under ``torch.compile`` as the ``rnnkit::opaque`` custom op, ``kernels/custom_ops.py``),
on the CPU in float32 and float64: the same recurrence in one pass each way.

The matrix-state forms (runners in ``linear_forms.py``, which also gives their padding rules
and implementation names) pass ``active (B, T)``, True at steps within each sequence's length
or None without lengths, to the cell:

``"matrix"``: ``S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T``, ``o_t = S_t^T q_t`` per
head (gated linear attention, mLSTM), with

- ``matrix_terms(projected (B, T, P), state, active) -> (q, k, v, log_decay)``: ``q, k (B,
  heads, T, d_k)``, ``v (B, heads, T, d_v)``, ``log_decay (B, heads, T, d_k or 1) <= 0``;
- ``matrix_initial(state) -> S_0 (B, heads, d_k, d_v)``;
- ``matrix_readout(projected, o (B, heads, T, d_v), S_T (B, heads, d_k, d_v), state, active)
  -> (outputs (B, T, O), final state)``.

``"delta"``: the delta rule ``S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T``,
``o_t = S_t^T q_t`` (DeltaNet: ``alpha = 1``; Gated DeltaNet), with ``delta_terms(projected,
state, active) -> (q, k, v, beta (B, heads, T), log_decay (B, heads, T) or None)``, ``alpha =
exp(log_decay)``, and ``matrix_initial``, ``matrix_readout`` as above. A cell with
``virtual_steps = n > 1`` (DeltaProduct: ``n`` Householder writes per input step) gives ``T *
n`` steps of terms, input step ``t``'s j-th write at ``t * n + j - 1``; ``matrix_readout``
still gets ``o (B, heads, T, d_v)``, read after each input step's last write.

``"softmax_prefix"``: ``o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i)`` from a state
``(m, u, w)`` (Aaren), with

- ``prefix_terms(projected, state) -> (scores (B, heads, T), values (B, heads, T, d_v))``;
- ``prefix_initial(state) -> (m (B, heads), u (B, heads, d_v), w (B, heads))``;
- ``prefix_readout(projected, o (B, heads, T, d_v), (m_T, u_T, w_T), state, active) ->
  (outputs (B, T, O), final state)``.

``"chunkwise"``: not linear in the state, but linear within each chunk given the state at
the chunk's start (Titans' test-time training, gradients taken at the chunk-start memory); the
cell keeps ``is_linear = False`` and gives the ``chunk_*`` hooks of ``chunkwise.py``.

Resets (``resets (B, T)``, True where a sequence restarts from the zero state): a
``"diagonal"`` cell whose scan carries its whole state (one state field, the one
``scan_initial`` returns) gets a zero transition at a reset step, ``a_t = 0`` so that
``h_t = b_t``, under every scan implementation (the compiled gated scans
have no such input and step aside for ``scan_terms``). Every other cell (matrix, delta and
softmax-prefix states, whose terms would need a whole matrix added at a step; a diagonal cell
that keeps more state than the scan, such as the selective SSM's conv window) runs by segments
(``segments.py``), each segment a row of one batch.

``make_scan_strategy(implementation)`` binds one scan implementation
(``rnnkit.strategies.kernels``); the registered ``scan`` strategy uses ``auto``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.chunkwise import run_chunkwise
from rnnkit.strategies.kernels import (
    custom_ops,
    diagonal_scan,
    gated_scan_cpu,
    unavailable_reason,
)
from rnnkit.strategies.linear_forms import run_delta, run_matrix, run_softmax_prefix
from rnnkit.strategies.native import StrategyUnsupportedError
from rnnkit.strategies.segments import run_segments
from rnnkit.strategies.validation import length_mask, prepare_with_resets


def _run_gated_scan(tensors: list, name: str) -> list[Tensor]:
    projected, initial, lengths = tensors
    scan = gated_scan_cpu.lookup(name, projected.device, projected.dtype)
    assert scan is not None  # the caller looked it up
    return [scan(projected, initial, lengths)]


def _fake_gated_scan(tensors: list, name: str) -> list[Tensor]:
    projected, initial, _ = tensors
    return [projected.new_empty(*projected.shape[:2], initial.shape[-1])]


custom_ops.register_target("gated_scan", _run_gated_scan, _fake_gated_scan)

FormRunner = Callable[[Cell, Tensor, State, "Tensor | None", str], tuple[Tensor, State]]


def run_diagonal(
    cell: Cell,
    inputs: Tensor,
    state: State,
    lengths: Tensor | None,
    implementation: str,
    resets: Tensor | None = None,
) -> tuple[Tensor, State]:
    """Run a ``"diagonal"`` cell; see the module docstring (``resets`` only where
    ``restarts_by_transition``)."""
    if implementation != "auto":
        reason = unavailable_reason(implementation, inputs.device)
        if reason is not None:
            raise StrategyUnsupportedError(f"strategy 'scan:{implementation}' cannot run: {reason}")
    projected = cell.project_inputs(inputs)  # (B, T, P)
    active = None
    if lengths is not None:
        active = time_mask(lengths, inputs.shape[1], inputs.device)  # (B, T, 1)
    fused = None
    if implementation in ("auto", "compiled") and resets is None:
        fused = gated_scan_cpu.lookup(cell.compiled_kernel, projected.device, projected.dtype)
    if fused is not None and torch.compiler.is_compiling():
        assert cell.compiled_kernel is not None  # lookup found its kernel
        tensors = [projected, cell.scan_initial(state), lengths]
        hidden = custom_ops.call("gated_scan", tensors, cell.compiled_kernel)[0]
    elif fused is not None:
        hidden = fused(projected, cell.scan_initial(state), lengths)
    else:
        a, b = cell.scan_terms(projected, state)
        if resets is not None:
            a = restart_transitions(a, resets)
        if active is not None:
            a = torch.where(active, a, torch.ones((), dtype=a.dtype, device=a.device))
            b = torch.where(active, b, torch.zeros((), dtype=b.dtype, device=b.device))
        hidden = diagonal_scan(a, b, cell.scan_initial(state), implementation=implementation)
    outputs, final_state = cell.scan_readout(projected, hidden, state, lengths)
    if active is not None:
        outputs = torch.where(active, outputs, torch.zeros((), dtype=outputs.dtype))
    return outputs, final_state


def restart_transitions(a: Tensor, resets: Tensor) -> Tensor:
    """``a (B, T, N)`` with a zero transition at each reset, so ``h_t = b_t`` there: the step
    from the zero state, whatever ``h_{t-1}`` was."""
    zero = torch.zeros((), dtype=a.dtype, device=a.device)
    return torch.where(resets.unsqueeze(-1), zero, a)


def restarts_by_transition(cell: Cell, state: State) -> bool:
    """Whether a zero transition restarts ``cell``: a diagonal cell whose scan carries its
    whole state (one field, of the scan's shape), so nothing else needs restarting."""
    if cell.linear_form != "diagonal" or len(state) != 1:
        return False
    return tuple(cell.scan_initial(state).shape) == tuple(state[0].shape)


FORMS: dict[str, FormRunner] = {
    "diagonal": run_diagonal,
    "matrix": run_matrix,
    "delta": run_delta,
    "softmax_prefix": run_softmax_prefix,
    "chunkwise": run_chunkwise,
}


def unsupported_reason(cell: Cell) -> str | None:
    """Why ``scan`` cannot run ``cell``, or None when it can."""
    if not cell.is_linear and cell.linear_form != "chunkwise":
        return f"cell {type(cell).__name__} is not linear in its state"
    form = cell.linear_form
    if form not in FORMS:
        return f"cell {type(cell).__name__} has linear form {form!r}; known: {sorted(FORMS)}"
    return None


def time_mask(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    """``(B, T, 1)`` booleans, True where ``t < lengths[b]``."""
    mask = length_mask(lengths, steps, device)
    assert mask is not None  # lengths is a tensor here
    return mask[..., None]


def make_scan_strategy(implementation: str = "auto") -> Callable[..., tuple[Tensor, State]]:
    """The scan strategy with the given scan implementation."""

    def run(
        cell: Cell,
        inputs: Tensor,
        state: State | None = None,
        lengths: Tensor | Sequence[int] | None = None,
        resets: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        reason = unsupported_reason(cell)
        if reason is not None:
            raise StrategyUnsupportedError(f"strategy 'scan' cannot run this cell: {reason}")
        state, lengths, resets = prepare_with_resets(cell, inputs, state, lengths, resets)
        if resets is not None and not restarts_by_transition(cell, state):
            if torch.compiler.is_compiling():
                raise StrategyUnsupportedError(
                    f"strategy 'scan' under torch.compile cannot run resets for "
                    f"{type(cell).__name__}'s {cell.linear_form} state: its segments have "
                    f"data-dependent sizes there; use strategy 'sequential', or compile "
                    f"without resets"
                )
            return run_segments(run_form, cell, inputs, state, lengths, resets)
        return run_form(cell, inputs, state, lengths, resets)

    def run_form(
        cell: Cell,
        inputs: Tensor,
        state: State,
        lengths: Tensor | None,
        resets: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        cell.begin_sequence(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
        if resets is not None:
            return run_diagonal(cell, inputs, state, lengths, implementation, resets)
        form = cell.linear_form
        assert form is not None  # unsupported_reason checked it is in FORMS
        return FORMS[form](cell, inputs, state, lengths, implementation)

    run.__doc__ = f"Run a linear cell with the {implementation!r} scan implementation."
    return run


run = make_scan_strategy("auto")
