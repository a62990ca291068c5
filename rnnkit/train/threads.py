"""Thread counts a run sets, and putting them back: a library call leaves the process as it
found it.

A run's ``trainer.threads`` (when not 0) sets torch's intra-op threads and bounds Numba's pool
(the compiled kernels run there). ``threads_restored`` puts both back on exit; Numba is read
and restored only when it is already imported, so nothing starts its pool for no reason.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

Function = TypeVar("Function", bound=Callable[..., Any])


def set_threads(threads: int) -> None:
    """torch's threads and Numba's pool bounded by ``threads`` (0: leave both as they are)."""
    if not threads:
        return
    torch.set_num_threads(threads)
    with contextlib.suppress(ImportError):
        _set_numba_threads(threads)


@contextlib.contextmanager
def threads_restored() -> Iterator[None]:
    """Run the block, then restore torch's and Numba's thread counts as they were."""
    previous_threads = torch.get_num_threads()
    previous_numba_threads = _numba_threads()
    try:
        yield
    finally:
        torch.set_num_threads(previous_threads)
        numba = sys.modules.get("numba")
        if numba is not None:  # imported before or during the block: leave it as it was
            _set_numba_threads(previous_numba_threads or numba.config.NUMBA_NUM_THREADS)


def restoring_threads(function: Function) -> Function:
    """``function`` run inside ``threads_restored`` (for each task's ``evaluate_run``)."""

    @functools.wraps(function)
    def wrapper(*arguments: Any, **keywords: Any) -> Any:
        with threads_restored():
            return function(*arguments, **keywords)

    return wrapper  # type: ignore[return-value]


def _numba_threads() -> int | None:
    """Numba's thread count (None without numba), read only when numba is already imported:
    reading it otherwise would import numba and start its thread pool for nothing."""
    numba = sys.modules.get("numba")
    return None if numba is None else int(numba.get_num_threads())


def _set_numba_threads(threads: int) -> None:
    import numba

    # set_num_threads refuses more than the pool it started with (NUMBA_NUM_THREADS).
    # numba.config sets its attributes from the environment at import, unseen by mypy.
    pool = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
    numba.set_num_threads(max(1, min(threads, pool)))
