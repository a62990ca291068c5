"""The whole Elman or Jordan time loop compiled for the CPU with Numba, forward and backward in
one call each.

Per step, the product with the recurrent weights (``compiled_matmul.py``) and the nonlinearity
fused around it, with the regularization masks (recurrent-input dropout, zoneout masks drawn up
front or its evaluation-mode expectation), variable lengths and resets. A Jordan network is an
Elman hidden layer whose output layer is fed back (``use_output``). Equations: those of
``ElmanCell.recur`` and ``JordanCell.recur`` (the tests compare them):

    u_t = act(p_t + W_hh (m * s_{t-1}))     (p_t projected; m the dropout mask; act tanh or relu)
    c_t = u_t                               (Elman)
    c_t = tanh(W_ho u_t + b_ho)             (Jordan, act = tanh)
    s_t = c_t + k_t * (s_{t-1} - c_t)       (k_t: zoneout's keep weights, or 0)

Backward, with g = dL/ds_t (carried from step t + 1 plus the output's gradient):

    dc = (1 - k) g
    do = dc (1 - c^2),  du = do W_ho       (Jordan; Elman: du = dc)
    da = du act'(u)                         (the gradient of p_t and of W_hh's product)
    ds_{t-1} = m * (da W_hh) + k g

Saved for the backward pass, time-major so that every step reads a contiguous ``(B, .)``
block: ``recurrent_inputs (T, B, S)`` (m * s_{t-1}, for the W_hh gradient), ``hiddens
(T, B, H)`` (u_t; zero past a row's length) and, for Jordan, ``candidates (T, B, O)`` (c_t).
"""

from __future__ import annotations

import numpy as np

# the ``nonlinearity`` codes of the kernels
TANH, RELU = 0, 1

