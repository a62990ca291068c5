"""Keeping freed memory for reuse: large tensors without page faults.

glibc's malloc hands blocks above its mmap threshold (128 KiB to 32 MiB, adaptive) straight to
the kernel and unmaps them when freed, so every large tensor an operation creates is fresh
memory that faults in page by page. On the machines rnnkit is measured on (2-core virtual
machines), these faults cost more than the arithmetic: a forward+backward of torch.nn.LSTM at
B=8, T=16384, H=64 took 21 s with the default and 0.28 s with freed memory kept (see
BENCHMARKS.md). ``keep_freed_memory`` raises the mmap threshold to 1 GiB and the trim threshold
to 2 GiB - 1 so that freed blocks stay in the heap and are reused.

The command line calls it at start (``RNNKIT_KEEP_FREED_MEMORY=0`` turns that off); a program
using the library calls it itself if it wants it. Resident memory then stays at its peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

MMAP_THRESHOLD = -3  # glibc's M_MMAP_THRESHOLD
TRIM_THRESHOLD = -1  # glibc's M_TRIM_THRESHOLD


def keep_freed_memory() -> str:
    """Apply the setting; returns what was done, for logs (a reason when nothing was)."""
    if os.environ.get("RNNKIT_KEEP_FREED_MEMORY", "1") == "0":
        return "freed memory returned to the system (RNNKIT_KEEP_FREED_MEMORY=0)"
    name = ctypes.util.find_library("c")
    if name is None:
        return "freed memory returned to the system (no C library found)"
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt"):
        return "freed memory returned to the system (the C library has no mallopt)"
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    applied = libc.mallopt(MMAP_THRESHOLD, 1 << 30) and libc.mallopt(TRIM_THRESHOLD, 2**31 - 1)
    if not applied:
        return "freed memory returned to the system (mallopt refused the setting)"
    return "freed memory kept for reuse (glibc mmap threshold 1 GiB)"
