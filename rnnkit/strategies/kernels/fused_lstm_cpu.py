"""The whole LSTM time loop compiled for the CPU with Numba, forward and backward in one call each.

Per step, the product with the recurrent weights (BLAS through ``np.dot``) and the cell's
pointwise math fused around it; every option of ``rnnkit.cells.lstm`` (peepholes, layer norm of
the recurrent pre-activations and of the cell, ``proj_size``), the regularization masks
(recurrent-input dropout, zoneout masks drawn up front or its evaluation-mode expectation) and
variable lengths. The input projection runs outside, for all steps at once; the weight gradients
are one large product each after the backward loop (``fused_lstm.py``). Equations: those of
``LSTMCell.recur``; the tests compare the two.

Saved for the backward pass, time-major so that every step reads a contiguous ``(B, .)`` block:
``recurrent_inputs (T, B, R)`` (h_{t-1} times its dropout mask), ``gates (T, B, 4H)`` (i, f, g,
o after their nonlinearities), ``cells_before (T, B, H)`` (c_{t-1}), ``cells (T, B, H)`` (c_t
before zoneout), ``cell_outputs (T, B, H)`` (tanh of the cell, layer-normalized with
``layer_norm``), ``hiddens (T, B, H)`` (o * tanh(.), before the projection), with ``layer_norm``
the normalized recurrent pre-activations ``(T, B, 4H)``, the normalized cells ``(T, B, H)`` and
their inverse standard deviations ``(T, B, 2)``.
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    from rnnkit.strategies.kernels.compiled_math import sigmoid, tanh

    @numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True, inline="always")
    def _normalize_row(values, normalized, eps):  # pragma: no cover - compiled
        # layer norm without its gain: normalized = (values - mean) / sqrt(var + eps)
        width = values.shape[0]
        mean = values.sum() / width
        variance = values.dtype.type(0)
        for j in range(width):
            centred = values[j] - mean
            variance += centred * centred
        inverse_std = values.dtype.type(1) / np.sqrt(variance / width + eps)
        for j in range(width):
            normalized[j] = (values[j] - mean) * inverse_std
        return inverse_std

    @numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True, inline="always")
    def _normalize_backward(grad_normalized, normalized, inverse_std, out):  # pragma: no cover
        # out = d values of layer norm (without gain) from d normalized
        width = normalized.shape[0]
        mean_grad = grad_normalized.sum() / width
        mean_projection = (grad_normalized * normalized).sum() / width
        for j in range(width):
            out[j] = inverse_std * (
                grad_normalized[j] - mean_grad - normalized[j] * mean_projection
            )

    @numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
    def lstm_forward(
        projected, h0, c0, weight_t, hidden_mask, peephole, norm_hidden, norm_cell_weight,
        norm_cell_bias, eps, projection_t, zoneout_h, zoneout_c, lengths, resets, flags,
        outputs, h_final, c_final, recurrent_inputs, gates, cells_before, cells, cell_outputs,
        hiddens, normalized_recurrent, normalized_cells, inverse_stds,
    ):  # pragma: no cover - compiled
        use_mask, use_peephole, use_norm, use_projection, zoneout_mode, use_resets = (
            flags[0], flags[1], flags[2], flags[3], flags[4], flags[5]
        )
        batch, steps, width = projected.shape
        hidden = width // 4
        one = projected.dtype.type(1)
        h, c = h0.copy(), c0.copy()
        recurrent = np.empty((batch, width), dtype=projected.dtype)
        projected_hidden = np.empty(h.shape, dtype=projected.dtype)
        for t in range(steps):
            inputs_t = recurrent_inputs[t]
            for b in range(batch):
                if use_resets and resets[b, t] and t < lengths[b]:
                    h[b] = h0[b]
                    c[b] = c0[b]
                for k in range(h.shape[1]):
                    inputs_t[b, k] = h[b, k] * hidden_mask[b, k] if use_mask else h[b, k]
            np.dot(inputs_t, weight_t, recurrent)  # (B, 4H)
            for b in range(batch):
                if t >= lengths[b]:
                    hiddens[t, b, :] = 0
                    continue
                pre = recurrent[b]
                if use_norm:
                    inverse_stds[t, b, 0] = _normalize_row(
                        recurrent[b], normalized_recurrent[t, b], eps[0]
                    )
                    pre = normalized_recurrent[t, b] * norm_hidden
                row, gate, previous = projected[b, t], gates[t, b], c[b]
                cells_before[t, b] = previous
                for j in range(hidden):
                    input_pre = row[j] + pre[j]
                    forget_pre = row[hidden + j] + pre[hidden + j]
                    if use_peephole:
                        input_pre += peephole[0, j] * previous[j]
                        forget_pre += peephole[1, j] * previous[j]
                    input_gate, forget_gate = sigmoid(input_pre, one), sigmoid(forget_pre, one)
                    candidate = tanh(row[2 * hidden + j] + pre[2 * hidden + j], one)
                    gate[j], gate[hidden + j], gate[2 * hidden + j] = (
                        input_gate, forget_gate, candidate
                    )
                    cells[t, b, j] = forget_gate * previous[j] + input_gate * candidate
                cell_t = cells[t, b]
                if use_norm:
                    inverse_stds[t, b, 1] = _normalize_row(cell_t, normalized_cells[t, b], eps[1])
                for j in range(hidden):
                    output_pre = row[3 * hidden + j] + pre[3 * hidden + j]
                    if use_peephole:
                        output_pre += peephole[2, j] * cell_t[j]
                    output_gate = sigmoid(output_pre, one)
                    gate[3 * hidden + j] = output_gate
                    if use_norm:
                        squashed = tanh(
                            normalized_cells[t, b, j] * norm_cell_weight[j] + norm_cell_bias[j],
                            one,
                        )
                    else:
                        squashed = tanh(cell_t[j], one)
                    cell_outputs[t, b, j] = squashed
                    hiddens[t, b, j] = output_gate * squashed
            new_h = hiddens[t]
            if use_projection:
                np.dot(hiddens[t], projection_t, projected_hidden)
                new_h = projected_hidden
            slot = t if zoneout_mode == 2 else 0
            for b in range(batch):
                if t >= lengths[b]:
                    outputs[b, t, :] = 0
                    continue
                for k in range(h.shape[1]):
                    value = new_h[b, k]
                    if zoneout_mode > 0:
                        keep = zoneout_h[slot, b, k]
                        value = value + keep * (h[b, k] - value)
                    h[b, k] = value
                    outputs[b, t, k] = value
                for j in range(hidden):
                    value = cells[t, b, j]
                    if zoneout_mode > 0:
                        keep = zoneout_c[slot, b, j]
                        value = value + keep * (c[b, j] - value)
                    c[b, j] = value
        h_final[:] = h
        c_final[:] = c

    @numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
    def lstm_backward(
        grad_outputs, grad_h_final, grad_c_final, weight, hidden_mask, peephole, norm_hidden,
        norm_cell_weight, projection, zoneout_h, zoneout_c, lengths, resets, flags,
        gates, cells_before, cell_outputs, normalized_recurrent, normalized_cells,
        inverse_stds, grad_projected, grad_recurrent, grad_hidden_outputs, grad_cell_outputs,
        grad_h0, grad_c0,
    ):  # pragma: no cover - compiled
        use_mask, use_peephole, use_norm, use_projection, zoneout_mode, use_resets = (
            flags[0], flags[1], flags[2], flags[3], flags[4], flags[5]
        )
        batch, steps, width = grad_projected.shape
        hidden = width // 4
        recurrent_size = grad_h0.shape[1]
        one = grad_projected.dtype.type(1)
        grad_h, grad_c = grad_h_final.copy(), grad_c_final.copy()
        grad_h0[:] = 0  # what reset steps send to the initial state
        grad_c0[:] = 0
        grad_h_direct = np.zeros_like(grad_h)  # zoneout's path from h_t to h_{t-1}
        grad_c_direct = np.zeros(hidden, dtype=grad_c.dtype)
        grad_hidden = np.empty((batch, hidden), dtype=grad_c.dtype)
        grad_recurrent_input = np.empty_like(grad_h)
        grad_squashed = np.empty(hidden, dtype=grad_c.dtype)
        grad_normalized = np.empty(hidden, dtype=grad_c.dtype)
        grad_cell_norm = np.empty(hidden, dtype=grad_c.dtype)
        grad_pre = np.empty(width, dtype=grad_c.dtype)
        for index in range(steps):
            t = steps - 1 - index
            slot = t if zoneout_mode == 2 else 0
            for b in range(batch):
                active = t < lengths[b]
                for k in range(recurrent_size):
                    total = grad_h[b, k] + grad_outputs[b, t, k] if active else 0
                    keep = zoneout_h[slot, b, k] if zoneout_mode > 0 and active else 0
                    grad_hidden_outputs[t, b, k] = (one - keep) * total
                    grad_h_direct[b, k] = keep * total
            if use_projection:
                np.dot(grad_hidden_outputs[t], projection, grad_hidden)
            else:
                grad_hidden[:] = grad_hidden_outputs[t]
            for b in range(batch):
                if t >= lengths[b]:
                    grad_projected[b, t, :] = 0
                    grad_recurrent[t, b, :] = 0
                    grad_cell_outputs[t, b, :] = 0
                    continue
                gate, previous = gates[t, b], cells_before[t, b]
                for j in range(hidden):
                    keep = zoneout_c[slot, b, j] if zoneout_mode > 0 else 0
                    grad_c_direct[j] = keep * grad_c[b, j]
                    squashed = cell_outputs[t, b, j]
                    grad_squashed[j] = grad_hidden[b, j] * gate[3 * hidden + j] * (
                        one - squashed * squashed
                    )
                    grad_cell_outputs[t, b, j] = grad_squashed[j]
                if use_norm:
                    for j in range(hidden):
                        grad_normalized[j] = grad_squashed[j] * norm_cell_weight[j]
                    _normalize_backward(
                        grad_normalized, normalized_cells[t, b], inverse_stds[t, b, 1],
                        grad_cell_norm,
                    )
                else:
                    grad_cell_norm[:] = grad_squashed
                for j in range(hidden):
                    keep = zoneout_c[slot, b, j] if zoneout_mode > 0 else 0
                    input_gate, forget_gate = gate[j], gate[hidden + j]
                    candidate, output_gate = gate[2 * hidden + j], gate[3 * hidden + j]
                    output_slope = output_gate * (one - output_gate)
                    grad_output_pre = grad_hidden[b, j] * cell_outputs[t, b, j] * output_slope
                    grad_cell = (one - keep) * grad_c[b, j] + grad_cell_norm[j]
                    if use_peephole:
                        grad_cell += grad_output_pre * peephole[2, j]
                    grad_input_pre = grad_cell * candidate * input_gate * (one - input_gate)
                    grad_forget_pre = grad_cell * previous[j] * forget_gate * (one - forget_gate)
                    grad_candidate_pre = grad_cell * input_gate * (one - candidate * candidate)
                    grad_pre[j], grad_pre[hidden + j] = grad_input_pre, grad_forget_pre
                    grad_pre[2 * hidden + j] = grad_candidate_pre
                    grad_pre[3 * hidden + j] = grad_output_pre
                    grad_previous = grad_cell * forget_gate + grad_c_direct[j]
                    if use_peephole:
                        grad_previous += (
                            grad_input_pre * peephole[0, j] + grad_forget_pre * peephole[1, j]
                        )
                    grad_c[b, j] = grad_previous
                grad_projected[b, t] = grad_pre
                if use_norm:
                    for j in range(width):
                        grad_pre[j] *= norm_hidden[j]
                    _normalize_backward(
                        grad_pre, normalized_recurrent[t, b], inverse_stds[t, b, 0],
                        grad_recurrent[t, b],
                    )
                else:
                    grad_recurrent[t, b] = grad_pre
            np.dot(grad_recurrent[t], weight, grad_recurrent_input)  # (B, R)
            for b in range(batch):
                if t >= lengths[b]:
                    continue
                for k in range(recurrent_size):
                    value = grad_recurrent_input[b, k]
                    if use_mask:
                        value *= hidden_mask[b, k]
                    grad_h[b, k] = value + grad_h_direct[b, k]
                if use_resets and resets[b, t]:  # the step started from the initial state
                    grad_h0[b] += grad_h[b]
                    grad_c0[b] += grad_c[b]
                    grad_h[b] = 0
                    grad_c[b] = 0
        grad_h0 += grad_h
        grad_c0 += grad_c

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"numba could not be imported ({error})"
