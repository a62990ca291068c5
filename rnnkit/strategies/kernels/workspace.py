"""Output buffers a kernel reuses across calls instead of allocating fresh large tensors.

Why: glibc serves blocks above its mmap threshold (at most 32 MiB by default) with fresh pages
from the kernel and unmaps them on free, so a kernel that allocates a 100 MiB output on every
call page-faults through all of it every call; in a plain script (no ``rnnkit.memory`` setting)
that measured as slow as the arithmetic. A ``Workspace`` keeps, per role, at most ``slots``
buffers and hands out a fresh *view* of one whose storage nobody else holds: every tensor a
caller keeps (the view, its own views, autograd's saved tensors, numpy arrays over it) shares
that storage and raises its use count, so a buffer still in use is never handed out again.
Two slots per role cover an iteration that keeps the previous result while computing the next.
Memory held: at most ``slots`` buffers per role, the most recent shapes; ``release()`` frees them.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor


def _use_count(tensor: Tensor) -> int:
    return torch._C._storage_Use_Count(tensor.untyped_storage()._cdata)


# the count of a storage held by one tensor, measured the same way (the Python storage object
# that ``untyped_storage()`` creates holds a reference too)
_ALONE = _use_count(torch.empty(1))


def _unshared(buffer: Tensor) -> bool:
    """Only the workspace's own tensor refers to this storage."""
    return _use_count(buffer) <= _ALONE


class Workspace:
    """Reusable output buffers by role (``take("next_states", shape, dtype)``)."""

    def __init__(self, slots: int = 2) -> None:
        self.slots = slots
        self._buffers: dict[str, list[Tensor]] = {}
        self._lock = threading.Lock()  # two threads must not be handed the same free buffer

    def take(self, role: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """An uninitialized contiguous CPU tensor ``shape``, reused when one is free."""
        shape = tuple(shape)
        with self._lock:
            buffers = self._buffers.setdefault(role, [])
            for buffer in buffers:
                if tuple(buffer.shape) == shape and buffer.dtype == dtype and _unshared(buffer):
                    return buffer.view(shape)
            buffer = torch.empty(shape, dtype=dtype)
            buffers.append(buffer)
            if len(buffers) > self.slots:
                buffers.pop(0)  # the oldest; a caller still holding it keeps it alive
            return buffer.view(shape)

    def release(self) -> None:
        """Drop every buffer (callers' tensors stay valid)."""
        self._buffers.clear()
