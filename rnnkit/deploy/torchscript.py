"""TorchScript export: a traced one-step graph inside a scripted loop over time.

``export_torchscript(module, path)`` writes a TorchScript file whose ``forward(inputs,
state: List[Tensor]) -> (outputs, List[Tensor])`` takes the inputs and state of
``StateGraph(module)`` (``rnnkit/deploy/export.py``), the state as one list, any batch size and
sequence length. One step of the model (``T == 1``, each cell's ``project_inputs`` and
``recur``) is traced with ``torch.jit.trace`` and a scripted loop runs it over the steps, so
chunks with the returned state fed back equal one pass.

Unidirectional and without lengths only: a reverse direction needs the whole sequence, which a
step-by-step loop does not have (use ONNX, ``export_onnx``, for those). ``torch.jit`` is
deprecated in torch 2.13 in favour of ``torch.export``; its warnings are silenced here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnkit.deploy.export import StateGraph
from rnnkit.deploy.traced import ExportError


class _StateAsList(nn.Module):
    """``StateGraph`` with the state as one list (a fixed signature for the scripted loop)."""

    def __init__(self, graph: StateGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, inputs: Tensor, state: list[Tensor]) -> tuple[Tensor, ...]:
        return self.graph(inputs, *state)


class _Loop(nn.Module):
    """The traced step over every step of ``inputs`` along ``time_axis``."""

    def __init__(self, step: nn.Module, time_axis: int) -> None:
        super().__init__()
        self.step = step
        self.time_axis = time_axis

    def forward(self, inputs: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        outputs: list[Tensor] = []
        for t in range(inputs.size(self.time_axis)):
            result = self.step(inputs.narrow(self.time_axis, t, 1), state)
            outputs.append(result[0])
            state = list(result[1:])
        return torch.cat(outputs, self.time_axis), state


def export_torchscript(module: nn.Module, path: str | Path) -> list[str]:
    """Write ``module`` as TorchScript to ``path``; returns the state's names, in list order."""
    graph = StateGraph(module)
    if graph.num_directions != 1 or graph.with_lengths:
        raise ExportError(
            "TorchScript export runs step by step: it needs a unidirectional model without "
            "lengths; use export_onnx (rnnkit export --format onnx) for this one"
        )
    graph.one_step = True
    arguments, _, names, _ = graph.example_inputs(2)
    time_axis = 0 if graph.torch_layout and not graph.layer.batch_first else 1
    first = arguments[0].narrow(time_axis, 0, 1)
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated (see the docstring)
            step = torch.jit.trace(_StateAsList(graph), (first, list(arguments[1:])))
            torch.jit.script(_Loop(step, time_axis)).save(str(path))
    finally:
        module.train(was_training)
    return names[1:]
