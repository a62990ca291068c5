"""Tensors to and from the fused kernels' numpy arrays."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from rnnkit.strategies.kernels.workspace import Workspace


def as_array(tensor: Tensor | None, dimensions: int, dtype: torch.dtype) -> np.ndarray:
    """A contiguous numpy view of ``tensor``, or for None a one-element placeholder of
    ``dimensions`` dimensions that the kernel never reads (its flag says the role is absent)."""
    if tensor is None:
        return np.zeros((1,) * dimensions, dtype=numpy_dtype(dtype))
    return tensor.detach().contiguous().numpy()


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return torch.empty(0, dtype=dtype).numpy().dtype


# the per-step buffers a kernel saves for its backward pass, reused once nobody holds them
# (fresh pages for 100 MB of saved steps cost as much as the loop; see workspace.py)
WORKSPACE = Workspace()


def empty(*shape: int, like: Tensor, role: str | None = None) -> Tensor:
    """An uninitialized CPU tensor of ``shape`` in the dtype of ``like``; with ``role``, taken
    from the fused kernels' workspace (for buffers as large as the sequence)."""
    if role is None:
        return torch.empty(shape, dtype=like.dtype)
    return WORKSPACE.take(role, shape, like.dtype)


def zoneout_mode(zoneout: tuple[Tensor, ...] | None) -> int:
    """0 without zoneout, 1 for its evaluation-mode expectation ``(1, B, size)``, 2 for masks
    per step ``(T, B, size)`` (a one-step mask reads the same either way)."""
    if zoneout is None:
        return 0
    return 2 if zoneout[0].shape[0] > 1 else 1


def resets_array(resets: Tensor | None) -> np.ndarray:
    """``resets (B, T)`` as uint8, or a placeholder the kernel never reads."""
    if resets is None:
        return np.zeros((1, 1), dtype=np.uint8)
    return resets.detach().to(device="cpu", dtype=torch.uint8).contiguous().numpy()


def rows_array(
    tensor: Tensor | None, chunk: slice, dimensions: int, dtype: torch.dtype, axis: int = 0
) -> np.ndarray:
    """The batch rows ``chunk`` of ``tensor`` (batch along ``axis``) as a contiguous numpy
    array, or the placeholder for None."""
    if tensor is None:
        return as_array(None, dimensions, dtype)
    index = (slice(None),) * axis + (chunk,)
    return tensor.detach()[index].contiguous().numpy()


def row_chunks(batch_size: int) -> list[slice]:
    """The batch split into one contiguous block of rows per thread torch may use.

    Rows are independent, so each block runs the whole time loop on its own thread with no
    synchronization per step (``compiled_matmul.py`` gives the measurements)."""
    count = max(1, min(torch.get_num_threads(), batch_size))
    bounds = [batch_size * index // count for index in range(count + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:], strict=False)]


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _thread_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(thread_name_prefix="rnnkit-fused")
        return _pool


def for_each_chunk(work: Callable[[int, slice], None], chunks: list[slice]) -> None:
    """``work(index, rows)`` for every chunk, in parallel threads (the compiled kernels release
    the GIL and call no BLAS, so the threads do not contend)."""
    if len(chunks) == 1:
        work(0, chunks[0])
        return
    pending = [_thread_pool().submit(work, index, rows) for index, rows in enumerate(chunks[1:], 1)]
    work(0, chunks[0])
    for future in pending:
        future.result()
