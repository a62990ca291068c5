"""Elementwise math for the Numba kernels: ``exp``, ``sigmoid`` and ``tanh`` that vectorize.

libm's scalar ``exp`` and ``tanh`` stop LLVM from vectorizing a channel loop (Numba has no SVML
here), so in float32 ``exp`` is a polynomial with the exponent written into the float's bits
(relative error below 3e-7, inside float32's own rounding of the results); float64 uses
``np.exp``. Import only where Numba imports (the kernels' own ``try`` blocks).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from llvmlite import ir as llvm_ir  # type: ignore[import-untyped]
from numba.extending import intrinsic, overload

# The compile options of the fused kernels. error_model="numpy": no ZeroDivisionError check in
# the divisions, which kept LLVM from vectorizing every loop with a sigmoid (4.5 -> 1.2 ns per
# element); nogil: the row blocks run on threads of their own.
COMPILED: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "boundscheck": False,
    "fastmath": True,
    "error_model": "numpy",
}
INLINE: dict[str, Any] = {**COMPILED, "inline": "always"}


@intrinsic
def _bits_to_float32(typing_context, bits):  # pragma: no cover - compiled
    def codegen(context, builder, signature, arguments):
        return builder.bitcast(arguments[0], llvm_ir.FloatType())

    return numba.types.float32(numba.types.int32), codegen


@numba.njit(inline="always", fastmath=True)
def _exp32(value):  # pragma: no cover - compiled
    # exp(x) = 2^k exp(r), |r| <= ln2 / 2: a degree-6 polynomial (relative error < 3e-7)
    # and the exponent written into the float's bits, so the loops vectorize
    value = min(max(value, np.float32(-87.0)), np.float32(88.0))
    k = np.floor(value * np.float32(1.4426950408889634) + np.float32(0.5))
    r = value - k * np.float32(0.693145751953125) - k * np.float32(1.428606765330187e-06)
    p = np.float32(1 / 720) * r + np.float32(1 / 120)
    p = (
        (((p * r + np.float32(1 / 24)) * r + np.float32(1 / 6)) * r + np.float32(0.5)) * r
        + np.float32(1.0)
    ) * r + np.float32(1.0)
    return p * _bits_to_float32((np.int32(k) + np.int32(127)) << np.int32(23))


def exp(value):  # pragma: no cover - replaced by the overload below
    """``exp(value)``, vectorizable in float32 (compiled code only)."""
    raise NotImplementedError


@overload(exp, inline="always")
def _exp_overload(value):  # pragma: no cover - compiled
    if value == numba.types.float32:
        return lambda value: _exp32(value)
    return lambda value: np.exp(value)


@numba.njit(inline="always")
def sigmoid(value, one):  # pragma: no cover - compiled
    """``1 / (1 + exp(-value))``; ``one`` is 1 in the dtype of the loop."""
    return one / (one + exp(-value))


@numba.njit(inline="always")
def tanh(value, one):  # pragma: no cover - compiled
    """``tanh(value)`` through ``exp``: libm's scalar tanh measured 5x slower than exp here."""
    decay = exp(-(one + one) * abs(value))
    magnitude = (one - decay) / (one + decay)
    return magnitude if value >= 0 else -magnitude


@numba.njit(inline="always")
def copy_row(source, target):  # pragma: no cover - compiled
    """``target[:] = source`` for 1-D arrays of one length, as a loop: Numba's slice assignment
    took 1.05 us per row of 1,024 floats against 0.54 us for this loop (into a (16, 256, 1024)
    array, one thread)."""
    for j in range(target.shape[0]):
        target[j] = source[j]
