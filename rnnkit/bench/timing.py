"""Wall-clock timing: warm-up, then the median of repeated calls, interleaved across the
functions compared so that drift in the machine's speed hits them all alike."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence


def median_seconds(
    functions: Sequence[Callable[[], object]], repeats: int, warmup: int = 2
) -> list[float]:
    """Median wall-clock seconds of each function over ``repeats`` interleaved rounds."""
    for function in functions:
        for _ in range(warmup):
            function()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for function, record in zip(functions, times, strict=True):
            start = time.perf_counter()
            function()
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]
