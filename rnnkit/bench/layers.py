"""Layers: torch.nn against rnnkit's strategies, forward and backward.

For each cell and size, times forward (no autograd) and forward+backward (training) of
torch.nn, ``rnnkit.nn`` with strategy ``native``, ``sequential`` and ``fused``, and for the LSTM
its layer-normalized and peephole variants (``sequential`` and ``fused``), zoneout 0.1 with
DropConnect 0.2 (``fused``; regularization is active in training, so that row's forward is in
training mode too) and the sLSTM (``sequential`` and ``fused``, against torch.nn.LSTM), all
measured in one run and printed as ratios to torch.nn (1.00 = as fast
as torch.nn; 2.00 = twice its time).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import rnnkit.nn
from rnnkit.bench.timing import median_seconds

DEFAULT_SIZES = ["32x256x128x256", "8x1024x64x128"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sizes",
        nargs="+",
        default=DEFAULT_SIZES,
        metavar="BxTxDxH",
        help="batch x time x input features x hidden size (default: %(default)s)",
    )
    parser.add_argument("--cells", nargs="+", default=["lstm", "gru"], choices=["lstm", "gru"])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")


def run(arguments: argparse.Namespace) -> int:
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU")
    print(f"median of {arguments.repeats} calls; ratio = time / torch.nn time\n")
    header = f"{'cell':<5} {'B x T x D x H':<16} {'layer':<26} {'forward s':>10} {'ratio':>6}"
    header += f" {'fwd+bwd s':>10} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for size in arguments.sizes:
        batch, steps, features, hidden = _parse_size(size)
        for cell in arguments.cells:
            inputs = torch.randn(batch, steps, features)
            rows = _measure(cell, inputs, hidden, arguments.repeats)
            reference_forward, reference_training = rows[0][1], rows[0][2]
            for name, forward, training in rows:
                print(
                    f"{cell:<5} {size:<16} {name:<26} {forward:>10.4f} "
                    f"{forward / reference_forward:>6.2f} {training:>10.4f} "
                    f"{training / reference_training:>6.2f}"
                )
    return 0


def _layers(cell: str, features: int, hidden: int) -> list[tuple[str, nn.Module]]:
    """The rows of one cell: torch.nn first (the ratios' denominator)."""
    torch_class = {"lstm": nn.LSTM, "gru": nn.GRU}[cell]
    rnnkit_class = {"lstm": rnnkit.nn.LSTM, "gru": rnnkit.nn.GRU}[cell]
    layers: list[tuple[str, nn.Module]] = [
        ("torch.nn", torch_class(features, hidden, batch_first=True)),
        *[
            (f"rnnkit {name}", rnnkit_class(features, hidden, batch_first=True, strategy=name))
            for name in ("native", "sequential", "fused")
        ],
    ]
    if cell == "lstm":
        variants: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
            ("layer-norm", {"layer_norm": True}, ("sequential", "fused")),
            ("peephole", {"peephole": True}, ("sequential", "fused")),
            ("zoneout+DropConnect", {"zoneout": 0.1, "weight_dropout": 0.2}, ("fused",)),
        ]
        for label, options, strategies in variants:
            layers += [
                (
                    f"{label} {name}",
                    rnnkit.nn.Recurrent("lstm", features, hidden, strategy=name, **options),
                )
                for name in strategies
            ]
        layers += [
            (f"slstm {name}", rnnkit.nn.Recurrent("slstm", features, hidden, strategy=name))
            for name in ("sequential", "fused")
        ]
    return layers


def _measure(
    cell: str, inputs: torch.Tensor, hidden: int, repeats: int
) -> list[tuple[str, float, float]]:
    layers = _layers(cell, inputs.shape[-1], hidden)
    forward = median_seconds([_forward(layer, inputs) for _, layer in layers], repeats)
    training = median_seconds([_forward_backward(layer, inputs) for _, layer in layers], repeats)
    return [
        (name, forward_seconds, training_seconds)
        for (name, _), forward_seconds, training_seconds in zip(
            layers, forward, training, strict=True
        )
    ]


def _forward(layer: nn.Module, inputs: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.no_grad():
            return layer(inputs)

    return call


def _forward_backward(layer: nn.Module, inputs: torch.Tensor) -> Callable[[], object]:
    inputs = inputs.clone().requires_grad_(True)

    def call() -> object:
        outputs, _ = layer(inputs)
        outputs.sum().backward()
        return outputs

    return call


def _parse_size(text: str) -> tuple[int, int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise SystemExit(f"--sizes: expected BxTxDxH with positive integers, got {text!r}")
    batch, steps, features, hidden = (int(part) for part in parts)
    return batch, steps, features, hidden
