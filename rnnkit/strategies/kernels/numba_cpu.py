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

from rnnkit.strategies.kernels.workspace import Workspace

CACHE_LINE_FLOATS = 16

# outputs reused across calls once nobody holds them (see workspace.py for why and how)
WORKSPACE = Workspace()

PARALLEL_MIN_ELEMENTS = 1 << 18  # below this, waking the thread team costs more than it saves

try:
    import numba

    @numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
    def _scan_row(a, b, initial, output, reverse, row):  # pragma: no cover - compiled
        # Row and time slices taken outside a channel loop over the full width let LLVM
        # vectorize it: 3-d indexing, or a loop over range(start, stop), measured 3x slower.
        steps, width = b.shape[1], b.shape[2]
        h = initial[row].copy()
        a_row, b_row, output_row = a[row], b[row], output[row]
        for index in range(steps):
            t = steps - 1 - index if reverse else index
            a_t, b_t, output_t = a_row[t], b_row[t], output_row[t]
            for n in range(width):
                value = a_t[n] * h[n] + b_t[n]
                h[n] = value
                output_t[n] = value

    @numba.njit(cache=True, nogil=True, boundscheck=False, inline="always")
    def _scan_block(a, b, initial, output, reverse, row, start, stop):  # pragma: no cover
        steps = b.shape[1]
        h = initial[row].copy()
        a_row, b_row, output_row = a[row], b[row], output[row]
        for index in range(steps):
            t = steps - 1 - index if reverse else index
            a_t, b_t, output_t = a_row[t], b_row[t], output_row[t]
            for n in range(start, stop):
                value = a_t[n] * h[n] + b_t[n]
                h[n] = value
                output_t[n] = value

    @numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _scan_rows_parallel(a, b, initial, output, reverse):  # pragma: no cover - compiled
        for row in numba.prange(b.shape[0]):
            _scan_row(a, b, initial, output, reverse, row)

    @numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _scan_blocks_parallel(a, b, initial, output, reverse, blocks):  # pragma: no cover
        # Fewer rows than cores: each row split into cache-line aligned channel blocks.
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
            _scan_row(a, b, initial, output, reverse, row)

    @numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False)
    def _backward_kernel(a, h, initial, grad_h, grad_a, grad_b, grad_initial, reverse):
        # pragma: no cover - compiled; one pass in the opposite direction of the forward scan
        batch, steps, width = h.shape
        for row in numba.prange(batch):
            carry = np.zeros(width, dtype=grad_b.dtype)  # conj(a_next) * g_next
            a_row, h_row, grad_h_row = a[row], h[row], grad_h[row]
            grad_a_row, grad_b_row = grad_a[row], grad_b[row]
            for index in range(steps):
                t = index if reverse else steps - 1 - index
                before = t + 1 if reverse else t - 1  # the state h_t was computed from
                previous = initial[row] if before < 0 or before >= steps else h_row[before]
                a_t, grad_h_t = a_row[t], grad_h_row[t]
                grad_a_t, grad_b_t = grad_a_row[t], grad_b_row[t]
                for n in range(width):
                    g = grad_h_t[n] + carry[n]
                    grad_b_t[n] = g
                    grad_a_t[n] = g * np.conj(previous[n])
                    carry[n] = np.conj(a_t[n]) * g
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
    output = WORKSPACE.take("states", tuple(b.shape), b.dtype) if out is None else out
    if not output.is_contiguous() or output.shape != b.shape or output.dtype != b.dtype:
        raise ValueError(f"out must be a contiguous {b.dtype} tensor of shape {tuple(b.shape)}")
    arrays = (a.numpy(), b.numpy(), initial.numpy(), output.numpy(), reverse)
    threads = numba.get_num_threads()
    if b.numel() < PARALLEL_MIN_ELEMENTS or threads == 1:
        _scan_serial(*arrays)
    elif b.shape[0] >= threads:
        _scan_rows_parallel(*arrays)
    else:
        _scan_blocks_parallel(*arrays, -(-threads // b.shape[0]))
    return output


def scan_compiled_backward(
    a: Tensor, h: Tensor, initial: Tensor, grad_h: Tensor, reverse: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of a, b and the initial state in one compiled pass (see ``autograd.py``)."""
    dtype = torch.promote_types(torch.promote_types(a.dtype, h.dtype), grad_h.dtype)
    grad_b = WORKSPACE.take("d b", tuple(h.shape), dtype)
    grad_a = WORKSPACE.take("d a", tuple(h.shape), dtype)
    grad_initial = torch.empty(initial.shape, dtype=dtype)
    tensors = (a, h, initial, grad_h)
    arrays = [
        t.detach().to(dtype).resolve_conj().resolve_neg().contiguous().numpy() for t in tensors
    ]
    _backward_kernel(*arrays, grad_a.numpy(), grad_b.numpy(), grad_initial.numpy(), reverse)  # type: ignore[call-arg]
    return grad_a, grad_b, grad_initial


def warm_up() -> None:
    """Compile (or load from cache) the kernel for the common dtypes."""
    for dtype in (np.float32, np.float64, np.complex64, np.complex128):
        array = np.zeros((1, 2, 1), dtype=dtype)
        arrays = (array, array, np.zeros((1, 1), dtype=dtype), np.empty_like(array), False)
        _scan_serial(*arrays)
        _scan_rows_parallel(*arrays)
        _scan_blocks_parallel(*arrays, 1)
