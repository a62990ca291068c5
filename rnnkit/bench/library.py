"""Library speed: what a plain script gets, with and without the CLI's allocator setting.

A user's program imports rnnkit and calls a layer; it does not call
``rnnkit.memory.keep_freed_memory`` (and rnnkit does not change the process's allocator for
it). Each configuration runs in a fresh Python process twice, once as a plain script
(``RNNKIT_KEEP_FREED_MEMORY=0``) and once with the CLI's setting (``=1``), and prints the
forward+backward time of the rnnkit layer, of the torch.nn layer it is compared with (both in
that same process) and their ratio (torch time / rnnkit time: 2.00 = rnnkit twice as fast).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from torch import nn

import rnnkit.nn
from rnnkit.bench.timing import median_seconds

# name: (rnnkit cell, strategy, torch.nn class, batch, steps, features, hidden, target ratio)
CONFIGURATIONS = {
    "paragru-newton": ("paragru", "newton", nn.LSTM, 8, 16384, 64, 64, 1.5),
    "mingru-scan": ("mingru", "scan", nn.GRU, 8, 4096, 64, 64, 12.0),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configurations", nargs="+", default=list(CONFIGURATIONS), choices=list(CONFIGURATIONS)
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")


def measure(name: str, repeats: int) -> dict[str, float]:
    """Forward+backward seconds of the rnnkit layer and of torch.nn in this process (float32)."""
    cell, strategy, torch_class, batch, steps, features, hidden, _ = CONFIGURATIONS[name]
    torch.manual_seed(0)
    inputs = torch.randn(batch, steps, features, requires_grad=True)
    layers = [
        rnnkit.nn.Recurrent(cell, features, hidden, strategy=strategy),
        torch_class(features, hidden, batch_first=True),
    ]

    def training(layer: nn.Module):
        def call() -> None:
            outputs, _ = layer(inputs)
            outputs.sum().backward()

        return call

    rnnkit_seconds, torch_seconds = median_seconds([training(layer) for layer in layers], repeats)
    return {"rnnkit_s": rnnkit_seconds, "torch_s": torch_seconds}


def run(arguments: argparse.Namespace) -> int:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, fwd+bwd")
    print("each row a fresh process; ratio = torch.nn time / rnnkit time (same process)\n")
    header = f"{'configuration':<16} {'setting':<8} {'rnnkit s':>9} {'torch s':>9} {'ratio':>6}"
    print(header + f" {'target':>7}")
    print("-" * (len(header) + 8))
    for name in arguments.configurations:
        for setting in ("0", "1"):
            result = _in_fresh_process(name, setting, arguments.repeats)
            ratio = result["torch_s"] / result["rnnkit_s"]
            label = "on" if setting == "1" else "off"
            print(
                f"{name:<16} {label:<8} {result['rnnkit_s']:>9.3f} {result['torch_s']:>9.3f} "
                f"{ratio:>6.2f} {CONFIGURATIONS[name][-1]:>6.1f}x"
            )
    return 0


def _in_fresh_process(name: str, setting: str, repeats: int) -> dict[str, float]:
    environment = dict(os.environ, RNNKIT_KEEP_FREED_MEMORY=setting)
    command = [sys.executable, "-m", "rnnkit.bench.library", name, str(repeats)]
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"{name} (setting {setting}) failed:\n{completed.stderr}")
    return json.loads(completed.stdout.splitlines()[-1])


if __name__ == "__main__":
    # the worker: a plain script unless RNNKIT_KEEP_FREED_MEMORY=1 asks for the CLI's setting
    if os.environ.get("RNNKIT_KEEP_FREED_MEMORY") == "1":
        from rnnkit.memory import keep_freed_memory

        keep_freed_memory()
    print(json.dumps(measure(sys.argv[1], int(sys.argv[2]))))
