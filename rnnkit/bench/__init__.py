"""Benchmarks behind BENCHMARKS.md: ``rnnkit bench NAME [options]``.

Each benchmark measures rnnkit against torch.nn and the sequential reference in the same run
and prints ratios; nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse

from rnnkit.bench import layers, library, newton, scan, tasks
from rnnkit.memory import keep_freed_memory

BENCHMARKS = {
    "layers": layers,
    "scan": scan,
    "newton": newton,
    "library": library,
    "tasks": tasks,
}


def main(argv: list[str]) -> int:
    """Run the benchmark named by ``argv[0]`` with the rest of ``argv`` as its options."""
    parser = argparse.ArgumentParser(prog="rnnkit bench", description=__doc__)
    subparsers = parser.add_subparsers(dest="benchmark", required=True)
    for name, module in BENCHMARKS.items():
        assert module.__doc__, f"benchmark {name}: its module docstring is its help"
        module.add_arguments(subparsers.add_parser(name, help=module.__doc__.splitlines()[0]))
    arguments = parser.parse_args(argv)
    print(f"allocator: {keep_freed_memory()}")
    return BENCHMARKS[arguments.benchmark].run(arguments)
