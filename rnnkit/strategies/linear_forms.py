"""The scan strategy's runners for matrix-state and softmax-prefix cells.

Each runner has the signature of ``rnnkit.strategies.scan.FormRunner`` and reads only the
capabilities its form names (documented in ``scan.py``). ``active (B, T)`` is True where
``t < lengths[b]`` (None without lengths); at other steps every runner leaves the state
unchanged and writes zero outputs, as the sequential reference does.

- ``run_matrix`` (``"matrix"``): ``S_t = diag(exp(log_decay_t)) S_{t-1} + k_t v_t^T``, ``o_t =
  S_t^T q_t``; padded steps get ``log_decay = 0, k = 0``. Implementations:
  ``kernels/matrix.py``.
- ``run_delta`` (``"delta"``): ``S_t = alpha_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t
  v_t^T``, ``o_t = S_t^T q_t``; padded steps get ``beta = 0`` and ``log_decay = 0``. A cell
  with ``virtual_steps = n`` (DeltaProduct) gives ``n`` writes per input step, a sequence ``n``
  times longer: its mask repeats each step ``n`` times and the outputs are read after each
  step's last write. Implementations: ``kernels/delta.py``.
- ``run_softmax_prefix`` (``"softmax_prefix"``): attention of one query over each prefix,
  ``o_t = sum_{i<=t} exp(s_i) v_i / sum_{i<=t} exp(s_i)``, kept as a running maximum ``m``,
  numerator ``u`` and denominator ``w``. The maximum is a cumulative max, ``m_t = max(m_0,
  s_1, ..., s_t)``; given it, ``(u, w)`` follow the diagonal recurrence ``u_t = exp(m_{t-1} -
  m_t) u_{t-1} + exp(s_t - m_t) v_t`` (and ``w`` with ``v = 1``), whose coefficients never
  exceed 1, run by ``rnnkit.strategies.kernels.diagonal_scan``. Padded steps get ``s = -inf``.

Implementation names: the matrix and delta forms have ``loop`` and ``chunked`` (``auto`` means
``chunked`` on every device) and refuse the others with ``StrategyUnsupportedError``; the
softmax prefix form passes the name on to the diagonal scan, refusing those that cannot run on
the inputs' device.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.kernels import diagonal_scan, unavailable_reason
from rnnkit.strategies.kernels.delta import DELTA_SCAN_IMPLEMENTATIONS
from rnnkit.strategies.kernels.matrix import MATRIX_SCAN_IMPLEMENTATIONS
from rnnkit.strategies.native import StrategyUnsupportedError
from rnnkit.strategies.validation import length_mask


def active_steps(lengths: Tensor | None, steps: int, device: torch.device) -> Tensor | None:
    """``(B, T)`` booleans, True where ``t < lengths[b]``; None without lengths."""
    return length_mask(lengths, steps, device)


def matrix_implementation(form: str, implementation: str) -> str:
    """The kernel name for ``implementation`` in the matrix and delta forms."""
    if implementation == "auto":
        return "chunked"
    if implementation not in ("loop", "chunked"):
        raise StrategyUnsupportedError(
            f"the {form!r} linear form has the scan implementations loop and chunked "
            f"(auto: chunked), not {implementation!r}"
        )
    return implementation


def zero_padded_outputs(outputs: Tensor, active: Tensor | None) -> Tensor:
    """``outputs (B, T, O)`` with zeros where ``active (B, T)`` is False."""
    if active is None:
        return outputs
    return torch.where(active.unsqueeze(-1), outputs, torch.zeros((), dtype=outputs.dtype))


def run_matrix(
    cell: Cell, inputs: Tensor, state: State, lengths: Tensor | None, implementation: str
) -> tuple[Tensor, State]:
    """Run a ``"matrix"`` cell; see the module docstring."""
    scan = MATRIX_SCAN_IMPLEMENTATIONS[matrix_implementation("matrix", implementation)]
    projected = cell.project_inputs(inputs)  # (B, T, P)
    active = active_steps(lengths, inputs.shape[1], inputs.device)
    query, key, value, log_decay = cell.matrix_terms(projected, state, active)
    if active is not None:
        mask = active[:, None, :, None]  # (B, 1, T, 1)
        key = torch.where(mask, key, torch.zeros((), dtype=key.dtype))
        log_decay = torch.where(mask, log_decay, torch.zeros((), dtype=log_decay.dtype))
    outputs, final = scan(query, key, value, log_decay, cell.matrix_initial(state))
    outputs, final_state = cell.matrix_readout(projected, outputs, final, state, active)
    return zero_padded_outputs(outputs, active), final_state


def run_delta(
    cell: Cell, inputs: Tensor, state: State, lengths: Tensor | None, implementation: str
) -> tuple[Tensor, State]:
    """Run a ``"delta"`` cell; see the module docstring."""
    scan = DELTA_SCAN_IMPLEMENTATIONS[matrix_implementation("delta", implementation)]
    projected = cell.project_inputs(inputs)  # (B, T, P)
    active = active_steps(lengths, inputs.shape[1], inputs.device)
    query, key, value, beta, log_decay = cell.delta_terms(projected, state, active)
    writes = cell.virtual_steps  # delta_terms gave T * writes steps
    if active is not None:
        zero = torch.zeros((), dtype=beta.dtype)
        written = active.repeat_interleave(writes, 1).unsqueeze(1)  # (B, 1, T * writes)
        beta = torch.where(written, beta, zero)
        if log_decay is not None:
            log_decay = torch.where(written, log_decay, zero)
    outputs, final = scan(query, key, value, beta, cell.matrix_initial(state), log_decay)
    outputs = outputs[:, :, writes - 1 :: writes]  # (B, heads, T, d_v): after each last write
    outputs, final_state = cell.matrix_readout(projected, outputs, final, state, active)
    return zero_padded_outputs(outputs, active), final_state


def run_softmax_prefix(
    cell: Cell, inputs: Tensor, state: State, lengths: Tensor | None, implementation: str
) -> tuple[Tensor, State]:
    """Run a ``"softmax_prefix"`` cell; see the module docstring."""
    reason = None if implementation == "auto" else unavailable_reason(implementation, inputs.device)
    if reason is not None:
        raise StrategyUnsupportedError(f"the 'softmax_prefix' linear form cannot run: {reason}")
    projected = cell.project_inputs(inputs)  # (B, T, P)
    active = active_steps(lengths, inputs.shape[1], inputs.device)
    scores, values = cell.prefix_terms(projected, state)  # (B, heads, T), (B, heads, T, d_v)
    if active is not None:
        scores = torch.where(active.unsqueeze(1), scores, float("-inf"))
    maximum, numerator, denominator = cell.prefix_initial(state)
    running_max = torch.maximum(maximum.unsqueeze(-1), scores.cummax(-1).values)  # m_t
    previous = torch.cat([maximum.unsqueeze(-1), running_max[..., :-1]], -1)  # m_{t-1}
    weights = (scores - running_max).exp().unsqueeze(-1)  # exp(s_t - m_t): (B, heads, T, 1)
    terms = torch.cat([weights * values, weights], -1)  # (B, heads, T, d_v + 1)
    kept = (previous - running_max).exp().unsqueeze(-1).expand_as(terms)  # exp(m_{t-1} - m_t)
    initial = torch.cat([numerator, denominator.unsqueeze(-1)], -1)  # (B, heads, d_v + 1)
    sums = diagonal_scan(  # over (B, T, heads * (d_v + 1))
        kept.transpose(1, 2).flatten(2),
        terms.transpose(1, 2).flatten(2),
        initial.flatten(1),
        implementation=implementation,
    )
    sums = sums.unflatten(2, initial.shape[1:]).transpose(1, 2)  # (B, heads, T, d_v + 1)
    attended = sums[..., :-1] / sums[..., -1:]  # u_t / w_t
    final = (running_max[..., -1], sums[:, :, -1, :-1], sums[:, :, -1, -1])
    outputs, final_state = cell.prefix_readout(projected, attended, final, state, active)
    return zero_padded_outputs(outputs, active), final_state
