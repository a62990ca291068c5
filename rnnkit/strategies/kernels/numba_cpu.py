"""The diagonal linear scan compiled for the CPU with Numba, forward and backward.

The kernel walks time once per batch row, channels innermost so that every step reads and
writes contiguous memory, rows spread over the cores (rows split into cache-line aligned channel
blocks only when there are fewer rows than cores: splitting rows measured 2x slower otherwise).
The backward pass is the same scan run the other way (``rnnkit.strategies.kernels.autograd``).
Compiled on first use and cached on disk; when Numba is missing or cannot compile,
``available()`` gives the reason.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

CACHE_LINE_FLOATS = 16

PARALLEL_MIN_ELEMENTS = 1 << 18  # below this, waking the thread team costs more than it saves

try:
    import numba

    @numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
    def _scan_block(a, b, initial, output, reverse, row, start, stop):  # pragma: no cover
        steps = b.shape[1]
        h = initial[row].copy()
        for index in range(steps):
            t = steps - 1 - index if reverse else index
            for n in range(start, stop):
                h[n] = a[row, t, n] * h[n] + b[row, t, n]
                output[row, t, n] = h[n]

    @numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _scan_parallel(a, b, initial, output, reverse, blocks):  # pragma: no cover - compiled
        batch, _, width = b.shape
        block_width = (width + blocks - 1) // blocks
        block_width = (block_width + CACHE_LINE_FLOATS - 1) // CACHE_LINE_FLOATS * CACHE_LINE_FLOATS
        for job in numba.prange(batch * blocks):
            row = job // blocks
            start = (job % blocks) * block_width
            _scan_block(a, b, initial, output, reverse, row, start, min(start + block_width, width))

    @numba.njit(cache=True, nogil=True, boundscheck=False)
    def _scan_serial(a, b, initial, output, reverse):  # pragma: no cover - compiled
        for row in range(b.shape[0]):
            _scan_block(a, b, initial, output, reverse, row, 0, b.shape[2])

    @numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _backward_kernel(a, h, initial, grad_h, grad_a, grad_b, grad_initial, reverse):
        # pragma: no cover - compiled; one pass in the opposite direction of the forward scan
        batch, steps, width = h.shape
        for row in numba.prange(batch):
            carry = np.zeros(width, dtype=grad_b.dtype)  # conj(a_next) * g_next
            for index in range(steps):
                t = index if reverse else steps - 1 - index
                before = t + 1 if reverse else t - 1  # the state h_t was computed from
                previous = initial[row] if before < 0 or before >= steps else h[row, before]
                for n in range(width):
                    g = grad_h[row, t, n] + carry[n]
                    grad_b[row, t, n] = g
                    grad_a[row, t, n] = g * np.conj(previous[n])
                    carry[n] = np.conj(a[row, t, n]) * g
            for n in range(width):
                grad_initial[row, n] = carry[n]

    IMPORT_ERROR: str | None = None
except ImportError as error:  # pragma: no cover - depends on the environment
    IMPORT_ERROR = f"numba could not be imported ({error})"


def available() -> str | None:
    """None when the compiled kernel can run, else the reason it cannot."""
    return IMPORT_ERROR


def scan_compiled_raw(
    a: Tensor, b: Tensor, initial: Tensor | None, reverse: bool, out: Tensor | None = None
) -> Tensor:
    """The compiled scan without autograd: CPU tensors ``(B, T, N)``, ``initial (B, N)``.

    ``out``: a contiguous ``(B, T, N)`` tensor to write into (saves the page faults of a fresh
    allocation, which cost as much as the scan itself at 268 MB).
    """
    if IMPORT_ERROR is not None:
        raise RuntimeError(f"the compiled CPU scan is unavailable: {IMPORT_ERROR}")
    if a.device.type != "cpu" or b.device.type != "cpu":
        raise ValueError(f"the compiled CPU scan needs CPU tensors, got {b.device}")
    a = a.detach().expand_as(b).contiguous()
    b = b.detach().contiguous()
    if initial is None:
        initial = torch.zeros_like(b[:, 0])
    initial = initial.detach().to(b.dtype).contiguous()
    output = torch.empty_like(b) if out is None else out
    if not output.is_contiguous() or output.shape != b.shape or output.dtype != b.dtype:
        raise ValueError(f"out must be a contiguous {b.dtype} tensor of shape {tuple(b.shape)}")
    arrays = (a.numpy(), b.numpy(), initial.numpy(), output.numpy(), reverse)
    threads = numba.get_num_threads()
    if b.numel() < PARALLEL_MIN_ELEMENTS or threads == 1:
        _scan_serial(*arrays)
    else:
        blocks = 1 if b.shape[0] >= threads else -(-threads // b.shape[0])  # whole rows if enough
        _scan_parallel(*arrays, blocks)
    return output


def scan_compiled_backward(
    a: Tensor, h: Tensor, initial: Tensor, grad_h: Tensor, reverse: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of a, b and the initial state in one compiled pass (see ``autograd.py``)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, h.dtype), grad_h.dtype)
    grad_b = torch.empty(h.shape, dtype=dtype)
    grad_a = torch.empty_like(grad_b)
    grad_initial = torch.empty(initial.shape, dtype=dtype)
    arrays = [t.detach().to(dtype).contiguous().numpy() for t in (a, h, initial, grad_h)]
    _backward_kernel(*arrays, grad_a.numpy(), grad_b.numpy(), grad_initial.numpy(), reverse)
    return grad_a, grad_b, grad_initial


def warm_up() -> None:
    """Compile (or load from cache) the kernel for the common dtypes."""
    for dtype in (np.float32, np.float64, np.complex64, np.complex128):
        array = np.zeros((1, 2, 1), dtype=dtype)
        arrays = (array, array, np.zeros((1, 1), dtype=dtype), np.empty_like(array), False)
        _scan_serial(*arrays)
        _scan_parallel(*arrays, 1)
