"""The per-step matrix product of the fused kernels, compiled with Numba: ``left @ right.T``.

Why not BLAS (``np.dot`` in Numba calls OpenBLAS): the fused kernels split the batch over
threads, one block of rows per core running the whole time loop, and concurrent OpenBLAS calls
from two threads measured slower than one (B=32, K=256, N=1024: 93 ms against 66 ms for 256
products), while OpenBLAS's own threads gave nothing at these sizes. This loop reads each row
of ``right`` once for four rows of ``left`` and reduces along contiguous memory, which LLVM
vectorizes with fastmath: 95 ms on one thread and 48 ms on two for the same products, 24 and
12 ms at B=8, K=128, N=512 (OpenBLAS: 32 ms). Import only where Numba imports.
"""

from __future__ import annotations

import numba

COMPILED = {
    "cache": True,
    "nogil": True,
    "boundscheck": False,
    "fastmath": True,
    "error_model": "numpy",
}


@numba.njit(**COMPILED)  # type: ignore[call-overload]
def matmul_transposed(left, right, out):  # pragma: no cover - compiled
    """``out (B, N) = left (B, K) @ right (N, K).T``; all C-contiguous, ``out`` not aliased."""
    rows, inner = left.shape
    columns = right.shape[0]
    zero = left.dtype.type(0)
    row = 0
    while row + 4 <= rows:
        first, second, third, fourth = left[row], left[row + 1], left[row + 2], left[row + 3]
        for column in range(columns):
            weights = right[column]
            sum_first = sum_second = sum_third = sum_fourth = zero
            for k in range(inner):
                weight = weights[k]
                sum_first += first[k] * weight
                sum_second += second[k] * weight
                sum_third += third[k] * weight
                sum_fourth += fourth[k] * weight
            out[row, column] = sum_first
            out[row + 1, column] = sum_second
            out[row + 2, column] = sum_third
            out[row + 3, column] = sum_fourth
        row += 4
    while row < rows:
        values = left[row]
        for column in range(columns):
            weights = right[column]
            total = zero
            for k in range(inner):
                total += values[k] * weights[k]
            out[row, column] = total
        row += 1
