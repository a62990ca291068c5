"""Scan: the diagonal linear scan's implementations against the memory-bandwidth bound, and
linear cells under ``scan`` against ``sequential`` and torch.nn.GRU.

1. ``h_t = a_t h_{t-1} + b_t`` in float32: forward and forward+backward of the loop, the chunked
   PyTorch form and the compiled kernel. The bound is the bytes the scan must move divided by
   the copy bandwidth measured in the same run (a tensor copy): forward reads a and b and writes
   h (3 arrays, 1.5 copies); forward+backward adds reading a, h and dL/dh and writing dL/da and
   dL/db (8 arrays, 4 copies). The kernel row writes into a preallocated output; the autograd
   row allocates, and a fresh allocation of this size costs its page faults.
2. A minGRU layer with ``scan`` against torch.nn.GRU of the same size, forward+backward.
3. A 4-layer language model (embedding, 4 linear-cell layers, linear head) at T=4096,
   forward+backward with ``scan`` and with ``sequential``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from rnnkit.bench.timing import median_seconds
from rnnkit.nn import Recurrent
from rnnkit.strategies.kernels import diagonal_scan
from rnnkit.strategies.kernels.numba_cpu import scan_compiled_raw

DEFAULT_SCAN_SIZES = ["8x8192x64", "4x65536x256"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", default=DEFAULT_SCAN_SIZES, metavar="BxTxN")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
    parser.add_argument(
        "--skip-loop-above",
        type=int,
        default=100_000_000,
        help="skip the (slow) loop when B*T*N exceeds this",
    )
    parser.add_argument(
        "--layer-size",
        default="8x4096x64",
        metavar="BxTxH",
        help="minGRU layer against torch.nn.GRU (D = H)",
    )
    parser.add_argument(
        "--model-size",
        default="8x4096x128",
        metavar="BxTxH",
        help="4-layer language model, batch x time x hidden",
    )
    parser.add_argument(
        "--cells", nargs="+", default=["mingru"], help="linear cells for the model comparison"
    )


def run(arguments: argparse.Namespace) -> int:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU\n")
    for size in arguments.sizes:
        batch, steps, width = _parse(size, 3)
        _scan_rows(batch, steps, width, arguments)
    batch, steps, hidden = _parse(arguments.layer_size, 3)
    _layer_rows(batch, steps, hidden, arguments.repeats)
    batch, steps, hidden = _parse(arguments.model_size, 3)
    for cell in arguments.cells:
        _model_rows(cell, batch, steps, hidden, arguments.repeats)
    return 0


def _scan_rows(batch: int, steps: int, width: int, arguments: argparse.Namespace) -> None:
    a = torch.rand(batch, steps, width) * 0.5 + 0.5
    b = torch.randn(batch, steps, width)
    source, destination, output = torch.randn_like(b), torch.empty_like(b), torch.empty_like(b)
    forwards = {
        "copy": lambda: destination.copy_(source),
        "compiled kernel": lambda: scan_compiled_raw(a, b, None, False, output),
        "compiled": lambda: diagonal_scan(a, b, implementation="compiled"),
        "chunked": lambda: diagonal_scan(a, b, implementation="chunked"),
    }
    trainings = {
        "compiled": _training(a, b, "compiled"),
        "chunked": _training(a, b, "chunked"),
    }
    if batch * steps * width <= arguments.skip_loop_above:
        forwards["loop"] = lambda: diagonal_scan(a, b, implementation="loop")
        trainings["loop"] = _training(a, b, "loop")
    forward_times = dict(
        zip(forwards, median_seconds(list(forwards.values()), arguments.repeats), strict=True)
    )
    training_times = dict(
        zip(trainings, median_seconds(list(trainings.values()), arguments.repeats), strict=True)
    )
    copy = forward_times.pop("copy")
    bandwidth = 2 * b.numel() * b.element_size() / copy
    bound_forward, bound_training = 1.5 * copy, 4 * copy
    print(
        f"diagonal scan B={batch} T={steps} N={width}: copy bandwidth {bandwidth / 1e9:.1f} GB/s,"
        f" bound forward {bound_forward * 1e3:.1f} ms, forward+backward "
        f"{bound_training * 1e3:.1f} ms"
    )
    print(
        f"  {'implementation':<18} {'forward ms':>11} {'x bound':>8} {'fwd+bwd ms':>11} "
        f"{'x bound':>8} {'loop / this':>12}"
    )
    loop_training = training_times.get("loop")
    for name, seconds in forward_times.items():
        training = training_times.get(name.replace(" kernel", ""), float("nan"))
        if name == "compiled kernel":
            training = float("nan")
        speedup = loop_training / training if loop_training else float("nan")
        print(
            f"  {name:<18} {seconds * 1e3:>11.1f} {seconds / bound_forward:>8.2f} "
            f"{training * 1e3:>11.1f} {training / bound_training:>8.2f} {speedup:>12.1f}"
        )
    print()


def _training(a: torch.Tensor, b: torch.Tensor, implementation: str):
    a = a.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)

    def call() -> None:
        a.grad = b.grad = None  # as a training step does: no accumulation pass into old grads
        diagonal_scan(a, b, implementation=implementation).sum().backward()

    return call


def _layer_rows(batch: int, steps: int, hidden: int, repeats: int) -> None:
    inputs = torch.randn(batch, steps, hidden, requires_grad=True)
    layers = {
        "torch.nn.GRU": nn.GRU(hidden, hidden, batch_first=True),
        "minGRU scan": Recurrent("mingru", hidden, hidden, strategy="scan"),
        "minGRU sequential": Recurrent("mingru", hidden, hidden, strategy="sequential"),
    }
    times = median_seconds([_layer_training(layer, inputs) for layer in layers.values()], repeats)
    reference = times[0]
    print(f"one layer, B={batch} T={steps} D=H={hidden}, forward+backward:")
    for name, seconds in zip(layers, times, strict=True):
        print(f"  {name:<20} {seconds:>8.3f} s   torch.nn.GRU / this = {reference / seconds:6.1f}")
    print()


def _layer_training(layer: nn.Module, inputs: torch.Tensor):
    def call() -> None:
        outputs, _ = layer(inputs)
        outputs.sum().backward()

    return call


class _LanguageModel(nn.Module):
    def __init__(self, cell: str, hidden: int, strategy: str, vocabulary: int = 65) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocabulary, hidden)
        self.recurrent = Recurrent(cell, hidden, hidden, num_layers=4, strategy=strategy)
        self.head = nn.Linear(self.recurrent.output_size, vocabulary)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.recurrent(self.embedding(tokens))
        return self.head(outputs)


def _model_rows(cell: str, batch: int, steps: int, hidden: int, repeats: int) -> None:
    tokens = torch.randint(0, 65, (batch, steps + 1))
    models = {
        strategy: _LanguageModel(cell, hidden, strategy) for strategy in ("scan", "sequential")
    }
    models["sequential"].load_state_dict(models["scan"].state_dict())

    def step(model: nn.Module):
        def call() -> None:
            logits = model(tokens[:, :-1])
            nn.functional.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()).backward()

        return call

    scan_time, sequential_time = median_seconds([step(model) for model in models.values()], repeats)
    print(f"4-layer {cell} language model, B={batch} T={steps} H={hidden}, forward+backward:")
    print(
        f"  scan {scan_time:.3f} s, sequential {sequential_time:.3f} s, "
        f"sequential / scan = {sequential_time / scan_time:.1f}\n"
    )


def _parse(text: str, parts: int) -> tuple[int, ...]:
    values = text.lower().split("x")
    if len(values) != parts or not all(value.isdigit() and int(value) > 0 for value in values):
        raise SystemExit(f"expected {parts} positive integers joined by 'x', got {text!r}")
    return tuple(int(value) for value in values)
