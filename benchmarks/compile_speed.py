"""Compile time and eager vs ``torch.compile`` forward + backward time of a few rnnkit layers.

    python benchmarks/compile_speed.py --batch 16 --steps 256 --size 256 --repeats 20

Per layer: the first compiled call (compile time, forward and backward), then the median of
``--repeats`` timed forward + backward passes eager and compiled, and the speed-up. Run it on a
quiet machine; ``--backend aot_eager`` checks tracing only (no code generation).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from rnnkit.nn import LSTM, Recurrent

LAYERS: dict[str, Callable[[int], torch.nn.Module]] = {
    "nn.LSTM (auto)": lambda size: LSTM(size, size, batch_first=True),
    "lstm/sequential": lambda size: Recurrent("lstm", size, size, strategy="sequential"),
    "lstm/fused": lambda size: Recurrent("lstm", size, size, strategy="fused"),
    "gru/native": lambda size: Recurrent("gru", size, size, strategy="native"),
    "mingru/scan": lambda size: Recurrent("mingru", size, size, strategy="scan"),
    "gla/scan": lambda size: Recurrent("gla", size, size, strategy="scan", num_heads=4),
    "paragru/newton": lambda size: Recurrent("paragru", size, size, strategy="newton"),
}


def step(module: torch.nn.Module, inputs: torch.Tensor) -> None:
    """One forward and backward pass."""
    outputs = module(inputs)
    first = outputs[0] if isinstance(outputs, tuple) else outputs
    first.square().mean().backward()


def median_seconds(module: torch.nn.Module, inputs: torch.Tensor, repeats: int) -> float:
    step(module, inputs)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(module, inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--layers", nargs="*", default=list(LAYERS), choices=list(LAYERS))
    arguments = parser.parse_args()
    print(
        f"batch {arguments.batch}, steps {arguments.steps}, size {arguments.size}, "
        f"backend {arguments.backend}, {torch.get_num_threads()} threads"
    )
    print(f"{'layer':<18} {'compile s':>10} {'eager ms':>10} {'compiled ms':>12} {'speed-up':>9}")
    for name in arguments.layers:
        torch.manual_seed(0)
        module = LAYERS[name](arguments.size)
        inputs = torch.randn(arguments.batch, arguments.steps, arguments.size)
        torch._dynamo.reset()
        compiled = torch.compile(module, fullgraph=True, backend=arguments.backend)
        start = time.perf_counter()
        step(compiled, inputs)
        compile_seconds = time.perf_counter() - start
        eager = median_seconds(module, inputs, arguments.repeats)
        fast = median_seconds(compiled, inputs, arguments.repeats)
        print(
            f"{name:<18} {compile_seconds:>10.1f} {eager * 1e3:>10.2f} {fast * 1e3:>12.2f} "
            f"{eager / fast:>8.2f}x"
        )


if __name__ == "__main__":
    main()
