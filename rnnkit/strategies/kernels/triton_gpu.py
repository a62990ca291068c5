"""The diagonal linear scan as a Triton GPU kernel.

Each program owns a block of channels of one batch row and walks time in tiles of
``BLOCK_T`` steps: within a tile, ``tl.associative_scan`` combines ``(a, b)`` pairs with

    (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2)

giving every step's cumulative ``(A_t, B_t)``; the state entering the tile is carried in
registers, ``h_t = A_t h_in + B_t``. Complex scans run on the real and imaginary parts. The
backward pass is the same kernel in reverse (``rnnkit.strategies.kernels.autograd``).

Tested on CPU tensors with Triton's interpreter (``TRITON_INTERPRET=1``) and on a GPU when one
is available.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"triton could not be imported ({error})"


def available() -> str | None:
    """None when the Triton kernel can run, else the reason it cannot."""
    return IMPORT_ERROR


if IMPORT_ERROR is None:

    @triton.jit
    def _combine_real(a_left, b_left, a_right, b_right):
        return a_left * a_right, a_right * b_left + b_right

    @triton.jit
    def _combine_complex(ar_l, ai_l, br_l, bi_l, ar_r, ai_r, br_r, bi_r):
        return (
            ar_l * ar_r - ai_l * ai_r,
            ar_l * ai_r + ai_l * ar_r,
            ar_r * br_l - ai_r * bi_l + br_r,
            ar_r * bi_l + ai_r * br_l + bi_r,
        )

    @triton.jit
    def _scan_real_kernel(
        a_ptr,
        b_ptr,
        initial_ptr,
        out_ptr,
        steps,
        width,
        REVERSE: tl.constexpr,
        BLOCK_T: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        row = tl.program_id(0)
        channels = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        channel_ok = channels < width
        h = tl.load(initial_ptr + row * width + channels, mask=channel_ok, other=0.0)
        for tile in range(0, tl.cdiv(steps, BLOCK_T)):
            offsets = tile * BLOCK_T + tl.arange(0, BLOCK_T)
            if REVERSE:  # noqa: SIM108 (a constexpr branch, resolved at compile time)
                times = steps - 1 - offsets
            else:
                times = offsets
            ok = (offsets < steps)[:, None] & channel_ok[None, :]
            index = row * steps * width + times[:, None] * width + channels[None, :]
            a = tl.load(a_ptr + index, mask=ok, other=1.0)
            b = tl.load(b_ptr + index, mask=ok, other=0.0)
            a_cum, b_cum = tl.associative_scan((a, b), 0, _combine_real)
            values = a_cum * h[None, :] + b_cum
            tl.store(out_ptr + index, values, mask=ok)
            is_last = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None]
            h = tl.sum(tl.where(is_last, values, 0.0), 0)  # the state leaving the tile

    @triton.jit
    def _scan_complex_kernel(
        ar_ptr,
        ai_ptr,
        br_ptr,
        bi_ptr,
        hr_ptr,
        hi_ptr,
        out_r_ptr,
        out_i_ptr,
        steps,
        width,
        REVERSE: tl.constexpr,
        BLOCK_T: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        row = tl.program_id(0)
        channels = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
        channel_ok = channels < width
        h_real = tl.load(hr_ptr + row * width + channels, mask=channel_ok, other=0.0)
        h_imag = tl.load(hi_ptr + row * width + channels, mask=channel_ok, other=0.0)
        for tile in range(0, tl.cdiv(steps, BLOCK_T)):
            offsets = tile * BLOCK_T + tl.arange(0, BLOCK_T)
            if REVERSE:  # noqa: SIM108 (a constexpr branch, resolved at compile time)
                times = steps - 1 - offsets
            else:
                times = offsets
            ok = (offsets < steps)[:, None] & channel_ok[None, :]
            index = row * steps * width + times[:, None] * width + channels[None, :]
            a_real = tl.load(ar_ptr + index, mask=ok, other=1.0)
            a_imag = tl.load(ai_ptr + index, mask=ok, other=0.0)
            b_real = tl.load(br_ptr + index, mask=ok, other=0.0)
            b_imag = tl.load(bi_ptr + index, mask=ok, other=0.0)
            ar, ai, br, bi = tl.associative_scan(
                (a_real, a_imag, b_real, b_imag), 0, _combine_complex
            )
            values_real = ar * h_real[None, :] - ai * h_imag[None, :] + br
            values_imag = ar * h_imag[None, :] + ai * h_real[None, :] + bi
            tl.store(out_r_ptr + index, values_real, mask=ok)
            tl.store(out_i_ptr + index, values_imag, mask=ok)
            is_last = (tl.arange(0, BLOCK_T) == BLOCK_T - 1)[:, None]
            h_real = tl.sum(tl.where(is_last, values_real, 0.0), 0)
            h_imag = tl.sum(tl.where(is_last, values_imag, 0.0), 0)


BLOCK_T = 32
BLOCK_N = 32


def scan_triton_raw(a: Tensor, b: Tensor, initial: Tensor | None, reverse: bool) -> Tensor:
    """The Triton scan without autograd: ``(B, T, N)`` tensors, ``initial (B, N)``."""
    if IMPORT_ERROR is not None:
        raise RuntimeError(f"the Triton scan is unavailable: {IMPORT_ERROR}")
    a = a.detach().expand_as(b)
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = a.to(dtype).contiguous(), b.detach().to(dtype).contiguous()
    batch, steps, width = b.shape
    initial = torch.zeros_like(b[:, 0]) if initial is None else initial.detach().to(dtype)
    initial = initial.contiguous()
    grid = (batch, triton.cdiv(width, BLOCK_N))
    if not dtype.is_complex:
        output = torch.empty_like(b)
        _scan_real_kernel[grid](
            a, b, initial, output, steps, width, reverse, BLOCK_T=BLOCK_T, BLOCK_N=BLOCK_N
        )
        return output
    parts = [part.contiguous() for tensor in (a, b, initial) for part in (tensor.real, tensor.imag)]
    out_real, out_imag = torch.empty_like(parts[2]), torch.empty_like(parts[3])
    _scan_complex_kernel[grid](
        *parts, out_real, out_imag, steps, width, reverse, BLOCK_T=BLOCK_T, BLOCK_N=BLOCK_N
    )
    return torch.complex(out_real, out_imag)
