"""The fused GRU loop as Triton GPU kernels, the whole time loop inside one program.

The design of FlashRNN (Poppel et al. 2024, https://arxiv.org/abs/2412.07752), as in
``triton_fused_lstm.py``: W_hh is split into heads of ``d`` units (one head of ``d = H`` unless
``fused_weights`` names a ``num_heads``), and the grid runs one program per (block of ``BLOCK_B``
batch rows, head). A program loads its head's recurrent block ``R (3d, d)`` once, as three
``(d, d)`` gate tiles kept on chip with its slice of b_hh, and walks time (torch order r, z, n):

    a_t = h_{t-1} R^T + b_hh                     (one tl.dot per gate, (BLOCK_B, d) x (d, d))
    r_t = sigmoid(x_r + a_r),  z_t = sigmoid(x_z + a_z),  n_t = tanh(x_n + r_t * a_n)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

reading the input projection ``projected (B, T, 3H)`` (W_ih x + b_ih, computed for all steps
outside) and writing h_t, the gate activations ``(r, z, n)`` and the recurrent candidate ``a_n``
per step. The backward kernel walks time in reverse from them, writing ``d projected (B, T, 3H)``
(the pre-activation gradients), ``d a_n (B, T, H)`` and the gradient of the initial state; the
gradients of W_hh and b_hh are then one torch product and one sum after the loop (``d a_r`` and
``d a_z`` equal ``d x_r`` and ``d x_z``).

As the sequential reference (``rnnkit/cells/gru.py``): a row past its length keeps its state and
outputs zero; ``resets`` restart a row from the zero state before a flagged step;
``hidden_mask`` (recurrent dropout) multiplies the h_{t-1} that enters W_hh, while the
interpolation uses the undropped h_{t-1}; DropConnect is already applied to the ``recurrent``
weight the kernel receives. Zoneout raises ``StrategyUnsupportedError``, and so do heads of more
than ``MAX_HEAD_SIZE = 64`` units (use ``num_heads`` so that ``H / num_heads <= 64``, or the
CPU).

Tested on CPU tensors with Triton's interpreter (``TRITON_INTERPRET=1``) and on a GPU when one
is available. Indices are int32: B * T * 3H must stay below 2**31.
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

GATES = 3  # r, z, n

if IMPORT_ERROR is None:
    import triton
    import triton.language as tl

    from rnnkit.strategies.kernels.triton_common import program_rows, sigmoid, tanh

    @triton.jit
    def _gate_tiles(weight_ptr, head, size, BLOCK_D: tl.constexpr, TRANSPOSE: tl.constexpr):
        """The three ``(d, d)`` gate blocks of ``weight (k, 3d, d)`` for ``head``; transposed
        ``(in, out)`` for ``h R^T``, else ``(out, in)`` for ``d_a R``."""
        units = tl.arange(0, BLOCK_D)
        square = (units < size)[:, None] & (units < size)[None, :]
        if TRANSPOSE:
            offsets = units[None, :] * size + units[:, None]
        else:
            offsets = units[:, None] * size + units[None, :]
        base = weight_ptr + head * 3 * size * size + offsets
        first = tl.load(base, mask=square, other=0.0)
        second = tl.load(base + size * size, mask=square, other=0.0)
        return first, second, tl.load(base + 2 * size * size, mask=square, other=0.0)

    @triton.jit
    def _load_gates(pointer, hidden, ok):
        """The three gate slices ``(BLOCK_B, d)`` starting at ``pointer`` in a ``(B, T, 3H)``."""
        first = tl.load(pointer, mask=ok, other=0.0)
        second = tl.load(pointer + hidden, mask=ok, other=0.0)
        return first, second, tl.load(pointer + 2 * hidden, mask=ok, other=0.0)

    @triton.jit
    def _store_gates(pointer, hidden, ok, first, second, third):
        tl.store(pointer, first, mask=ok)
        tl.store(pointer + hidden, second, mask=ok)
        tl.store(pointer + 2 * hidden, third, mask=ok)

    @triton.jit
    def _gru_forward_kernel(
        projected_ptr, h0_ptr, weight_ptr, bias_ptr, mask_ptr, lengths_ptr, resets_ptr,
        outputs_ptr, gates_ptr, candidates_ptr, h_final_ptr,
        batch, steps, hidden, size,
        HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_RESETS: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        rows, row_ok, ok, state_index, columns = program_rows(batch, hidden, size, BLOCK_B, BLOCK_D)
        h = tl.load(h0_ptr + state_index, mask=ok, other=0.0)
        r_r, r_z, r_n = _gate_tiles(weight_ptr, tl.program_id(1), size, BLOCK_D, True)
        if HAS_BIAS:
            unit_ok = tl.arange(0, BLOCK_D) < size
            b_r = tl.load(bias_ptr + columns, mask=unit_ok, other=0.0)[None, :]
            b_z = tl.load(bias_ptr + hidden + columns, mask=unit_ok, other=0.0)[None, :]
            b_n = tl.load(bias_ptr + 2 * hidden + columns, mask=unit_ok, other=0.0)[None, :]
        if HAS_MASK:
            keep = tl.load(mask_ptr + state_index, mask=ok, other=0.0)
        lengths = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
        for t in range(0, steps):
            active = (t < lengths)[:, None]
            if HAS_RESETS:
                restart = tl.load(resets_ptr + rows * steps + t, mask=row_ok, other=0) != 0
                h = tl.where(restart[:, None], 0.0, h)
            recurrent = h
            if HAS_MASK:
                recurrent = h * keep
            step_index = state_index + (rows[:, None] * (steps - 1) + t) * hidden  # in (B, T, H)
            gate_index = step_index + (rows[:, None] * steps + t) * 2 * hidden  # in (B, T, 3H)
            x_r, x_z, x_n = _load_gates(projected_ptr + gate_index, hidden, ok)
            a_r = tl.dot(recurrent, r_r, input_precision="ieee")
            a_z = tl.dot(recurrent, r_z, input_precision="ieee")
            a_n = tl.dot(recurrent, r_n, input_precision="ieee")
            if HAS_BIAS:
                a_r += b_r
                a_z += b_z
                a_n += b_n
            r = sigmoid(x_r + a_r)
            z = sigmoid(x_z + a_z)
            n = tanh(x_n + r * a_n)
            h_new = (1.0 - z) * n + z * h
            h = tl.where(active, h_new, h)
            _store_gates(gates_ptr + gate_index, hidden, ok, r, z, n)
            tl.store(candidates_ptr + step_index, a_n, mask=ok)
            tl.store(outputs_ptr + step_index, tl.where(active, h_new, 0.0), mask=ok)
        tl.store(h_final_ptr + state_index, h, mask=ok)

    @triton.jit
    def _gru_backward_kernel(
        grad_outputs_ptr, grad_h_ptr, weight_ptr, mask_ptr, lengths_ptr, resets_ptr,
        gates_ptr, candidates_ptr, outputs_ptr, h0_ptr,
        grad_projected_ptr, grad_candidates_ptr, grad_h0_ptr,
        batch, steps, hidden, size,
        HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, HAS_RESETS: tl.constexpr,
        BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr,
    ):  # fmt: skip
        rows, row_ok, ok, state_index, columns = program_rows(batch, hidden, size, BLOCK_B, BLOCK_D)
        dh = tl.load(grad_h_ptr + state_index, mask=ok, other=0.0)
        w_r, w_z, w_n = _gate_tiles(weight_ptr, tl.program_id(1), size, BLOCK_D, False)
        if HAS_MASK:
            keep = tl.load(mask_ptr + state_index, mask=ok, other=0.0)
        lengths = tl.load(lengths_ptr + rows, mask=row_ok, other=0)
        for step in range(0, steps):
            t = steps - 1 - step
            active = (t < lengths)[:, None]
            step_index = state_index + (rows[:, None] * (steps - 1) + t) * hidden
            gate_index = step_index + (rows[:, None] * steps + t) * 2 * hidden
            r, z, n = _load_gates(gates_ptr + gate_index, hidden, ok)
            a_n = tl.load(candidates_ptr + step_index, mask=ok, other=0.0)
            # h_{t-1}: h0 or the previous output (the state there: the row was active)
            first = (rows * 0 + t == 0)[:, None]  # a tensor: the interpreter needs one
            h_prev = tl.load(outputs_ptr + step_index - hidden, mask=ok & ~first, other=0.0)
            h_prev += tl.load(h0_ptr + state_index, mask=ok & first, other=0.0)
            if HAS_RESETS:
                restart = tl.load(resets_ptr + rows * steps + t, mask=row_ok, other=0) != 0
                h_prev = tl.where(restart[:, None], 0.0, h_prev)
            grad_output = tl.load(grad_outputs_ptr + step_index, mask=ok, other=0.0)
            dh_step = dh + tl.where(active, grad_output, 0.0)
            d_xn = tl.where(active, dh_step * (1.0 - z) * (1.0 - n * n), 0.0)
            d_r = tl.where(active, d_xn * a_n * r * (1.0 - r), 0.0)
            d_z = tl.where(active, dh_step * (h_prev - n) * z * (1.0 - z), 0.0)
            d_an = d_xn * r
            _store_gates(grad_projected_ptr + gate_index, hidden, ok, d_r, d_z, d_xn)
            tl.store(grad_candidates_ptr + step_index, d_an, mask=ok)
            dh_prev = tl.dot(d_r, w_r, input_precision="ieee")
            dh_prev += tl.dot(d_z, w_z, input_precision="ieee")
            dh_prev += tl.dot(d_an, w_n, input_precision="ieee")
            if HAS_MASK:
                dh_prev = dh_prev * keep
            dh = tl.where(active, dh_prev + dh_step * z, dh)
            if HAS_RESETS:
                dh = tl.where(restart[:, None], 0.0, dh)
        tl.store(grad_h0_ptr + state_index, dh, mask=ok)


def _launch_settings(size: int, has_bias: bool, has_mask: bool, has_resets: bool) -> dict[str, Any]:
    block_d = block_size(size)
    return {
        "HAS_BIAS": has_bias,
        "HAS_MASK": has_mask,
        "HAS_RESETS": has_resets,
        "BLOCK_B": BLOCK_B,
        "BLOCK_D": block_d,
    }


class _TritonGRU(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        lengths: Tensor,
        resets: Tensor | None,
        projected: Tensor,
        h0: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        hidden_mask: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """``projected (B, T, 3H)``, ``h0 (B, H)``, ``weight (k, 3d, d)``, ``bias (3H)`` or
        None, ``lengths (B,)`` int32 and ``resets (B, T)`` uint8 on the device,
        ``hidden_mask (B, H)`` or None."""
        batch, steps, width = projected.shape
        num_heads, _, size = weight.shape
        outputs = projected.new_empty(batch, steps, width // 3)
        gates, candidates = torch.empty_like(projected), torch.empty_like(outputs)
        h_final = torch.empty_like(h0)
        grid = (triton.cdiv(batch, BLOCK_B), num_heads)
        settings = _launch_settings(
            size, bias is not None, hidden_mask is not None, resets is not None
        )
        _gru_forward_kernel[grid](
            projected, h0, weight, h0 if bias is None else bias,
            h0 if hidden_mask is None else hidden_mask, lengths,
            lengths if resets is None else resets,
            outputs, gates, candidates, h_final,
            batch, steps, width // 3, size, **settings,
        )  # fmt: skip
        ctx.settings = settings
        ctx.save_for_backward(lengths, resets, h0, weight, hidden_mask, outputs, gates, candidates)
        return outputs, h_final

    @staticmethod
    def backward(ctx: Any, grad_outputs: Tensor, grad_h: Tensor):  # type: ignore[override]
        lengths, resets, h0, weight, hidden_mask, outputs, gates, candidates = ctx.saved_tensors
        batch, steps, hidden = outputs.shape
        num_heads, _, size = weight.shape
        grad_projected = torch.empty_like(gates)
        grad_candidates = torch.empty_like(outputs)
        grad_h0 = torch.empty_like(h0)
        grid = (triton.cdiv(batch, BLOCK_B), num_heads)
        _gru_backward_kernel[grid](
            grad_outputs.contiguous(), grad_h.contiguous(), weight,
            h0 if hidden_mask is None else hidden_mask, lengths,
            lengths if resets is None else resets,
            gates, candidates, outputs, h0, grad_projected, grad_candidates, grad_h0,
            batch, steps, hidden, size, **ctx.settings,
        )  # fmt: skip
        # d (W_hh h + b_hh): the r and z parts equal those of d projected
        grad_recurrent = torch.cat([grad_projected[..., : 2 * hidden], grad_candidates], -1)
        # h_{t-1} as the product at step t read it: h0, then the outputs (zero past a row's
        # length, where the gradients are zero too), restarted and masked
        previous = torch.cat([h0.unsqueeze(1), outputs[:, :-1]], 1)  # (B, T, H)
        if resets is not None:
            previous = previous.masked_fill(resets.bool().unsqueeze(-1), 0.0)
        if hidden_mask is not None:
            previous = previous * hidden_mask.unsqueeze(1)
        grad_weight = torch.einsum(
            "btgka,btkc->kgac",
            grad_recurrent.view(batch, steps, GATES, num_heads, size),
            previous.view(batch, steps, num_heads, size),
        ).reshape(weight.shape)
        grad_bias = grad_recurrent.sum((0, 1)) if ctx.settings["HAS_BIAS"] else None
        return None, None, grad_projected, grad_h0, grad_weight, grad_bias, None


def unsupported_reason(
    weights: dict[str, Any], zoneout: tuple[Tensor, ...] | None, device: torch.device
) -> str | None:
    """Why the Triton kernels cannot run these weights on ``device``, or None."""
    if IMPORT_ERROR is not None:
        return f"the fused GRU on {device} needs {IMPORT_ERROR}"
    if zoneout is not None:
        return f"the fused Triton GRU kernel on {device} has no zoneout"
    return head_size_reason(weights, device, "GRU")


def run_gru_triton(
    projected: Tensor,
    state: tuple[Tensor, ...],
    weights: dict[str, Any],
    zoneout: tuple[Tensor, ...] | None,
    lengths: Tensor,
    resets: Tensor | None = None,
) -> tuple[Tensor, tuple[Tensor]]:
    """``run_gru``'s signature and results (``fused_gru.py``) with the Triton kernels:
    outputs ``(B, T, H)`` and the final ``(h,)``."""
    device = projected.device
    reason = unsupported_reason(weights, zoneout, device)
    if reason is not None:
        raise StrategyUnsupportedError(f"strategy 'fused' cannot run this cell: {reason}")
    weight = head_blocks(weights["recurrent"], int(weights.get("num_heads", 1)), GATES)
    bias = weights.get("recurrent_bias")
    hidden_mask = weights.get("hidden_mask")
    outputs, h = _TritonGRU.apply(
        lengths.to(device=device, dtype=torch.int32).contiguous(),
        None if resets is None else resets.to(device=device, dtype=torch.uint8).contiguous(),
        projected.contiguous(),
        state[0].contiguous(),
        weight.contiguous(),
        None if bias is None else bias.contiguous(),
        None if hidden_mask is None else hidden_mask.contiguous(),
    )
    return outputs, (h,)
