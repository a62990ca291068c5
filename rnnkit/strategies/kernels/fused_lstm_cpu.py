"""The whole LSTM time loop compiled for the CPU with Numba, forward and backward in one call each.

Per step, the product with the recurrent weights (``compiled_matmul.py``) and the cell's
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

from typing import Any

import numpy as np

try:
    import numba

    from rnnkit.strategies.kernels.compiled_math import sigmoid, tanh
    from rnnkit.strategies.kernels.compiled_matmul import matmul_transposed

    # error_model="numpy": no ZeroDivisionError check in the divisions, which kept LLVM from
    # vectorizing every loop with a sigmoid (measured 4x slower)
    COMPILED: dict[str, Any] = {
        "cache": True,
        "nogil": True,
        "boundscheck": False,
        "fastmath": True,
        "error_model": "numpy",
    }
    INLINE: dict[str, Any] = {**COMPILED, "inline": "always"}

    @numba.njit(**INLINE)
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

    @numba.njit(**INLINE)
    def _normalize_backward(grad_normalized, normalized, inverse_std, out):  # pragma: no cover
        # out = d values of layer norm (without gain) from d normalized
        width = normalized.shape[0]
        mean_grad = grad_normalized.sum() / width
        mean_projection = (grad_normalized * normalized).sum() / width
        for j in range(width):
            out[j] = inverse_std * (
                grad_normalized[j] - mean_grad - normalized[j] * mean_projection
            )

    @numba.njit(**INLINE)
    def _gates_row(
        row,
        recurrent,
        normalized,
        norm_hidden,
        use_norm,
        eps,
        peephole,
        use_peephole,
        previous,
        pre,
        gate,
        cell,
        cell_normalized,
        cell_output,
        hidden_out,
        norm_cell_weight,
        norm_cell_bias,
    ):  # pragma: no cover - compiled
        # one row of one step: pre-activations, gates, the cell and o * tanh(cell);
        # returns the inverse standard deviations of the two layer norms (1 without)
        one = row.dtype.type(1)
        hidden = cell.shape[0]
        inverse_std_recurrent = inverse_std_cell = one
        if use_norm:
            inverse_std_recurrent = _normalize_row(recurrent, normalized, eps[0])
            for j in range(row.shape[0]):
                pre[j] = row[j] + normalized[j] * norm_hidden[j]
        else:
            for j in range(row.shape[0]):
                pre[j] = row[j] + recurrent[j]
        if use_peephole:
            for j in range(hidden):
                pre[j] += peephole[0, j] * previous[j]
                pre[hidden + j] += peephole[1, j] * previous[j]
        for j in range(2 * hidden):
            gate[j] = sigmoid(pre[j], one)
        for j in range(hidden):
            candidate = tanh(pre[2 * hidden + j], one)
            gate[2 * hidden + j] = candidate
            cell[j] = gate[hidden + j] * previous[j] + gate[j] * candidate
        if use_norm:
            inverse_std_cell = _normalize_row(cell, cell_normalized, eps[1])
            for j in range(hidden):
                cell_output[j] = tanh(
                    cell_normalized[j] * norm_cell_weight[j] + norm_cell_bias[j], one
                )
        else:
            for j in range(hidden):
                cell_output[j] = tanh(cell[j], one)
        if use_peephole:
            for j in range(hidden):
                pre[3 * hidden + j] += peephole[2, j] * cell[j]
        for j in range(hidden):
            output_gate = sigmoid(pre[3 * hidden + j], one)
            gate[3 * hidden + j] = output_gate
            hidden_out[j] = output_gate * cell_output[j]
        return inverse_std_recurrent, inverse_std_cell

    @numba.njit(**INLINE)
    def _zoneout_row(candidate, keep, use_zoneout, state, output):  # pragma: no cover
        # state <- candidate + keep * (state - candidate), also written to output
        if use_zoneout:
            for k in range(state.shape[0]):
                value = candidate[k] + keep[k] * (state[k] - candidate[k])
                state[k] = value
                output[k] = value
        else:
            for k in range(state.shape[0]):
                state[k] = candidate[k]
                output[k] = candidate[k]

    @numba.njit(**COMPILED)
    def lstm_forward(
        projected,
        h0,
        c0,
        weight_t,
        hidden_mask,
        peephole,
        norm_hidden,
        norm_cell_weight,
        norm_cell_bias,
        eps,
        projection_t,
        zoneout_h,
        zoneout_c,
        lengths,
        resets,
        flags,
        outputs,
        h_final,
        c_final,
        recurrent_inputs,
        gates,
        cells_before,
        cells,
        cell_outputs,
        hiddens,
        normalized_recurrent,
        normalized_cells,
        inverse_stds,
    ):  # pragma: no cover - compiled
        use_mask, use_peephole, use_norm, use_projection, zoneout_mode, use_resets = (
            flags[0],
            flags[1],
            flags[2],
            flags[3],
            flags[4],
            flags[5],
        )
        batch, steps, width = projected.shape
        h, c = h0.copy(), c0.copy()
        weight = np.ascontiguousarray(weight_t.T)  # (4H, R): rows for matmul_transposed
        projection = np.ascontiguousarray(projection_t.T)
        recurrent = np.empty((batch, width), dtype=projected.dtype)
        projected_hidden = np.empty(h.shape, dtype=projected.dtype)
        pre = np.empty(width, dtype=projected.dtype)
        scratch = np.empty(c.shape[1], dtype=projected.dtype)
        for t in range(steps):
            inputs_t = recurrent_inputs[t]
            for b in range(batch):
                if use_resets and resets[b, t] and t < lengths[b]:
                    h[b] = 0  # a reset restarts from the zero state
                    c[b] = 0
                inputs_row, h_row = inputs_t[b], h[b]
                if use_mask:
                    mask_row = hidden_mask[b]
                    for k in range(h_row.shape[0]):
                        inputs_row[k] = h_row[k] * mask_row[k]
                else:
                    inputs_row[:] = h_row
            matmul_transposed(inputs_t, weight, recurrent)  # (B, 4H)
            for b in range(batch):
                if t >= lengths[b]:
                    # zero rows: the weight gradients multiply them by this step's zero gradient
                    hiddens[t, b, :] = 0
                    cells_before[t, b, :] = 0
                    cells[t, b, :] = 0
                    if use_norm:
                        normalized_recurrent[t, b, :] = 0
                        normalized_cells[t, b, :] = 0
                    continue
                cells_before[t, b] = c[b]
                stds = _gates_row(
                    projected[b, t],
                    recurrent[b],
                    normalized_recurrent[t, b] if use_norm else pre,
                    norm_hidden,
                    use_norm,
                    eps,
                    peephole,
                    use_peephole,
                    cells_before[t, b],
                    pre,
                    gates[t, b],
                    cells[t, b],
                    normalized_cells[t, b] if use_norm else scratch,
                    cell_outputs[t, b],
                    hiddens[t, b],
                    norm_cell_weight,
                    norm_cell_bias,
                )
                if use_norm:
                    inverse_stds[t, b, 0], inverse_stds[t, b, 1] = stds
            new_h = hiddens[t]
            if use_projection:
                matmul_transposed(hiddens[t], projection, projected_hidden)
                new_h = projected_hidden
            slot = t if zoneout_mode == 2 else 0
            for b in range(batch):
                if t >= lengths[b]:
                    outputs[b, t, :] = 0
                    continue
                _zoneout_row(new_h[b], zoneout_h[slot, b], zoneout_mode > 0, h[b], outputs[b, t])
                _zoneout_row(cells[t, b], zoneout_c[slot, b], zoneout_mode > 0, c[b], scratch)
        h_final[:] = h
        c_final[:] = c

    @numba.njit(**INLINE)
    def _gates_backward_row(
        grad_hidden,
        grad_c,
        keep,
        use_zoneout,
        gate,
        previous,
        cell_output,
        cell_normalized,
        inverse_std_cell,
        norm_cell_weight,
        use_norm,
        peephole,
        use_peephole,
        grad_cell_output,
        grad_normalized,
        grad_cell_norm,
        grad_pre,
    ):  # pragma: no cover - compiled
        # d pre-activations (into grad_pre) and d c_{t-1} (into grad_c) of one row of one step
        one = grad_pre.dtype.type(1)
        hidden = previous.shape[0]
        for j in range(hidden):
            slope = one - cell_output[j] * cell_output[j]
            grad_cell_output[j] = grad_hidden[j] * gate[3 * hidden + j] * slope
        if use_norm:
            for j in range(hidden):
                grad_normalized[j] = grad_cell_output[j] * norm_cell_weight[j]
            _normalize_backward(grad_normalized, cell_normalized, inverse_std_cell, grad_cell_norm)
        else:
            grad_cell_norm[:] = grad_cell_output
        for j in range(hidden):
            input_gate, forget_gate = gate[j], gate[hidden + j]
            candidate, output_gate = gate[2 * hidden + j], gate[3 * hidden + j]
            grad_output_pre = grad_hidden[j] * cell_output[j] * output_gate * (one - output_gate)
            carried = grad_c[j]
            direct = keep[j] * carried if use_zoneout else carried * 0
            grad_cell = carried - direct + grad_cell_norm[j]
            if use_peephole:
                grad_cell += grad_output_pre * peephole[2, j]
            grad_input_pre = grad_cell * candidate * input_gate * (one - input_gate)
            grad_forget_pre = grad_cell * previous[j] * forget_gate * (one - forget_gate)
            grad_pre[j] = grad_input_pre
            grad_pre[hidden + j] = grad_forget_pre
            grad_pre[2 * hidden + j] = grad_cell * input_gate * (one - candidate * candidate)
            grad_pre[3 * hidden + j] = grad_output_pre
            grad_previous = grad_cell * forget_gate + direct
            if use_peephole:
                grad_previous += grad_input_pre * peephole[0, j] + grad_forget_pre * peephole[1, j]
            grad_c[j] = grad_previous

    @numba.njit(**INLINE)
    def _accumulate_parameter_sums(
        sums,
        grad_pre,
        grad_cell_output,
        previous,
        cell,
        normalized,
        cell_normalized,
        use_peephole,
        use_norm,
    ):  # pragma: no cover - compiled
        # one row's share of the peephole and layer-norm gain gradients, by row of ``sums``:
        # 0 norm_hidden (4H), 1 norm_cell weight, 2 norm_cell bias, 3-5 peepholes i, f, o (H)
        hidden = previous.shape[0]
        if use_norm:
            for j in range(grad_pre.shape[0]):
                sums[0, j] += grad_pre[j] * normalized[j]
            for j in range(hidden):
                sums[1, j] += grad_cell_output[j] * cell_normalized[j]
                sums[2, j] += grad_cell_output[j]
        if use_peephole:
            for j in range(hidden):
                sums[3, j] += grad_pre[j] * previous[j]
                sums[4, j] += grad_pre[hidden + j] * previous[j]
                sums[5, j] += grad_pre[3 * hidden + j] * cell[j]

    @numba.njit(**COMPILED)
    def lstm_backward(
        grad_outputs,
        grad_h_final,
        grad_c_final,
        weight,
        hidden_mask,
        peephole,
        norm_hidden,
        norm_cell_weight,
        projection,
        zoneout_h,
        zoneout_c,
        lengths,
        resets,
        flags,
        gates,
        cells_before,
        cells,
        cell_outputs,
        normalized_recurrent,
        normalized_cells,
        inverse_stds,
        parameter_sums,
        grad_projected,
        grad_recurrent,
        grad_hidden_outputs,
        grad_cell_outputs,
        grad_h0,
        grad_c0,
    ):  # pragma: no cover - compiled
        use_mask, use_peephole, use_norm, use_projection, zoneout_mode, use_resets = (
            flags[0],
            flags[1],
            flags[2],
            flags[3],
            flags[4],
            flags[5],
        )
        batch, steps, width = grad_projected.shape
        hidden = width // 4
        recurrent_size = grad_h0.shape[1]
        dtype = grad_projected.dtype
        grad_h, grad_c = grad_h_final.copy(), grad_c_final.copy()
        weight_columns = np.ascontiguousarray(weight.T)  # (R, 4H)
        projection_columns = np.ascontiguousarray(projection.T)
        grad_h0[:] = 0  # the first segment's gradient is added at the end
        grad_c0[:] = 0
        grad_h_direct = np.zeros_like(grad_h)  # zoneout's path from h_t to h_{t-1}
        grad_hidden = np.empty((batch, hidden), dtype=dtype)
        grad_recurrent_input = np.empty_like(grad_h)
        grad_normalized = np.empty(hidden, dtype=dtype)
        grad_cell_norm = np.empty(hidden, dtype=dtype)
        grad_pre = np.empty(width, dtype=dtype)
        placeholder = np.zeros(hidden, dtype=dtype)
        for index in range(steps):
            t = steps - 1 - index
            slot = t if zoneout_mode == 2 else 0
            for b in range(batch):
                hidden_row, direct_row = grad_hidden_outputs[t, b], grad_h_direct[b]
                if t >= lengths[b]:
                    hidden_row[:] = 0
                    continue
                carried, output_row = grad_h[b], grad_outputs[b, t]
                if zoneout_mode > 0:
                    keep = zoneout_h[slot, b]
                    for k in range(recurrent_size):
                        total = carried[k] + output_row[k]
                        direct_row[k] = keep[k] * total
                        hidden_row[k] = total - direct_row[k]
                else:
                    for k in range(recurrent_size):
                        hidden_row[k] = carried[k] + output_row[k]
            if use_projection:
                matmul_transposed(grad_hidden_outputs[t], projection_columns, grad_hidden)
            else:
                grad_hidden[:] = grad_hidden_outputs[t]
            for b in range(batch):
                if t >= lengths[b]:
                    grad_projected[b, t, :] = 0
                    grad_recurrent[t, b, :] = 0
                    grad_cell_outputs[t, b, :] = 0
                    continue
                _gates_backward_row(
                    grad_hidden[b],
                    grad_c[b],
                    zoneout_c[slot, b],
                    zoneout_mode > 0,
                    gates[t, b],
                    cells_before[t, b],
                    cell_outputs[t, b],
                    normalized_cells[t, b] if use_norm else placeholder,
                    inverse_stds[t, b, 1] if use_norm else dtype.type(1),
                    norm_cell_weight,
                    use_norm,
                    peephole,
                    use_peephole,
                    grad_cell_outputs[t, b],
                    grad_normalized,
                    grad_cell_norm,
                    grad_pre,
                )
                grad_projected[b, t] = grad_pre
                if use_peephole or use_norm:
                    _accumulate_parameter_sums(
                        parameter_sums,
                        grad_pre,
                        grad_cell_outputs[t, b],
                        cells_before[t, b],
                        cells[t, b],
                        normalized_recurrent[t, b] if use_norm else grad_pre,
                        normalized_cells[t, b] if use_norm else placeholder,
                        use_peephole,
                        use_norm,
                    )
                if use_norm:
                    for j in range(width):
                        grad_pre[j] *= norm_hidden[j]
                    _normalize_backward(
                        grad_pre,
                        normalized_recurrent[t, b],
                        inverse_stds[t, b, 0],
                        grad_recurrent[t, b],
                    )
                else:
                    grad_recurrent[t, b] = grad_pre
            matmul_transposed(grad_recurrent[t], weight_columns, grad_recurrent_input)  # (B, R)
            for b in range(batch):
                if t >= lengths[b]:
                    continue
                carried, direct_row, through = grad_h[b], grad_h_direct[b], grad_recurrent_input[b]
                if use_mask:
                    mask_row = hidden_mask[b]
                    for k in range(recurrent_size):
                        carried[k] = through[k] * mask_row[k] + direct_row[k]
                else:
                    for k in range(recurrent_size):
                        carried[k] = through[k] + direct_row[k]
                if use_resets and resets[b, t]:  # the step started from the zero state
                    grad_h[b] = 0
                    grad_c[b] = 0
        grad_h0 += grad_h
        grad_c0 += grad_c

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"numba could not be imported ({error})"
