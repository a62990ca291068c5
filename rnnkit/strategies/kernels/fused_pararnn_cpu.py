"""The whole ParaGRU and ParaLSTM time loops compiled for the CPU with Numba, forward and backward.

The recurrence is diagonal (vectors ``a``), or block-diagonal with ParaGRU's heads (one small
dense ``d x d`` block per head), so a step is pointwise math over one row: the loops run row by
row, each row's steps in order, with variable lengths (a row stops at its length) and resets
(before a flagged step the row restarts from the zero state). Equations: those of
``rnnkit.cells.pararnn`` (the tests compare the two). ParaGRU, with ``p_t = W x_t + b``:

    z = sigmoid(p_z + A_z h),  r = sigmoid(p_r + A_r h),  n = tanh(p_n + A_n (r h))
    h_t = h + z (n - h)                                             (h: h_{t-1})

backward, with g = dL/dh_t:

    dp_n = g z (1 - n^2),  dp_z = g (n - h) z (1 - z)
    q = A_n^T dp_n,  dp_r = q h r (1 - r)
    dh = g (1 - z) + q r + A_z^T dp_z + A_r^T dp_r
    dA_z += dp_z h^T,  dA_r += dp_r h^T,  dA_n += dp_n (r h)^T      (diagonal: elementwise)

ParaLSTM (gate order f, o, c~; weights a_f, a_o, a_c and peepholes p_f, p_o):

    f = sigmoid(p_f + a_f h + w_f c),  u = tanh(p_c + a_c h)        (u: c~, w: peepholes)
    c_t = u + f (c - u),  o = sigmoid(p_o + a_o h + w_o c_t),  h_t = o tanh(c_t)

backward, with g_h = dL/dh_t, g_c = dL/dc_t carried from the next step:

    dp_o = g_h tanh(c_t) o (1 - o)
    e = g_c + g_h o (1 - tanh(c_t)^2) + dp_o w_o                     (all of dL/dc_t)
    dp_f = e (c - u) f (1 - f),  dp_c = e (1 - f) (1 - u^2)
    dc = e f + dp_f w_f,  dh = dp_f a_f + dp_o a_o + dp_c a_c

The weight gradients are accumulated per row inside the backward loop (``(B, ...)``, summed by
the caller). Saved for the backward pass, batch-major as the loops run: the previous states
``(B, T, H)`` and the gates ``(B, T, 3H)`` (and ParaLSTM's ``c_t``); rows past their length are
not written there.
"""

from __future__ import annotations

import numpy as np

