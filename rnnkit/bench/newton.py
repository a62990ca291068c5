"""Newton: nonlinear cells trained parallel in time against the sequential reference.

Forward+backward time of ``sequential`` and ``newton`` for the diagonal GRU (ParaGRU) at batch 8,
hidden 64 over several lengths, with the Newton iterations used and the final residual; the
same for the dense GRU at a small hidden size; next to torch.nn.GRU and torch.nn.LSTM at the same
size (their fused kernels), all measured in one run.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from rnnkit.bench.timing import median_seconds
from rnnkit.nn import Recurrent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", nargs="+", type=int, default=[1024, 4096, 16384, 65536])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument(
        "--dense-hidden",
        type=int,
        default=8,
        help="hidden size of the dense GRU row (its Jacobian is H x H)",
    )
    parser.add_argument("--dense-steps", nargs="+", type=int, default=[1024, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--skip-sequential-above",
        type=int,
        default=65536,
        help="skip the sequential reference above this many steps",
    )


def run(arguments: argparse.Namespace) -> int:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU")
    print(f"forward+backward seconds, median of {arguments.repeats}; batch {arguments.batch}\n")
    header = (
        f"{'cell':<10} {'H':>4} {'T':>7} {'sequential':>11} {'newton':>8} {'speed-up':>9} "
        f"{'iters':>6} {'residual':>9} {'nn.GRU':>8} {'nn.LSTM':>8}"
    )
    print(header)
    print("-" * len(header))
    for steps in arguments.steps:
        _row("paragru", arguments.hidden, steps, arguments)
    for steps in arguments.dense_steps:
        _row("gru", arguments.dense_hidden, steps, arguments)
    return 0


def _row(cell: str, hidden: int, steps: int, arguments: argparse.Namespace) -> None:
    torch.manual_seed(0)
    inputs = torch.randn(arguments.batch, steps, hidden, requires_grad=True)
    newton = Recurrent(cell, hidden, hidden, strategy="newton")
    layers: dict[str, nn.Module] = {"newton": newton}
    if steps <= arguments.skip_sequential_above:
        layers["sequential"] = Recurrent(cell, hidden, hidden, strategy="sequential")
        layers["sequential"].load_state_dict(newton.state_dict())
    layers["nn.GRU"] = nn.GRU(hidden, hidden, batch_first=True)
    layers["nn.LSTM"] = nn.LSTM(hidden, hidden, batch_first=True)
    times = dict(
        zip(
            layers,
            median_seconds(
                [_training(layer, inputs) for layer in layers.values()], arguments.repeats, warmup=1
            ),
            strict=True,
        )
    )
    report = newton.strategy_reports()[0][-1]
    sequential = times.get("sequential", float("nan"))
    print(
        f"{cell:<10} {hidden:>4} {steps:>7} {sequential:>11.3f} {times['newton']:>8.3f} "
        f"{sequential / times['newton']:>9.1f} {report.iterations:>6} {report.residual:>9.1e} "
        f"{times['nn.GRU']:>8.3f} {times['nn.LSTM']:>8.3f}"
    )


def _training(layer: nn.Module, inputs: torch.Tensor):
    def call() -> None:
        outputs, _ = layer(inputs)
        outputs.sum().backward()

    return call
