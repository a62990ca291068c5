"""``rnnkit export RUN`` and ``rnnkit quantize RUN``: a trained run's model, exported or
quantized.

Runs that can be exported: ``charlm`` (a ``LanguageModel``: tokens and state in, logits and
state out; ONNX or TorchScript) and ``classify`` (a ``SequenceClassifier``: features and lengths
in, logits out; ONNX only).
Other tasks raise ``ExportError`` naming the ones that can. ``quantize`` takes the same runs;
for a charlm run it also prints the validation loss and the evaluation time, float and int8.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TextIO

import torch
from torch import nn

from rnnkit.deploy.export import export_onnx
from rnnkit.deploy.quantize import float_tensors, quantize_int8, quantize_report, serialized_bytes
from rnnkit.deploy.torchscript import export_torchscript
from rnnkit.deploy.traced import ExportError
from rnnkit.train.checkpoint import read_checkpoint
from rnnkit.train.threads import threads_restored

EXPORTABLE_TASKS = ("charlm", "classify")


def load_model(run_dir: Path) -> tuple[str, nn.Module]:
    """The task name and the trained model (evaluation mode) of a run, as ``rnnkit eval``
    loads it."""
    task = str(read_checkpoint(run_dir).get("task"))
    if task == "charlm":
        from rnnkit.train.tasks.charlm import load_trained

        return task, load_trained(run_dir)[1]
    if task == "classify":
        from rnnkit.train.tasks import classify, supervised

        _, trained, _ = supervised.load_run(run_dir, task, classify.ClassifyConfig, classify.build)
        return task, trained.model
    raise ExportError(
        f"{run_dir} is a {task} run; rnnkit export and quantize take runs of "
        f"{', '.join(EXPORTABLE_TASKS)} (export other models with rnnkit.deploy.export_onnx)"
    )


def export_run(run_dir: Path, output: Path, format: str, batch_size: int, stream: TextIO) -> None:
    """``rnnkit export RUN --format onnx|torchscript``: the run's model as one file."""
    with threads_restored():
        task, model = load_model(run_dir)
        if format == "torchscript":
            names = ["inputs", f"[{', '.join(export_torchscript(model, output))}]"]
            shapes = "state as one list, any batch size and sequence length"
        else:
            names = export_onnx(model, output, task == "classify", batch_size)
            shapes = f"batch size {batch_size}, any sequence length"
    stream.write(
        f"wrote {output} ({output.stat().st_size:,} bytes): inputs {', '.join(names)}; "
        f"{shapes}; feed the final state back to stream\n"
    )


def quantize_run(run_dir: Path, output: Path, stream: TextIO) -> dict[str, float]:
    """``rnnkit quantize RUN``: the int8 model saved with ``torch.save`` (load it with
    ``torch.load(FILE, weights_only=False)``); returns and prints sizes (and charlm losses)."""
    with threads_restored():
        task, model = load_model(run_dir)
        quantized = quantize_int8(model)
        result = {
            "float_bytes": float(serialized_bytes(model)),
            "int8_bytes": float(serialized_bytes(quantized)),
        }
        if task == "charlm":
            result.update(_charlm_losses(run_dir, model, quantized))
    torch.save(quantized, output)
    left = float_tensors(quantized)
    cell_int8 = [row.name for row in quantize_report(quantized) if "Int8DynamicWeight" in row.how]
    stream.write(
        f"wrote {output}: weights {result['float_bytes'] / 1e6:.2f} MB float -> "
        f"{result['int8_bytes'] / 1e6:.2f} MB int8"
        + (f"; cell matrices in int8: {', '.join(cell_int8)}" if cell_int8 else "")
        + (f"; left in float: {', '.join(left)}" if left else "")
        + "\n"
    )
    if "float_loss" in result:
        stream.write(
            f"validation loss {result['float_loss']:.4f} float, {result['int8_loss']:.4f} "
            f"int8 nats/char; evaluation {result['float_seconds']:.2f} s float, "
            f"{result['int8_seconds']:.2f} s int8\n"
        )
    return result


def _charlm_losses(run_dir: Path, model: nn.Module, quantized: nn.Module) -> dict[str, float]:
    from rnnkit.data import load_corpus
    from rnnkit.train.tasks.charlm import load_trained
    from rnnkit.train.tbptt import evaluate_tokens

    config, _, vocabulary, _ = load_trained(run_dir)
    corpus = load_corpus(config.data, vocabulary)
    result = {}
    for name, candidate in (("float", model), ("int8", quantized)):
        start = time.perf_counter()
        with torch.no_grad():
            metrics = evaluate_tokens(
                candidate,  # type: ignore[arg-type]  # a LanguageModel, quantized or not
                corpus.validation,
                config.bptt,
                corpus.validation_resets,
            )
        result[f"{name}_seconds"] = time.perf_counter() - start
        result[f"{name}_loss"] = metrics["loss"]
    return result
