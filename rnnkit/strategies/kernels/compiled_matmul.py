"""The per-step matrix product of the fused kernels, compiled with Numba: ``left @ right.T``.

Why not BLAS (``np.dot`` in Numba calls OpenBLAS): the fused kernels split the batch over
threads, one block of rows per core running the whole time loop, and concurrent OpenBLAS calls
from two threads measured slower than one (B=32, K=256, N=1024: 93 ms against 66 ms for 256
products), while OpenBLAS's own threads gave nothing at these sizes. This loop reads each row
of ``right`` once for four rows of ``left`` and reduces along contiguous memory, which LLVM
vectorizes with fastmath; blocks of four rows by two weight rows: 68 ms on one thread and 35 ms
on two for the same products, 16 and 8 ms at B=8, K=128, N=512 (OpenBLAS: 32 ms). Import only
where Numba imports.
"""

from __future__ import annotations

import numba

from rnnkit.strategies.kernels.compiled_math import COMPILED, INLINE


@numba.njit(**COMPILED)  # type: ignore[call-overload]
def matmul_transposed(left, right, out):  # pragma: no cover - compiled
    """``out (B, N) = left (B, K) @ right (N, K).T``; all C-contiguous, ``out`` not aliased.

    Blocks of four rows of ``left`` by two rows of ``right``: eight running sums per pass
    over ``K`` (fits the 16 vector registers of AVX2 with the six loads), then the remainders.
    """
    rows, columns = left.shape[0], right.shape[0]
    row = 0
    while row + 4 <= rows:
        column = 0
        while column + 2 <= columns:
            _block_four_by_two(left, right, out, row, column)
            column += 2
        if column < columns:
            _block_four_by_one(left, right, out, row, column)
        row += 4
    while row < rows:
        for column in range(columns):
            out[row, column] = _dot(left[row], right[column])
        row += 1


@numba.njit(**INLINE)  # type: ignore[call-overload]
def _block_four_by_two(left, right, out, row, column):  # pragma: no cover - compiled
    first, second, third, fourth = left[row], left[row + 1], left[row + 2], left[row + 3]
    weights_a, weights_b = right[column], right[column + 1]
    zero = left.dtype.type(0)
    first_a = second_a = third_a = fourth_a = zero
    first_b = second_b = third_b = fourth_b = zero
    for k in range(left.shape[1]):
        weight_a, weight_b = weights_a[k], weights_b[k]
        value_first, value_second = first[k], second[k]
        value_third, value_fourth = third[k], fourth[k]
        first_a += value_first * weight_a
        second_a += value_second * weight_a
        third_a += value_third * weight_a
        fourth_a += value_fourth * weight_a
        first_b += value_first * weight_b
        second_b += value_second * weight_b
        third_b += value_third * weight_b
        fourth_b += value_fourth * weight_b
    out[row, column], out[row, column + 1] = first_a, first_b
    out[row + 1, column], out[row + 1, column + 1] = second_a, second_b
    out[row + 2, column], out[row + 2, column + 1] = third_a, third_b
    out[row + 3, column], out[row + 3, column + 1] = fourth_a, fourth_b


@numba.njit(**INLINE)  # type: ignore[call-overload]
def _block_four_by_one(left, right, out, row, column):  # pragma: no cover - compiled
    for offset in range(4):
        out[row + offset, column] = _dot(left[row + offset], right[column])


@numba.njit(**INLINE)  # type: ignore[call-overload]
def _dot(values, weights):  # pragma: no cover - compiled
    total = values.dtype.type(0)
    for k in range(values.shape[0]):
        total += values[k] * weights[k]
    return total
