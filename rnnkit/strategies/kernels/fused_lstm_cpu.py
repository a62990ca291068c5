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

import numpy as np

try:
    import numba

    from rnnkit.strategies.kernels.compiled_math import COMPILED, copy_row
    from rnnkit.strategies.kernels.compiled_matmul import matmul_transposed
    from rnnkit.strategies.kernels.fused_gru_cpu import zoneout_row
    from rnnkit.strategies.kernels.fused_lstm_rows import (
        accumulate_parameter_sums,
        gates_backward_row,
        gates_row,
        normalize_backward,
        normalize_row,
        shifted_row,
    )

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
        norm_input,
        input_shift,
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
        normalized_inputs,
    ):  # pragma: no cover - compiled
        use_mask, use_peephole, use_norm, use_projection, zoneout_mode, use_resets = (
            flags[0],
            flags[1],
            flags[2],
            flags[3],
            flags[4],
            flags[5],
        )
        use_input_norm = flags[6]
        batch, steps, width = projected.shape
        h, c = h0.copy(), c0.copy()
        weight = np.ascontiguousarray(weight_t.T)  # (4H, R): rows for matmul_transposed
        projection = np.ascontiguousarray(projection_t.T)
        recurrent = np.empty((batch, width), dtype=projected.dtype)
        projected_hidden = np.empty(h.shape, dtype=projected.dtype)
        pre = np.empty(width, dtype=projected.dtype)
        input_row = np.empty(width, dtype=projected.dtype)  # LN(W_ih x_t) g + b, input_norm
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
                    copy_row(h_row, inputs_row)
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
                    if use_input_norm:
                        normalized_inputs[t, b, :] = 0
                    continue
                copy_row(c[b], cells_before[t, b])
                row = projected[b, t]
                if use_input_norm:  # the input projection's layer norm, on the row in cache
                    inverse_stds[t, b, 2] = normalize_row(
                        projected[b, t], normalized_inputs[t, b], eps[2]
                    )
                    shifted_row(normalized_inputs[t, b], norm_input, input_shift, input_row)
                    row = input_row
                stds = gates_row(
                    row,
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
                zoneout_row(new_h[b], zoneout_h[slot, b], zoneout_mode > 0, h[b], outputs[b, t])
                zoneout_row(cells[t, b], zoneout_c[slot, b], zoneout_mode > 0, c[b], scratch)
        h_final[:] = h
        c_final[:] = c

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
        norm_input,
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
        normalized_inputs,
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
        use_input_norm = flags[6]
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
        scaled_pre = np.empty(width, dtype=dtype)  # layer norm: d normalized pre-activations
        step_grad = np.empty(width, dtype=dtype)  # d pre-activations, with input_norm
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
                for b in range(batch):
                    copy_row(grad_hidden_outputs[t, b], grad_hidden[b])
            for b in range(batch):
                if t >= lengths[b]:
                    grad_projected[b, t, :] = 0
                    grad_recurrent[t, b, :] = 0
                    grad_cell_outputs[t, b, :] = 0
                    continue
                # d pre-activations: in place into grad_projected (no copy of the row), or
                # with the input layer norm into a scratch row that its backward reads
                grad_pre = step_grad if use_input_norm else grad_projected[b, t]
                gates_backward_row(
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
                if use_peephole or use_norm:
                    accumulate_parameter_sums(
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
                        scaled_pre[j] = grad_pre[j] * norm_hidden[j]
                    normalize_backward(
                        scaled_pre,
                        normalized_recurrent[t, b],
                        inverse_stds[t, b, 0],
                        grad_recurrent[t, b],
                    )
                else:
                    copy_row(grad_pre, grad_recurrent[t, b])
                if use_input_norm:  # sums rows 6, 7: the input gain and shift
                    normalized_input = normalized_inputs[t, b]
                    for j in range(width):
                        parameter_sums[6, j] += grad_pre[j] * normalized_input[j]
                        parameter_sums[7, j] += grad_pre[j]
                    for j in range(width):
                        scaled_pre[j] = grad_pre[j] * norm_input[j]
                    normalize_backward(
                        scaled_pre, normalized_input, inverse_stds[t, b, 2], grad_projected[b, t]
                    )
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