try:
    import numba

    from rnnkit.strategies.kernels.compiled_math import COMPILED, INLINE, tanh
    from rnnkit.strategies.kernels.compiled_matmul import matmul_transposed

    # the row helpers the GRU kernel defines (masked input, zoneout, carried gradient)
    from rnnkit.strategies.kernels.fused_gru_cpu import (
        carry_row,
        masked_row,
        zoneout_row,
    )

    @numba.njit(**INLINE)
    def _activation_row(row, recurrent, nonlinearity, out):  # pragma: no cover - compiled
        # out = act(row + recurrent)
        one, zero = row.dtype.type(1), row.dtype.type(0)
        if nonlinearity == RELU:
            for j in range(out.shape[0]):
                out[j] = max(row[j] + recurrent[j], zero)
        else:
            for j in range(out.shape[0]):
                out[j] = tanh(row[j] + recurrent[j], one)

    @numba.njit(**INLINE)
    def _output_row(pre, bias, use_bias):  # pragma: no cover - compiled
        # pre <- tanh(pre + bias), in place
        one = pre.dtype.type(1)
        if use_bias:
            for k in range(pre.shape[0]):
                pre[k] = tanh(pre[k] + bias[k], one)
        else:
            for k in range(pre.shape[0]):
                pre[k] = tanh(pre[k], one)

    @numba.njit(**COMPILED)
    def elman_forward(
        projected,
        state0,
        weight_t,
        output_weight_t,
        output_bias,
        hidden_mask,
        zoneout,
        lengths,
        resets,
        flags,
        outputs,
        state_final,
        recurrent_inputs,
        hiddens,
        candidates,
    ):  # pragma: no cover - compiled
        use_mask, use_output, use_output_bias = flags[0], flags[1], flags[2]
        nonlinearity, zoneout_mode, use_resets = flags[3], flags[4], flags[5]
        batch, steps, hidden = projected.shape
        weight = np.ascontiguousarray(weight_t.T)  # (H, S): rows for matmul_transposed
        output_weight = np.ascontiguousarray(output_weight_t.T)
        state = state0.copy()
        recurrent = np.empty((batch, hidden), dtype=projected.dtype)
        for t in range(steps):
            inputs_t, hiddens_t = recurrent_inputs[t], hiddens[t]
            for b in range(batch):
                if use_resets and resets[b, t] and t < lengths[b]:
                    state[b] = 0  # a reset restarts from the zero state
                mask_row = hidden_mask[b] if use_mask else state[b]
                masked_row(state[b], mask_row, use_mask, inputs_t[b])
            matmul_transposed(inputs_t, weight, recurrent)  # (B, H)
            for b in range(batch):
                if t >= lengths[b]:
                    hiddens_t[b, :] = 0  # read by the W_ho gradient
                    continue
                _activation_row(projected[b, t], recurrent[b], nonlinearity, hiddens_t[b])
            new_state = hiddens_t
            if use_output:
                new_state = candidates[t]
                matmul_transposed(hiddens_t, output_weight, new_state)  # (B, O)
                for b in range(batch):
                    _output_row(new_state[b], output_bias, use_output_bias)
            slot = t if zoneout_mode == 2 else 0
            for b in range(batch):
                if t >= lengths[b]:
                    outputs[b, t, :] = 0
                    continue
                keep = zoneout[slot, b] if zoneout_mode > 0 else state[b]  # else unread
                zoneout_row(new_state[b], keep, zoneout_mode > 0, state[b], outputs[b, t])
        state_final[:] = state

    @numba.njit(**INLINE)
    def _candidate_backward_row(
        carried, grad_output, keep, use_zoneout, grad_candidate, direct
    ):  # pragma: no cover - compiled
        # zoneout's split of g = carried + the output's gradient: (1 - k) g to c_t, k g direct
        for k in range(carried.shape[0]):
            total = carried[k] + grad_output[k]
            kept = keep[k] * total if use_zoneout else total * 0
            grad_candidate[k] = total - kept
            direct[k] = kept

    @numba.njit(**INLINE)
    def _activation_backward_row(grad_hidden, hidden_row, nonlinearity, out):  # pragma: no cover
        # out = grad_hidden * act'(u), act' read off u = act(.)
        one, zero = out.dtype.type(1), out.dtype.type(0)
        if nonlinearity == RELU:
            for j in range(out.shape[0]):
                out[j] = grad_hidden[j] if hidden_row[j] > zero else zero
        else:
            for j in range(out.shape[0]):
                out[j] = grad_hidden[j] * (one - hidden_row[j] * hidden_row[j])

    @numba.njit(**COMPILED)
    def elman_backward(
        grad_outputs,
        grad_state_final,
        weight,
        output_weight,
        hidden_mask,
        zoneout,
        lengths,
        resets,
        flags,
        hiddens,
        candidates,
        grad_projected,
        grad_recurrent,
        grad_output_pre,
        grad_state0,
    ):  # pragma: no cover - compiled
        use_mask, use_output = flags[0], flags[1]
        nonlinearity, zoneout_mode, use_resets = flags[3], flags[4], flags[5]
        batch, steps, hidden = grad_projected.shape
        one = grad_projected.dtype.type(1)
        weight_columns = np.ascontiguousarray(weight.T)  # (S, H)
        output_weight_columns = np.ascontiguousarray(output_weight.T)
        grad_state = grad_state_final.copy()
        grad_state0[:] = 0  # the first segment's gradient is added at the end
        grad_state_direct = np.zeros_like(grad_state)  # zoneout's path from s_t to s_{t-1}
        grad_candidate = np.zeros_like(grad_state)
        grad_hidden = grad_candidate  # Elman: c_t is u_t
        if use_output:
            grad_hidden = np.empty((batch, hidden), dtype=grad_state.dtype)
        grad_recurrent_input = np.empty_like(grad_state)
        for index in range(steps):
            t = steps - 1 - index
            slot = t if zoneout_mode == 2 else 0
            for b in range(batch):
                if t >= lengths[b]:
                    grad_candidate[b] = 0  # makes this row's gradients at step t zero
                    continue
                keep = zoneout[slot, b] if zoneout_mode > 0 else grad_state[b]  # else unread
                _candidate_backward_row(
                    grad_state[b],
                    grad_outputs[b, t],
                    keep,
                    zoneout_mode > 0,
                    grad_candidate[b],
                    grad_state_direct[b],
                )
            if use_output:
                grad_output_t = grad_output_pre[t]
                for b in range(batch):
                    for k in range(grad_output_t.shape[1]):
                        candidate = candidates[t, b, k]
                        grad_output_t[b, k] = grad_candidate[b, k] * (one - candidate * candidate)
                matmul_transposed(grad_output_t, output_weight_columns, grad_hidden)  # (B, H)
            for b in range(batch):
                _activation_backward_row(
                    grad_hidden[b], hiddens[t, b], nonlinearity, grad_recurrent[t, b]
                )
                grad_projected[b, t] = grad_recurrent[t, b]
            matmul_transposed(grad_recurrent[t], weight_columns, grad_recurrent_input)  # (B, S)
            for b in range(batch):
                if t >= lengths[b]:  # an inactive row carries its gradient unchanged
                    continue
                mask_row = hidden_mask[b] if use_mask else grad_state[b]
                carry_row(
                    grad_recurrent_input[b], mask_row, use_mask, grad_state_direct[b], grad_state[b]
                )
                if use_resets and resets[b, t]:  # the step started from the zero state
                    grad_state[b] = 0
        grad_state0 += grad_state

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"numba could not be imported ({error})"
