"""The whole sLSTM time loop compiled for the CPU with Numba, forward and backward in one call each.

Equations: those of ``SLSTMCell.recur`` (``rnnkit/cells/slstm.py``), per unit j of a row::

    i~, f~, z~, o~ = projected + R h_{t-1}      (R block-diagonal: one product per head)
    l   = f~ (exponential forget gate) or logsigmoid(f~) (sigmoid forget gate)
    a   = l + m_{t-1};  w = (a >= i~) and (n_{t-1} != 0);  m_t = a if w else i~
    i'  = exp(i~ - m_t);  f' = exp(min(a - m_t, 0));  z = tanh(z~);  o = sigmoid(o~)
    c_t = f' c_{t-1} + i' z;  n_t = f' n_{t-1} + i';  h_t = o c_t / n_t

The backward pass takes the gradients torch autograd gives ``recur``: the max through the
selected side of the ``where`` (``w``), the min's clamp passing the gradient where ``a - m_t <=
0`` (ties included), m not detached. Per step the recurrent product is one
``matmul_transposed`` per head on contiguous head-major blocks ``(B, d) x (d, 4d)``; the input
projection runs outside, and the gradient of the recurrent weights is one batched product after
the loop (``fused_slstm.py``).

Saved for the backward pass, time-major so that every step reads contiguous blocks:
``recurrent_inputs (k, T, B, d)`` (each head's h_{t-1}), ``gates (T, B, 4H)`` (i', f', z, o),
``slopes (T, B, 3H)`` (f' where the clamp passes else 0, w as 0 or 1, dl / df~),
``cells_before``, ``normalizers_before``, ``cells``, ``normalizers`` (each ``(T, B, H)``:
c_{t-1}, n_{t-1}, c_t, n_t).
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    from rnnkit.strategies.kernels.compiled_math import (
        COMPILED,
        INLINE,
        copy_row,
        exp,
        sigmoid,
        tanh,
    )
    from rnnkit.strategies.kernels.compiled_matmul import matmul_transposed

    @numba.njit(**INLINE)
    def _gather_row(projected, recurrent, b, pre):  # pragma: no cover - compiled
        # pre (4H) gate-major = projected (4H) + the heads' products recurrent (k, B, 4d)
        heads, head_size = recurrent.shape[0], recurrent.shape[2] // 4
        hidden = heads * head_size
        for k in range(heads):
            head_row = recurrent[k, b]
            for g in range(4):
                start = g * hidden + k * head_size
                for a in range(head_size):
                    pre[start + a] = projected[start + a] + head_row[g * head_size + a]

    @numba.njit(**INLINE)
    def _forget_row(pre, slope, sigmoid_forget):  # pragma: no cover - compiled
        # l = f~ or logsigmoid(f~) into pre's forget block; dl / df~ into slope
        one = pre.dtype.type(1)
        hidden = slope.shape[0]
        if sigmoid_forget:
            for j in range(hidden):
                value = pre[hidden + j]
                slope[j] = sigmoid(-value, one)
                pre[hidden + j] = min(value, 0) - np.log1p(exp(-abs(value)))
        else:
            slope[:] = one

    @numba.njit(**INLINE)
    def _step_row(
        pre, h, c, n, m, gate, slope, cell, normalizer, input_exponent, forget_exponent
    ):  # pragma: no cover - compiled
        # one row of one step (module docstring); the new state into h, c, n, m. Short loops
        # over few arrays each: one loop reading and writing all of them did not vectorize
        # (6.9 us per row of 256 units against 2.1 us split; input_exponent and
        # forget_exponent are (H) scratch rows)
        one = pre.dtype.type(1)
        zero = pre.dtype.type(0)
        hidden = h.shape[0]
        for j in range(hidden):
            input_pre, forget_total = pre[j], pre[hidden + j] + m[j]
            wins = (forget_total >= input_pre) & (n[j] != zero)
            m_new = forget_total if wins else input_pre
            input_exponent[j] = input_pre - m_new
            forget_exponent[j] = forget_total - m_new
            slope[hidden + j] = one if wins else zero
            m[j] = m_new
        for j in range(hidden):
            gate[j] = exp(input_exponent[j])
        for j in range(hidden):
            exponent = forget_exponent[j]
            forget_gate = exp(min(exponent, zero))
            gate[hidden + j] = forget_gate
            slope[j] = forget_gate if exponent <= zero else zero
        for j in range(hidden):
            gate[2 * hidden + j] = tanh(pre[2 * hidden + j], one)
        for j in range(hidden):
            gate[3 * hidden + j] = sigmoid(pre[3 * hidden + j], one)
        for j in range(hidden):
            cell[j] = gate[hidden + j] * c[j] + gate[j] * gate[2 * hidden + j]
        for j in range(hidden):
            normalizer[j] = gate[hidden + j] * n[j] + gate[j]
        for j in range(hidden):
            h[j] = gate[3 * hidden + j] * cell[j] / normalizer[j]
        copy_row(cell, c)
        copy_row(normalizer, n)

    @numba.njit(**COMPILED)
    def slstm_forward(
        projected,
        h0,
        c0,
        n0,
        m0,
        weight_t,
        lengths,
        resets,
        flags,
        outputs,
        h_final,
        c_final,
        n_final,
        m_final,
        recurrent_inputs,
        gates,
        slopes,
        cells_before,
        normalizers_before,
        cells,
        normalizers,
    ):  # pragma: no cover - compiled
        use_resets, sigmoid_forget = flags[0], flags[1]
        batch, steps, width = projected.shape
        heads, head_size = weight_t.shape[0], weight_t.shape[1]
        hidden = width // 4
        # (heads, 4d, d): rows for matmul_transposed
        weight = np.ascontiguousarray(np.transpose(weight_t, (0, 2, 1)))
        h, c, n, m = h0.copy(), c0.copy(), n0.copy(), m0.copy()
        recurrent = np.empty((heads, batch, 4 * head_size), dtype=projected.dtype)
        pre = np.empty(width, dtype=projected.dtype)
        input_exponent = np.empty(hidden, dtype=projected.dtype)
        forget_exponent = np.empty(hidden, dtype=projected.dtype)
        for t in range(steps):
            for b in range(batch):
                if use_resets and resets[b, t] and t < lengths[b]:
                    h[b], c[b], n[b], m[b] = 0, 0, 0, 0  # a reset restarts from the zero state
                for k in range(heads):
                    copy_row(h[b, k * head_size : (k + 1) * head_size], recurrent_inputs[k, t, b])
            for k in range(heads):
                matmul_transposed(recurrent_inputs[k, t], weight[k], recurrent[k])  # (B, 4d)
            for b in range(batch):
                if t >= lengths[b]:
                    outputs[b, t, :] = 0
                    continue
                copy_row(c[b], cells_before[t, b])
                copy_row(n[b], normalizers_before[t, b])
                _gather_row(projected[b, t], recurrent, b, pre)
                _forget_row(pre, slopes[t, b, 2 * hidden :], sigmoid_forget)
                _step_row(
                    pre,
                    h[b],
                    c[b],
                    n[b],
                    m[b],
                    gates[t, b],
                    slopes[t, b],
                    cells[t, b],
                    normalizers[t, b],
                    input_exponent,
                    forget_exponent,
                )
                copy_row(h[b], outputs[b, t])
        h_final[:], c_final[:], n_final[:], m_final[:] = h, c, n, m

    @numba.njit(**INLINE)
    def _backward_row(
        grad_hidden,
        grad_c,
        grad_n,
        grad_m,
        gate,
        slope,
        previous_c,
        previous_n,
        cell,
        normalizer,
        grad_pre,
        scratch,
    ):  # pragma: no cover - compiled
        # d pre-activations (grad_pre, 4H) of one row of one step from d h_t (grad_hidden) and
        # the carried d (c, n, m)_t, which become d (c, n, m)_{t-1} in place. One short loop
        # per quantity, each writing one array (as in _step_row, so that they vectorize);
        # scratch (5, H) holds d c_t, d n_t, d i~ through the input gate, d of the forget
        # exponent and d m_t
        one = grad_pre.dtype.type(1)
        hidden = grad_c.shape[0]
        grad_cell, grad_normalizer = scratch[0], scratch[1]
        grad_input_pre, grad_exponent, grad_m_new = scratch[2], scratch[3], scratch[4]
        for j in range(hidden):
            grad_cell[j] = grad_c[j] + grad_hidden[j] * gate[3 * hidden + j] / normalizer[j]
        for j in range(hidden):
            ratio = cell[j] / normalizer[j]
            scaled = grad_hidden[j] * gate[3 * hidden + j] / normalizer[j]
            grad_normalizer[j] = grad_n[j] - scaled * ratio
        for j in range(hidden):
            grad_input_gate = grad_cell[j] * gate[2 * hidden + j] + grad_normalizer[j]
            grad_input_pre[j] = grad_input_gate * gate[j]
        for j in range(hidden):
            grad_forget_gate = grad_cell[j] * previous_c[j] + grad_normalizer[j] * previous_n[j]
            grad_exponent[j] = grad_forget_gate * slope[j]
        for j in range(hidden):
            grad_m_new[j] = grad_m[j] - grad_input_pre[j] - grad_exponent[j]
        for j in range(hidden):  # the max's gradient: to i~ where the forget side lost
            grad_pre[j] = grad_input_pre[j] + (one - slope[hidden + j]) * grad_m_new[j]
        for j in range(hidden):  # d (f~ + m_{t-1}), also d m_{t-1}
            grad_m[j] = grad_exponent[j] + slope[hidden + j] * grad_m_new[j]
        for j in range(hidden):
            grad_pre[hidden + j] = grad_m[j] * slope[2 * hidden + j]
        for j in range(hidden):
            candidate = gate[2 * hidden + j]
            grad_pre[2 * hidden + j] = grad_cell[j] * gate[j] * (one - candidate * candidate)
        for j in range(hidden):
            output_gate = gate[3 * hidden + j]
            ratio = cell[j] / normalizer[j]
            grad_pre[3 * hidden + j] = grad_hidden[j] * ratio * output_gate * (one - output_gate)
        for j in range(hidden):
            grad_c[j] = grad_cell[j] * gate[hidden + j]
        for j in range(hidden):
            grad_n[j] = grad_normalizer[j] * gate[hidden + j]

    @numba.njit(**INLINE)
    def _scatter_row(grad_pre, grad_recurrent, t, b, grad_projected_row):  # pragma: no cover
        # grad_pre (4H) gate-major into grad_projected's row and each head's (k, T, B, 4d) row
        heads, head_size = grad_recurrent.shape[0], grad_recurrent.shape[3] // 4
        hidden = heads * head_size
        copy_row(grad_pre, grad_projected_row)
        for k in range(heads):
            head_row = grad_recurrent[k, t, b]
            for g in range(4):
                start = g * hidden + k * head_size
                for a in range(head_size):
                    head_row[g * head_size + a] = grad_pre[start + a]

    @numba.njit(**COMPILED)
    def slstm_backward(
        grad_outputs,
        grad_h_final,
        grad_c_final,
        grad_n_final,
        grad_m_final,
        weight,
        lengths,
        resets,
        flags,
        gates,
        slopes,
        cells_before,
        normalizers_before,
        cells,
        normalizers,
        grad_projected,
        grad_recurrent,
        grad_h0,
        grad_c0,
        grad_n0,
        grad_m0,
    ):  # pragma: no cover - compiled
        use_resets = flags[0]
        batch, steps, width = grad_projected.shape
        heads, head_size = weight.shape[0], weight.shape[2]
        dtype = grad_projected.dtype
        weight_columns = np.ascontiguousarray(np.transpose(weight, (0, 2, 1)))  # (heads, d, 4d)
        grad_h, grad_c = grad_h_final.copy(), grad_c_final.copy()
        grad_n, grad_m = grad_n_final.copy(), grad_m_final.copy()
        for grad_initial in (grad_h0, grad_c0, grad_n0, grad_m0):
            grad_initial[:] = 0
        grad_hidden = np.empty(width // 4, dtype=dtype)
        grad_pre = np.empty(width, dtype=dtype)
        scratch = np.empty((5, width // 4), dtype=dtype)  # _backward_row's
        through = np.empty((heads, batch, head_size), dtype=dtype)
        for index in range(steps):
            t = steps - 1 - index
            for b in range(batch):
                if t >= lengths[b]:
                    grad_projected[b, t, :] = 0
                    for k in range(heads):
                        grad_recurrent[k, t, b, :] = 0
                    continue
                carried, output_row = grad_h[b], grad_outputs[b, t]
                for j in range(grad_hidden.shape[0]):
                    grad_hidden[j] = carried[j] + output_row[j]
                _backward_row(
                    grad_hidden,
                    grad_c[b],
                    grad_n[b],
                    grad_m[b],
                    gates[t, b],
                    slopes[t, b],
                    cells_before[t, b],
                    normalizers_before[t, b],
                    cells[t, b],
                    normalizers[t, b],
                    grad_pre,
                    scratch,
                )
                _scatter_row(grad_pre, grad_recurrent, t, b, grad_projected[b, t])
            for k in range(heads):
                matmul_transposed(grad_recurrent[k, t], weight_columns[k], through[k])  # (B, d)
            for b in range(batch):
                if t >= lengths[b]:
                    continue
                for k in range(heads):
                    grad_h[b, k * head_size : (k + 1) * head_size] = through[k, b]
                if use_resets and resets[b, t]:  # the step started from the zero state
                    grad_h[b], grad_c[b], grad_n[b], grad_m[b] = 0, 0, 0, 0
        grad_h0 += grad_h
        grad_c0 += grad_c
        grad_n0 += grad_n
        grad_m0 += grad_m

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"numba could not be imported ({error})"
