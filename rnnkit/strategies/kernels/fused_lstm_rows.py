"""One row of one step of the fused LSTM loop (``fused_lstm_cpu.py``), compiled with Numba.

Forward: the pre-activations, gates, cell and ``o * tanh(.)`` of a row (``gates_row``; zoneout
is the GRU kernel's ``zoneout_row``). Backward: the gradients of the pre-activations and of
``c_{t-1}`` (``gates_backward_row``) and the row's share of the peephole and layer-norm gain
gradients (``accumulate_parameter_sums``). Layer norm without its gain, forward and backward.
Equations: those of ``LSTMCell.recur``. Import only where Numba imports.
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    from rnnkit.strategies.kernels.compiled_math import INLINE, sigmoid, tanh

    @numba.njit(**INLINE)
    def normalize_row(values, normalized, eps):  # pragma: no cover - compiled
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
    def normalize_backward(grad_normalized, normalized, inverse_std, out):  # pragma: no cover
        # out = d values of layer norm (without gain) from d normalized
        width = normalized.shape[0]
        total = grad_normalized.dtype.type(0)
        projection = grad_normalized.dtype.type(0)
        for j in range(width):  # one pass, no temporary array (``(a * b).sum()`` allocates)
            total += grad_normalized[j]
            projection += grad_normalized[j] * normalized[j]
        mean_grad = total / width
        mean_projection = projection / width
        for j in range(width):
            out[j] = inverse_std * (
                grad_normalized[j] - mean_grad - normalized[j] * mean_projection
            )

    @numba.njit(**INLINE)
    def shifted_row(normalized, gain, shift, out):  # pragma: no cover - compiled
        # out = normalized * gain + shift: the layer norm's affine part
        for j in range(out.shape[0]):
            out[j] = normalized[j] * gain[j] + shift[j]

    @numba.njit(**INLINE)
    def gates_row(
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
            inverse_std_recurrent = normalize_row(recurrent, normalized, eps[0])
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
            gate[2 * hidden + j] = tanh(pre[2 * hidden + j], one)
        # a loop of its own: writing the gates it reads would keep LLVM from vectorizing it
        for j in range(hidden):
            cell[j] = gate[hidden + j] * previous[j] + gate[j] * gate[2 * hidden + j]
        if use_norm:
            inverse_std_cell = normalize_row(cell, cell_normalized, eps[1])
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
    def gates_backward_row(
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
            normalize_backward(grad_normalized, cell_normalized, inverse_std_cell, grad_cell_norm)
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
    def accumulate_parameter_sums(
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

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"numba could not be imported ({error})"
