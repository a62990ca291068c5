"""Context parallelism's throughput against sequence length: one process running ``scan`` (or
``newton`` for a nonlinear cell such as paragru) over the whole sequence against ``--ranks``
gloo processes on the CPU, each running ``ContextParallel`` (``ContextParallelNewton``) on its
chunk of the time axis.

    python benchmarks/context_parallel_speed.py [--cells mingru gla deltanet]
        [--lengths 1024 4096 16384] [--batch 8] [--hidden 128] [--repeats 3] [--ranks 2]

Prints, per cell and length, the forward+backward time (the slowest rank's, best of
``--repeats``) and tokens per second (batch * length / time) of both, and their ratio. Each
process gets ``torch.get_num_threads() // ranks`` threads, so both runs use the same cores.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time

import torch
import torch.distributed as dist

from rnnkit.cells import make_cell
from rnnkit.strategies import STRATEGIES
from rnnkit.strategies.context_parallel import ContextParallel
from rnnkit.strategies.context_parallel_newton import ContextParallelNewton

OPTIONS = {
    "gla": {"num_heads": 4},
    "deltanet": {"num_heads": 4},
    "gated_deltanet": {"num_heads": 4},
}


def seconds(arguments: argparse.Namespace, cell_name: str, length: int, rank: int, ranks: int):
    """Best forward+backward time of this rank's chunk (the whole sequence when ``ranks`` is 1)."""
    torch.manual_seed(0)
    cell = make_cell(cell_name, arguments.hidden, arguments.hidden, **OPTIONS.get(cell_name, {}))
    steps = length // ranks + (rank < length % ranks)
    inputs = torch.randn(arguments.batch, steps, arguments.hidden, requires_grad=True)
    if cell.is_linear:
        strategy = ContextParallel() if ranks > 1 else STRATEGIES["scan"]
    else:  # nonlinear cells: Newton's method
        strategy = ContextParallelNewton() if ranks > 1 else STRATEGIES["newton"].create()
    best = float("inf")
    for repeat in range(arguments.repeats + 1):  # the first, untimed, warms up
        if ranks > 1:
            dist.barrier()
        start = time.perf_counter()
        outputs, _ = strategy(cell, inputs)
        outputs.square().mean().backward()
        elapsed = torch.tensor(time.perf_counter() - start)
        if ranks > 1:
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
        best = best if repeat == 0 else min(best, float(elapsed))
    return best


def run_rank(rank: int, ranks: int, rendezvous: str, arguments, results) -> None:
    torch.set_num_threads(max(1, arguments.threads // ranks))
    if ranks > 1:
        dist.init_process_group(
            "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=ranks
        )
    for cell_name in arguments.cells:
        for length in arguments.lengths:
            elapsed = seconds(arguments, cell_name, length, rank, ranks)
            if rank == 0:
                results[(cell_name, length, ranks)] = elapsed
    if ranks > 1:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", nargs="+", default=["mingru", "gla", "deltanet"])
    parser.add_argument("--lengths", nargs="+", type=int, default=[1024, 4096, 16384])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    arguments = parser.parse_args()
    arguments.threads = torch.get_num_threads()
    context = multiprocessing.get_context("spawn")
    results = context.Manager().dict()
    for ranks in (1, arguments.ranks):
        with tempfile.TemporaryDirectory() as directory:
            rendezvous = os.path.join(directory, "rendezvous")
            processes = [
                context.Process(target=run_rank, args=(rank, ranks, rendezvous, arguments, results))
                for rank in range(ranks)
            ]
            for process in processes:
                process.start()
            for process in processes:
                process.join()
    print(f"batch {arguments.batch}, hidden {arguments.hidden}, {arguments.threads} threads")
    for cell_name in arguments.cells:
        for length in arguments.lengths:
            single, split = (
                results[(cell_name, length, 1)],
                results[(cell_name, length, arguments.ranks)],
            )
            tokens = arguments.batch * length
            print(
                f"{cell_name} T={length}: 1 process {single:.3f} s ({tokens / single:.0f} tok/s), "
                f"{arguments.ranks} ranks {split:.3f} s ({tokens / split:.0f} tok/s), "
                f"speed-up {single / split:.2f}x"
            )


if __name__ == "__main__":
    main()
