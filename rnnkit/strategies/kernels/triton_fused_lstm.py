"""The fused LSTM loop as Triton GPU kernels, the whole time loop inside one program.

The design of FlashRNN (Poppel et al. 2024, https://arxiv.org/abs/2412.07752): W_hh is split
into heads of ``d`` units (``rnnkit.cells.heads``; one head of ``d = H`` for a plain LSTM), and
the grid runs one program per (block of ``BLOCK_B`` batch rows, head). A program loads its head's
recurrent block ``R (4d, d)`` once, as four ``(d, d)`` gate tiles kept on chip, and walks time:

    gates_t = projected_t + h_{t-1} R^T          (one tl.dot per gate, (BLOCK_B, d) x (d, d))
    c_t = f_t * c_{t-1} + i_t * g_t,  h_t = o_t * tanh(c_t)       (torch order i, f, g, o)

reading the input projection ``projected (B, T, 4H)`` (W_ih x + biases, computed for all steps
outside) and writing h_t, c_t and the gate activations per step. The backward kernel walks time
in reverse from them, writing ``d projected (B, T, 4H)`` (the pre-activation gradients) and the
gradient of the initial state; the gradient of W_hh is then one torch product of those with the
saved h_{t-1} after the loop.

As the sequential reference: a row past its length keeps its state and outputs zero; ``resets``
restart a row from the zero state before a flagged step; ``hidden_mask`` (recurrent dropout)
multiplies h_{t-1} before the product. Peepholes, layer norm, ``proj_size`` and zoneout raise
``StrategyUnsupportedError``, and so do heads of more than ``MAX_HEAD_SIZE = 64`` units: four
gate tiles of 64 x 64 already fill a program's registers, and streaming larger blocks from
global memory per step is a different kernel (use ``num_heads`` so that ``H / num_heads <= 64``,
or the CPU). The head count is read from the ``num_heads`` role of ``fused_weights`` (one head,
the dense W_hh, when the cell does not declare it: correct, only slower).

Tested on CPU tensors with Triton's interpreter (``TRITON_INTERPRET=1``) and on a GPU when one
is available. Indices are int32: B * T * 4H must stay below 2**31.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from rnnkit.strategies.kernels.triton_common import (
    BLOCK_B,
    IMPORT_ERROR,
    block_size,
    head_blocks,
    head_size_reason,
)
from rnnkit.strategies.native import StrategyUnsupportedError

UNSUPPORTED_ROLES = {
    "peephole": "peephole",
    "norm_hidden": "layer_norm",
    "projection": "proj_size",
}

if IMPORT_ERROR is None:
    import triton
    import triton.language as tl

    from rnnkit.strategies.kernels.triton_common import program_rows, sigmoid, tanh

    @triton.jit
    def _gate_tiles(weight_ptr, head, size, BLOCK_D: tl.constexpr, TRANSPOSE: tl.constexpr):
        """The four ``(d, d)`` gate blocks of ``weight (k, 4d, d)`` for ``head``; transposed
        ``(in, out)`` for ``h R^T``, else ``(out, in)`` for ``d_gates R``."""
        units = tl.arange(0, BLOCK_D)
        square = (units < size)[:, None] & (units < size)[None, :]
        if TRANSPOSE:
            offsets = units[None, :] * size + units[:, None]
        else:
            offsets = units[:, None] * size + units[None, :]
        base = weight_ptr + head * 4 * size * size + offsets
        first = tl.load(base, mask=square, other=0.0)
        second = tl.load(base + size * size, mask=square, other=0.0)
        third = tl.load(base + 2 * size * size, mask=square, other=0.0)
        return first, second, third, tl.load(base + 3 * size * size, mask=square, other=0.0)

    @triton.jit
    def _load_gates(pointer, hidden, ok):
        """The four gate slices ``(BLOCK_B, d)`` starting at ``pointer`` in a ``(B, T, 4H)``."""
        first = tl.load(pointer, mask=ok, other=0.0)
        second = tl.load(pointer + hidden, mask=ok, other=0.0)
        third = tl.load(pointer + 2 * hidden, mask=ok, other=0.0)
        return first, second, third, tl.load(pointer + 3 * hidden, mask=ok, other=0.0)

    @triton.jit
    def _store_gates(pointer, hidden, ok, first, second, third, fourth):
        tl.store(pointer, first, mask=ok)
        tl.store(pointer + hidden, second, mask=ok)
        tl.store(pointer + 2 * hidden, third, mask=ok)
        tl.store(pointer + 3 * hidden, fourth, mask=ok)

    @triton.jit
    def _lstm_forward_kernel(
        projected_ptr, h0_ptr, c0_ptr, weight_ptr, mask_ptr, lengths_ptr, resets_ptr,
        outputs_ptr, gates_ptr, cells_ptr, h_final_ptr, c_final_ptr,
        batch, steps, hidden, size,
        HAS_MASK: tl.constexpr, HAS_RESETS: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        rows, row_ok, ok, state_index, _ = program_rows(batch, hidden, size, BLOCK_B, BLOCK_D)
        h = tl.load(h0_ptr + state_index, mask=ok, other=0.0)
        c = tl.load(c0_ptr + state_index, mask=ok, other=0.0)
        r_i, r_f, r_g, r_o = _gate_tiles(weight_ptr, tl.program_id(1), size, BLOCK_D, True)
        if HAS_MASK:
            keep = tl.load(mask_ptr + state_index, mask=ok, other=0.0)
        lengths = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
        for t in range(0, steps):
            active = (t < lengths)[:, None]
            if HAS_RESETS:
                restart = tl.load(resets_ptr + rows * steps + t, mask=row_ok, other=0) != 0
                h = tl.where(restart[:, None], 0.0, h)
                c = tl.where(restart[:, None], 0.0, c)
            recurrent = h
            if HAS_MASK:
                recurrent = h * keep
            step_index = state_index + (rows[:, None] * (steps - 1) + t) * hidden  # in (B, T, H)
            gate_index = step_index + (rows[:, None] * steps + t) * 3 * hidden  # in (B, T, 4H)
            i, f, g, o = _load_gates(projected_ptr + gate_index, hidden, ok)
            i = sigmoid(i + tl.dot(recurrent, r_i, input_precision="ieee"))
            f = sigmoid(f + tl.dot(recurrent, r_f, input_precision="ieee"))
            g = tanh(g + tl.dot(recurrent, r_g, input_precision="ieee"))
            o = sigmoid(o + tl.dot(recurrent, r_o, input_precision="ieee"))
            c_new = f * c + i * g
            h_new = o * tanh(c_new)
            c = tl.where(active, c_new, c)
            h = tl.where(active, h_new, h)
            _store_gates(gates_ptr + gate_index, hidden, ok, i, f, g, o)
            tl.store(cells_ptr + step_index, c, mask=ok)
            tl.store(outputs_ptr + step_index, tl.where(active, h_new, 0.0), mask=ok)
        tl.store(h_final_ptr + state_index, h, mask=ok)
        tl.store(c_final_ptr + state_index, c, mask=ok)

    @triton.jit
    def _lstm_backward_kernel(
        grad_outputs_ptr, grad_h_ptr, grad_c_ptr, weight_ptr, mask_ptr, lengths_ptr, resets_ptr,
        gates_ptr, cells_ptr, c0_ptr, grad_projected_ptr, grad_h0_ptr, grad_c0_ptr,
        batch, steps, hidden, size,
        HAS_MASK: tl.constexpr, HAS_RESETS: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        rows, row_ok, ok, state_index, _ = program_rows(batch, hidden, size, BLOCK_B, BLOCK_D)
        dh = tl.load(grad_h_ptr + state_index, mask=ok, other=0.0)
        dc = tl.load(grad_c_ptr + state_index, mask=ok, other=0.0)
        w_i, w_f, w_g, w_o = _gate_tiles(weight_ptr, tl.program_id(1), size, BLOCK_D, False)
        if HAS_MASK:
            keep = tl.load(mask_ptr + state_index, mask=ok, other=0.0)
        lengths = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
        for step in range(0, steps):
            t = steps - 1 - step
            active = (t < lengths)[:, None]
            step_index = state_index + (rows[:, None] * (steps - 1) + t) * hidden
            gate_index = step_index + (rows[:, None] * steps + t) * 3 * hidden
            i, f, g, o = _load_gates(gates_ptr + gate_index, hidden, ok)
            c_t = tl.load(cells_ptr + step_index, mask=ok, other=0.0)
            first = (rows * 0 + t == 0)[:, None]  # a tensor: the interpreter needs one
            c_prev = tl.load(cells_ptr + step_index - hidden, mask=ok & ~first, other=0.0)
            c_prev += tl.load(c0_ptr + state_index, mask=ok & first, other=0.0)
            if HAS_RESETS:
                restart = tl.load(resets_ptr + rows * steps + t, mask=row_ok, other=0) != 0
                c_prev = tl.where(restart[:, None], 0.0, c_prev)
            grad_output = tl.load(grad_outputs_ptr + step_index, mask=ok, other=0.0)
            dh_step = dh + tl.where(active, grad_output, 0.0)
            tanh_c = tanh(c_t)
            dc_step = dc + dh_step * o * (1.0 - tanh_c * tanh_c)
            d_i = tl.where(active, dc_step * g * i * (1.0 - i), 0.0)
            d_f = tl.where(active, dc_step * c_prev * f * (1.0 - f), 0.0)
            d_g = tl.where(active, dc_step * i * (1.0 - g * g), 0.0)
            d_o = tl.where(active, dh_step * tanh_c * o * (1.0 - o), 0.0)
            _store_gates(grad_projected_ptr + gate_index, hidden, ok, d_i, d_f, d_g, d_o)
            dh_prev = tl.dot(d_i, w_i, input_precision="ieee")
            dh_prev += tl.dot(d_f, w_f, input_precision="ieee")
            dh_prev += tl.dot(d_g, w_g, input_precision="ieee")
            dh_prev += tl.dot(d_o, w_o, input_precision="ieee")
            if HAS_MASK:
                dh_prev = dh_prev * keep
            dh = tl.where(active, dh_prev, dh)
            dc = tl.where(active, dc_step * f, dc)
            if HAS_RESETS:
                dh = tl.where(restart[:, None], 0.0, dh)
                dc = tl.where(restart[:, None], 0.0, dc)
        tl.store(grad_h0_ptr + state_index, dh, mask=ok)
        tl.store(grad_c0_ptr + state_index, dc, mask=ok)


def _launch_settings(size: int, has_mask: bool, has_resets: bool) -> dict[str, Any]:
    block_d = block_size(size)
    return {"HAS_MASK": has_mask, "HAS_RESETS": has_resets, "BLOCK_B": BLOCK_B, "BLOCK_D": block_d}


class _TritonLSTM(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lengths: Tensor,
        resets: Tensor | None,
        projected: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight: Tensor,
        hidden_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``projected (B, T, 4H)``, ``h0, c0 (B, H)``, ``weight (k, 4d, d)``, ``lengths (B,)``
        int32 and ``resets (B, T)`` uint8 on the device, ``hidden_mask (B, H)`` or None."""
        batch, steps, width = projected.shape
        num_heads, _, size = weight.shape
        outputs = projected.new_empty(batch, steps, width // 4)
        gates, cells = torch.empty_like(projected), torch.empty_like(outputs)
        h_final, c_final = torch.empty_like(h0), torch.empty_like(c0)
        grid = (triton.cdiv(batch, BLOCK_B), num_heads)
        settings = _launch_settings(size, hidden_mask is not None, resets is not None)
        _lstm_forward_kernel[grid](
            projected, h0, c0, weight, h0 if hidden_mask is None else hidden_mask, lengths,
            lengths if resets is None else resets,
            outputs, gates, cells, h_final, c_final,
            batch, steps, width // 4, size, **settings,
        )  # fmt: skip
        ctx.settings = settings
        ctx.save_for_backward(lengths, resets, h0, c0, weight, hidden_mask, outputs, gates, cells)
        return outputs, h_final, c_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_h: Tensor, grad_c: Tensor):  # type: ignore[override]
        lengths, resets, h0, c0, weight, hidden_mask, outputs, gates, cells = ctx.saved_tensors
        batch, steps, hidden = outputs.shape
        num_heads, _, size = weight.shape
        grad_projected = torch.empty_like(gates)
        grad_h0, grad_c0 = torch.empty_like(h0), torch.empty_like(c0)
        grid = (triton.cdiv(batch, BLOCK_B), num_heads)
        _lstm_backward_kernel[grid](
            grad_outputs.contiguous(), grad_h.contiguous(), grad_c.contiguous(), weight,
            h0 if hidden_mask is None else hidden_mask, lengths,
            lengths if resets is None else resets,
            gates, cells, c0, grad_projected, grad_h0, grad_c0,
            batch, steps, hidden, size, **ctx.settings,
        )  # fmt: skip
        # h_{t-1} as the product at step t read it: h0, then the outputs (zero past a row's
        # length, where the gate gradients are zero too), restarted and masked
        previous = torch.cat([h0.unsqueeze(1), outputs[:, :-1]], 1)  # (B, T, H)
        if resets is not None:
            previous = previous.masked_fill(resets.bool().unsqueeze(-1), 0.0)
        if hidden_mask is not None:
            previous = previous * hidden_mask.unsqueeze(1)
        grad_weight = torch.einsum(
            "btgka,btkc->kgac",
            grad_projected.view(batch, steps, 4, num_heads, size),
            previous.view(batch, steps, num_heads, size),
        ).reshape(weight.shape)
        return None, None, grad_projected, grad_h0, grad_c0, grad_weight, None


