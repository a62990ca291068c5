"""The whole GRU time loop compiled for the CPU with Numba, forward and backward in one call each.

Per step, the product with the recurrent weights (``compiled_matmul.py``) and the gates fused
around it, with the regularization masks (recurrent-input dropout, zoneout masks drawn up front
or its evaluation-mode expectation), variable lengths and resets. Equations: those of
``GRUCell.recur``, torch's GRU (the tests compare the two):

    a_t = W_hh (m * h_{t-1}) + b_hh                      (m: recurrent-input dropout mask)
    r_t = sigmoid(p_r + a_r),  z_t = sigmoid(p_z + a_z)  (p_t: W_ih x_t + b_ih, projected)
    n_t = tanh(p_n + r_t * a_n)
    s_t = n_t + z_t * (h_{t-1} - n_t)                    (the undropped h_{t-1})
    h_t = s_t + k_t * (h_{t-1} - s_t)                    (k_t: zoneout's keep weights, or 0)

Backward, with g = dL/dh_t (carried from step t + 1 plus the output's gradient):

    ds = (1 - k) g,  dn = (1 - z) ds,  dz = (h_{t-1} - n) ds
    dp_n = dn (1 - n^2),  dp_r = dp_n a_n r (1 - r),  dp_z = dz z (1 - z)
    da = (dp_r, dp_z, dp_n r)               (the gradient of a_t, hence of b_hh and W_hh)
    dh_{t-1} = m * (da W_hh) + z ds + k g

Saved for the backward pass, time-major so that every step reads a contiguous ``(B, .)``
block: ``recurrent_inputs (T, B, H)`` (m * h_{t-1}, for the W_hh gradient), ``previous
(T, B, H)`` (h_{t-1}; the same array as ``recurrent_inputs`` without a dropout mask), ``gates
(T, B, 3H)`` (r, z, n) and ``recurrent_candidates (T, B, H)`` (a_n, bias included). Rows past
their length are not written there, except in ``recurrent_inputs``.
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    from rnnkit.strategies.kernels.compiled_math import COMPILED, INLINE, sigmoid, tanh
    from rnnkit.strategies.kernels.compiled_matmul import matmul_transposed

    @numba.njit(**INLINE)
    def masked_row(values, mask, use_mask, out):  # pragma: no cover - compiled
        """out = values * mask, or values without a mask."""
        if use_mask:
            for k in range(values.shape[0]):
                out[k] = values[k] * mask[k]
        else:
            out[:] = values

    @numba.njit(**INLINE)
    def zoneout_row(candidate, keep, use_zoneout, state, output):  # pragma: no cover
        """state <- candidate + keep * (state - candidate), also written to output."""
        if use_zoneout:
            for k in range(state.shape[0]):
                value = candidate[k] + keep[k] * (state[k] - candidate[k])
                state[k] = value
                output[k] = value
        else:
            for k in range(state.shape[0]):
                state[k] = candidate[k]
                output[k] = candidate[k]

    @numba.njit(**INLINE)
    def carry_row(through, mask, use_mask, direct, carried):  # pragma: no cover - compiled
        """carried = through * mask + direct: the gradient of the previous state."""
        if use_mask:
            for k in range(carried.shape[0]):
                carried[k] = through[k] * mask[k] + direct[k]
        else:
            for k in range(carried.shape[0]):
                carried[k] = through[k] + direct[k]

    @numba.njit(**INLINE)
    def _gates_row(
        row, recurrent, previous, gate, recurrent_candidate, candidate_state
    ):  # pragma: no cover - compiled
        # one row of one step: r, z, n, a_n and s_t
        one = row.dtype.type(1)
        hidden = previous.shape[0]
        for j in range(2 * hidden):
            gate[j] = sigmoid(row[j] + recurrent[j], one)
        for j in range(hidden):
            recurrent_candidate[j] = recurrent[2 * hidden + j]
            candidate = tanh(row[2 * hidden + j] + gate[j] * recurrent_candidate[j], one)
            gate[2 * hidden + j] = candidate
            candidate_state[j] = candidate + gate[hidden + j] * (previous[j] - candidate)

    @numba.njit(**COMPILED)
    def gru_forward(
        projected,
        h0,
        weight_t,
        bias,
        hidden_mask,
        zoneout,
        lengths,
        resets,
        flags,
        outputs,
        h_final,
        recurrent_inputs,
        previous,
        gates,
        recurrent_candidates,
    ):  # pragma: no cover - compiled
        use_mask, use_bias = flags[0], flags[1]
        zoneout_mode, use_resets = flags[2], flags[3]
        batch, steps, width = projected.shape
        weight = np.ascontiguousarray(weight_t.T)  # (3H, H): rows for matmul_transposed
        h = h0.copy()
        recurrent = np.empty((batch, width), dtype=projected.dtype)
        candidate_state = np.empty(h.shape[1], dtype=projected.dtype)
        for t in range(steps):
            inputs_t = recurrent_inputs[t]
            for b in range(batch):
                if use_resets and resets[b, t] and t < lengths[b]:
                    h[b] = 0  # a reset restarts from the zero state
                previous[t, b] = h[b]
                masked_row(h[b], hidden_mask[b] if use_mask else h[b], use_mask, inputs_t[b])
            matmul_transposed(inputs_t, weight, recurrent)  # (B, 3H)
            slot = t if zoneout_mode == 2 else 0
            for b in range(batch):
                if t >= lengths[b]:
                    outputs[b, t, :] = 0
                    continue
                if use_bias:
                    recurrent[b] += bias
                _gates_row(
                    projected[b, t],
                    recurrent[b],
                    previous[t, b],
                    gates[t, b],
                    recurrent_candidates[t, b],
                    candidate_state,
                )
                keep = zoneout[slot, b] if zoneout_mode > 0 else candidate_state  # else unread
                zoneout_row(candidate_state, keep, zoneout_mode > 0, h[b], outputs[b, t])
        h_final[:] = h

    @numba.njit(**INLINE)
    def _gates_backward_row(
        carried,
        grad_output,
        keep,
        use_zoneout,
        gate,
        previous,
        recurrent_candidate,
        grad_pre,
        grad_recurrent,
        direct,
    ):  # pragma: no cover - compiled
        # the gradients of p_t (grad_pre) and a_t (grad_recurrent) of one row of one step, and
        # of h_{t-1} outside W_hh (direct)
        one = grad_pre.dtype.type(1)
        hidden = previous.shape[0]
        for j in range(hidden):
            total = carried[j] + grad_output[j]
            kept = keep[j] * total if use_zoneout else total * 0
            grad_state = total - kept
            reset, update, candidate = gate[j], gate[hidden + j], gate[2 * hidden + j]
            grad_candidate_pre = grad_state * (one - update) * (one - candidate * candidate)
            grad_update_pre = grad_state * (previous[j] - candidate) * update * (one - update)
            grad_reset_pre = grad_candidate_pre * recurrent_candidate[j] * reset * (one - reset)
            grad_pre[j] = grad_recurrent[j] = grad_reset_pre
            grad_pre[hidden + j] = grad_recurrent[hidden + j] = grad_update_pre
            grad_pre[2 * hidden + j] = grad_candidate_pre
            grad_recurrent[2 * hidden + j] = grad_candidate_pre * reset
            direct[j] = kept + update * grad_state

    @numba.njit(**COMPILED)
    def gru_backward(
        grad_outputs,
        grad_h_final,
        weight,
        hidden_mask,
        zoneout,
        lengths,
        resets,
        flags,
        previous,
        gates,
        recurrent_candidates,
        grad_projected,
        grad_recurrent,
        grad_h0,
    ):  # pragma: no cover - compiled
        use_mask, zoneout_mode, use_resets = flags[0], flags[2], flags[3]
        batch, steps, _ = grad_projected.shape
        weight_columns = np.ascontiguousarray(weight.T)  # (H, 3H)
        grad_h = grad_h_final.copy()
        grad_h0[:] = 0  # the first segment's gradient is added at the end
        grad_h_direct = np.zeros_like(grad_h)  # the paths from h_t to h_{t-1} outside W_hh
        grad_recurrent_input = np.empty_like(grad_h)
        for index in range(steps):
            t = steps - 1 - index
            slot = t if zoneout_mode == 2 else 0
            for b in range(batch):
                if t >= lengths[b]:
                    grad_projected[b, t, :] = 0
                    grad_recurrent[t, b, :] = 0
                    continue
                keep = zoneout[slot, b] if zoneout_mode > 0 else grad_h[b]  # else unread
                _gates_backward_row(
                    grad_h[b],
                    grad_outputs[b, t],
                    keep,
                    zoneout_mode > 0,
                    gates[t, b],
                    previous[t, b],
                    recurrent_candidates[t, b],
                    grad_projected[b, t],
                    grad_recurrent[t, b],
                    grad_h_direct[b],
                )
            matmul_transposed(grad_recurrent[t], weight_columns, grad_recurrent_input)  # (B, H)
            for b in range(batch):
                if t >= lengths[b]:  # an inactive row carries its gradient unchanged
                    continue
                mask_row = hidden_mask[b] if use_mask else grad_h[b]
                carry_row(grad_recurrent_input[b], mask_row, use_mask, grad_h_direct[b], grad_h[b])
                if use_resets and resets[b, t]:  # the step started from the zero state
                    grad_h[b] = 0
        grad_h0 += grad_h

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"numba could not be imported ({error})"
