"""Titans: the chunked scan (dual form, chunk 16) against the sequential reference, forward +
backward, B = 32, hidden 64, one thread, best of 3 (BENCHMARKS.md "Memory cells")."""

import time

import torch

from rnnkit.nn import Recurrent

BATCH, HIDDEN, CHUNK = 32, 64, 16


def seconds(layer: Recurrent, inputs: torch.Tensor, repeats: int = 3) -> float:
    """The best forward + backward time of ``layer`` on ``inputs`` after one warm-up call."""
    times = []
    for repeat in range(repeats + 1):
        started = time.perf_counter()
        outputs, _ = layer(inputs)
        outputs.sum().backward()
        if repeat:
            times.append(time.perf_counter() - started)
    return min(times)


torch.set_num_threads(1)
for steps in (64, 256):
    for depth in (1, 2):
        inputs = torch.randn(BATCH, steps, HIDDEN, requires_grad=True)
        times = {}
        for strategy in ("sequential", "scan"):
            torch.manual_seed(0)
            layer = Recurrent(
                "titans", HIDDEN, HIDDEN, strategy=strategy, memory_depth=depth, chunk_size=CHUNK
            )
            times[strategy] = seconds(layer, inputs)
        print(
            f"T={steps} memory_depth={depth}: sequential {times['sequential']:.3f} s, "
            f"scan {times['scan']:.3f} s, {times['sequential'] / times['scan']:.1f}x"
        )