try:
    import numba

    from rnnkit.strategies.kernels.compiled_math import COMPILED, INLINE, sigmoid, tanh

    @numba.njit(**INLINE)
    def recurrent_product(diagonal, blocks, use_heads, source, out):  # pragma: no cover
        """out = a * source (diagonal ``(H,)``) or A source per head (``blocks (k, d, d)``)."""
        if use_heads:
            size = blocks.shape[1]
            for g in range(blocks.shape[0]):
                part = source[g * size : (g + 1) * size]
                for i in range(size):
                    row = blocks[g, i]
                    total = row[0] * part[0]
                    for e in range(1, size):
                        total += row[e] * part[e]
                    out[g * size + i] = total
        else:
            for j in range(out.shape[0]):
                out[j] = diagonal[j] * source[j]

    @numba.njit(**INLINE)
    def add_transposed_product(diagonal, blocks, use_heads, grad, out):  # pragma: no cover
        """out += a * grad (diagonal) or A^T grad per head."""
        if use_heads:
            size = blocks.shape[1]
            for g in range(blocks.shape[0]):
                part = out[g * size : (g + 1) * size]
                for i in range(size):
                    value = grad[g * size + i]
                    row = blocks[g, i]
                    for e in range(size):
                        part[e] += row[e] * value
        else:
            for j in range(out.shape[0]):
                out[j] += diagonal[j] * grad[j]

    @numba.njit(**INLINE)
    def add_outer(grad, source, use_heads, diagonal, blocks):  # pragma: no cover - compiled
        """diagonal += grad * source, or per head blocks += grad source^T."""
        if use_heads:
            size = blocks.shape[1]
            for g in range(blocks.shape[0]):
                part = source[g * size : (g + 1) * size]
                for i in range(size):
                    value = grad[g * size + i]
                    row = blocks[g, i]
                    for e in range(size):
                        row[e] += value * part[e]
        else:
            for j in range(diagonal.shape[0]):
                diagonal[j] += grad[j] * source[j]

    @numba.njit(**INLINE)
    def _paragru_step(
        row, previous, diagonal, blocks, use_heads, gate, scratch, state
    ):  # pragma: no cover - compiled
        # one step of one row: gate = (z, r, n), state = h_t; scratch (3, H)
        one = row.dtype.type(1)
        hidden = previous.shape[0]
        mixed_update, mixed_reset, product = scratch[0], scratch[1], scratch[2]
        recurrent_product(diagonal[0], blocks[0], use_heads, previous, mixed_update)
        recurrent_product(diagonal[1], blocks[1], use_heads, previous, mixed_reset)
        for j in range(hidden):
            gate[j] = sigmoid(row[j] + mixed_update[j], one)
            reset = sigmoid(row[hidden + j] + mixed_reset[j], one)
            gate[hidden + j] = reset
            product[j] = reset * previous[j]
        mixed = scratch[0]  # A_n (r h), in the row A_z h no longer needs
        recurrent_product(diagonal[2], blocks[2], use_heads, product, mixed)
        for j in range(hidden):
            candidate = tanh(row[2 * hidden + j] + mixed[j], one)
            gate[2 * hidden + j] = candidate
            state[j] = previous[j] + gate[j] * (candidate - previous[j])

    @numba.njit(**COMPILED)
    def paragru_forward(
        projected, h0, diagonal, blocks, lengths, resets, flags, outputs, h_final, previous, gates
    ):  # pragma: no cover - compiled
        use_heads, use_resets = flags[0], flags[1]
        batch, steps, _ = projected.shape
        hidden = h0.shape[1]
        scratch = np.empty((3, hidden), dtype=projected.dtype)
        h_final[:] = h0
        for b in range(batch):
            h = h_final[b]
            for t in range(steps):
                if t >= lengths[b]:
                    outputs[b, t, :] = 0
                    continue
                if use_resets and resets[b, t]:
                    h[:] = 0  # a reset restarts from the zero state
                previous[b, t] = h
                _paragru_step(
                    projected[b, t],
                    previous[b, t],
                    diagonal,
                    blocks,
                    use_heads,
                    gates[b, t],
                    scratch,
                    h,
                )
                outputs[b, t] = h

    @numba.njit(**INLINE)
    def _paragru_step_backward(
        previous, gate, diagonal, blocks, use_heads, grad_pre, scratch, carried, grad_weights
    ):  # pragma: no cover - compiled
        # carried: dL/dh_t in, dL/dh_{t-1} out; grad_pre = dL/dp_t out; scratch (3, H) holds
        # dL/dh_t with the output's gradient added in its row 0
        one = grad_pre.dtype.type(1)
        hidden = previous.shape[0]
        total, grad_product, product = scratch[0], scratch[1], scratch[2]
        grad_diagonal, grad_blocks = grad_weights
        for j in range(hidden):
            update, candidate = gate[j], gate[2 * hidden + j]
            grad_pre[2 * hidden + j] = total[j] * update * (one - candidate * candidate)
            grad_pre[j] = total[j] * (candidate - previous[j]) * update * (one - update)
            carried[j] = total[j] * (one - update)
            product[j] = gate[hidden + j] * previous[j]
            grad_product[j] = 0
        grad_candidate = grad_pre[2 * hidden :]
        add_transposed_product(diagonal[2], blocks[2], use_heads, grad_candidate, grad_product)
        for j in range(hidden):
            reset = gate[hidden + j]
            grad_pre[hidden + j] = grad_product[j] * previous[j] * reset * (one - reset)
            carried[j] += grad_product[j] * reset
        grad_update, grad_reset = grad_pre[:hidden], grad_pre[hidden : 2 * hidden]
        add_transposed_product(diagonal[0], blocks[0], use_heads, grad_update, carried)
        add_transposed_product(diagonal[1], blocks[1], use_heads, grad_reset, carried)
        add_outer(grad_update, previous, use_heads, grad_diagonal[0], grad_blocks[0])
        add_outer(grad_reset, previous, use_heads, grad_diagonal[1], grad_blocks[1])
        add_outer(grad_candidate, product, use_heads, grad_diagonal[2], grad_blocks[2])

    @numba.njit(**COMPILED)
    def paragru_backward(
        grad_outputs,
        grad_h_final,
        diagonal,
        blocks,
        lengths,
        resets,
        flags,
        previous,
        gates,
        grad_projected,
        grad_h0,
        grad_diagonal,
        grad_blocks,
    ):  # pragma: no cover - compiled
        use_heads, use_resets = flags[0], flags[1]
        batch, steps, _ = grad_projected.shape
        hidden = grad_h0.shape[1]
        scratch = np.empty((3, hidden), dtype=grad_projected.dtype)
        grad_diagonal[:] = 0
        grad_blocks[:] = 0
        grad_h0[:] = 0
        for b in range(batch):
            carried = grad_h_final[b].copy()
            grad_projected[b, lengths[b] :, :] = 0
            for t in range(min(lengths[b], steps) - 1, -1, -1):
                for j in range(hidden):
                    scratch[0, j] = carried[j] + grad_outputs[b, t, j]
                _paragru_step_backward(
                    previous[b, t],
                    gates[b, t],
                    diagonal,
                    blocks,
                    use_heads,
                    grad_projected[b, t],
                    scratch,
                    carried,
                    (grad_diagonal[b], grad_blocks[b]),
                )
                if use_resets and resets[b, t]:  # the step started from the zero state
                    carried[:] = 0
            grad_h0[b] += carried

    @numba.njit(**COMPILED)
    def paralstm_forward(
        projected, initial, recurrent, peephole, lengths, resets, flags, outputs, final, saved
    ):  # pragma: no cover - compiled
        # initial, final: (h, c) each (B, H); saved: previous h, previous c, gates, c_t
        use_resets = flags[1]
        one = projected.dtype.type(1)
        batch, steps, _ = projected.shape
        hidden = outputs.shape[2]
        (h0, c0), (h_final, c_final) = initial, final
        previous_h, previous_c, gates, cells = saved
        h_final[:] = h0
        c_final[:] = c0
        for b in range(batch):
            h, c = h_final[b], c_final[b]
            for t in range(steps):
                if t >= lengths[b]:
                    outputs[b, t, :] = 0
                    continue
                if use_resets and resets[b, t]:
                    h[:] = 0  # a reset restarts from the zero state
                    c[:] = 0
                previous_h[b, t] = h
                previous_c[b, t] = c
                row, gate, cell = projected[b, t], gates[b, t], cells[b, t]
                h_old, c_old = previous_h[b, t], previous_c[b, t]
                for j in range(hidden):  # two branch-free loops, each vectorized
                    forget = sigmoid(
                        row[j] + recurrent[0, j] * h_old[j] + peephole[0, j] * c_old[j], one
                    )
                    candidate = tanh(row[2 * hidden + j] + recurrent[2, j] * h_old[j], one)
                    gate[j] = forget
                    gate[2 * hidden + j] = candidate
                    cell[j] = candidate + forget * (c_old[j] - candidate)
                for j in range(hidden):
                    output = sigmoid(
                        row[hidden + j] + recurrent[1, j] * h_old[j] + peephole[1, j] * cell[j],
                        one,
                    )
                    gate[hidden + j] = output
                    h[j] = output * tanh(cell[j], one)
                c[:] = cell
                outputs[b, t] = h

    @numba.njit(**INLINE)
    def _paralstm_step_backward(
        grad_h, grad_c, grad_output, step, recurrent, peephole, grad_pre, grad_weights
    ):  # pragma: no cover - compiled
        # grad_h, grad_c: dL/dh_t, dL/dc_t in, dL/dh_{t-1}, dL/dc_{t-1} out; step: this step's
        # saved rows (previous h, previous c, gates, c_t)
        one = grad_pre.dtype.type(1)
        h_old, c_old, gate, cell = step
        grad_recurrent, grad_peephole = grad_weights
        hidden = h_old.shape[0]
        for j in range(hidden):
            forget, output, candidate = gate[j], gate[hidden + j], gate[2 * hidden + j]
            total_h = grad_h[j] + grad_output[j]
            tanh_c = tanh(cell[j], one)
            grad_output_pre = total_h * tanh_c * output * (one - output)
            total_c = (
                grad_c[j]
                + total_h * output * (one - tanh_c * tanh_c)
                + grad_output_pre * peephole[1, j]
            )
            grad_forget_pre = total_c * (c_old[j] - candidate) * forget * (one - forget)
            grad_candidate_pre = total_c * (one - forget) * (one - candidate * candidate)
            grad_pre[j] = grad_forget_pre
            grad_pre[hidden + j] = grad_output_pre
            grad_pre[2 * hidden + j] = grad_candidate_pre
            grad_c[j] = total_c * forget + grad_forget_pre * peephole[0, j]
            grad_h[j] = (
                grad_forget_pre * recurrent[0, j]
                + grad_output_pre * recurrent[1, j]
                + grad_candidate_pre * recurrent[2, j]
            )
            grad_recurrent[0, j] += grad_forget_pre * h_old[j]
            grad_recurrent[1, j] += grad_output_pre * h_old[j]
            grad_recurrent[2, j] += grad_candidate_pre * h_old[j]
            grad_peephole[0, j] += grad_forget_pre * c_old[j]
            grad_peephole[1, j] += grad_output_pre * cell[j]

    @numba.njit(**COMPILED)
    def paralstm_backward(
        grad_outputs,
        grad_final,
        weights,
        lengths,
        resets,
        flags,
        saved,
        grad_projected,
        grad_initial,
        grad_weights,
    ):  # pragma: no cover - compiled
        # grad_final, grad_initial: (h, c); weights, grad_weights: (recurrent, peephole), the
        # gradients per row (B, ...)
        use_resets = flags[1]
        batch, steps, _ = grad_projected.shape
        recurrent, peephole = weights
        grad_h0, grad_c0 = grad_initial
        grad_weights[0][:] = 0
        grad_weights[1][:] = 0
        grad_h0[:] = 0
        grad_c0[:] = 0
        previous_h, previous_c, gates, cells = saved
        for b in range(batch):
            grad_h, grad_c = grad_final[0][b].copy(), grad_final[1][b].copy()
            grad_projected[b, lengths[b] :, :] = 0
            for t in range(min(lengths[b], steps) - 1, -1, -1):
                _paralstm_step_backward(
                    grad_h,
                    grad_c,
                    grad_outputs[b, t],
                    (previous_h[b, t], previous_c[b, t], gates[b, t], cells[b, t]),
                    recurrent,
                    peephole,
                    grad_projected[b, t],
                    (grad_weights[0][b], grad_weights[1][b]),
                )
                if use_resets and resets[b, t]:  # the step started from the zero state
                    grad_h[:] = 0
                    grad_c[:] = 0
            grad_h0[b] += grad_h
            grad_c0[b] += grad_c

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"numba could not be imported ({error})"