def unsupported_reason(
    weights: dict[str, Any], zoneout: tuple[Tensor, ...] | None, device: torch.device
) -> str | None:
    """Why the Triton kernels cannot run these weights on ``device``, or None."""
    if IMPORT_ERROR is not None:
        return f"the fused LSTM on {device} needs {IMPORT_ERROR}"
    for role, option in UNSUPPORTED_ROLES.items():
        if weights.get(role) is not None:
            return f"the fused Triton LSTM kernel on {device} has no {option}"
    if zoneout is not None:
        return f"the fused Triton LSTM kernel on {device} has no zoneout"
    return head_size_reason(weights, device, "LSTM")


def run_lstm_triton(
    projected: Tensor,
    state: tuple[Tensor, Tensor],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor, Tensor]]:
    """``run_lstm``'s signature and results (``fused_lstm.py``) with the Triton kernels:
    outputs ``(B, T, H)`` and the final ``(h, c)``."""
    device = projected.device
    reason = unsupported_reason(weights, zoneout, device)
    if reason is not None:
        raise StrategyUnsupportedError(f"strategy 'fused' cannot run this cell: {reason}")
    weight = head_blocks(weights["recurrent"], int(weights.get("num_heads", 1)), 4)
    hidden_mask = weights.get("hidden_mask")
    outputs, h, c = _TritonLSTM.apply(
        lengths.to(device=device, dtype=torch.int32).contiguous(),
        None if resets is None else resets.to(device=device, dtype=torch.uint8).contiguous(),
        projected.contiguous(),
        state[0].contiguous(),
        state[1].contiguous(),
        weight.contiguous(),
        None if hidden_mask is None else hidden_mask.contiguous(),
    )
    return outputs, (h, c)
