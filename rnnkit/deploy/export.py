"""Export recurrent layers and models with their state as explicit graph inputs and outputs.

``export_onnx(module, path)`` writes an ONNX file whose inputs are the sequence, the lengths
(``with_lengths=True``) and the recurrent state, and whose outputs are the outputs and the final
state, with a symbolic sequence-length axis (the batch size is fixed at export: ``export_onnx``).
A runtime streams a sequence chunk by chunk by feeding back the returned state (the chunks'
outputs equal one pass over the whole):

- ``rnnkit.nn.LSTM``, ``GRU``, ``RNN``: ``(input, [lengths], h0[, c0]) -> (output, hn[, cn])``,
  states in torch's layout ``(num_layers * directions, B, H)``, input as ``batch_first`` says;
- ``rnnkit.nn.Recurrent``: ``(inputs (B, T, D), [lengths], state0_h, ...) -> (outputs,
  state0_h, ...)``, one ``(B, size)`` input per cell and state field, named
  ``state{cell}_{field}`` (cells ordered ``layer0, layer0_reverse, layer1, ...``);
- ``rnnkit.models.LanguageModel``: ``(tokens (B, T) int64, state...) -> (logits (B, T, V),
  state...)``;
- ``rnnkit.models.SequenceClassifier``: ``(inputs (B, T, D), lengths (B,)) -> logits (B, C)``
  (no state: the pooling reads whole sequences).

How each strategy is traced, and which cannot be, is in ``rnnkit/deploy/traced.py``. The graph
is made by ``torch.export`` and translated by torch's ONNX exporter (``dynamo=True``); compare
an export with eager before trusting it (``tests/deploy``; a dynamo exporter bug once wrote GRU
gates in the wrong order, pytorch/pytorch#189225).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.cells.base import Cell
from rnnkit.deploy.traced import ExportError, check_traceable, run_traced_stack
from rnnkit.models.language_model import LanguageModel
from rnnkit.models.sequence_classifier import SequenceClassifier, pool_last, pool_mean
from rnnkit.nn.recurrent import Recurrent
from rnnkit.nn.torch_compat import TorchCompatibleRNN

EXAMPLE_STEPS = 5  # not 0 or 1, which torch.export would specialize


class StateGraph(nn.Module):
    """A layer or model as a function of tensors only (see the module docstring).

    ``forward(inputs, *rest)``: ``rest`` is ``(lengths, *state)`` when ``with_lengths``, else
    ``state``; returns ``(outputs, *final_state)`` (a classifier: ``logits``).
    """

    def __init__(self, module: nn.Module, with_lengths: bool = False) -> None:
        super().__init__()
        if isinstance(module, SequenceClassifier):
            with_lengths = True
        self.module = module
        self.with_lengths = with_lengths
        self.one_step = False  # True: inputs of one step, traced without the scan op
        if isinstance(module, Recurrent | TorchCompatibleRNN):
            self.layer = module
        elif isinstance(module, LanguageModel | SequenceClassifier):
            self.layer = module.recurrent
        else:
            raise ExportError(
                f"cannot export a {type(module).__name__}: expected rnnkit.nn.LSTM, GRU, RNN, "
                "Recurrent, a LanguageModel or a SequenceClassifier"
            )
        self.torch_layout = isinstance(self.layer, TorchCompatibleRNN)
        self.num_directions = 2 if self.layer.bidirectional else 1
        for cell in self.cells():
            check_traceable(cell, self.layer.strategy)

    def cells(self) -> list[Cell]:
        layer = self.layer
        if isinstance(layer, TorchCompatibleRNN):
            return layer._bound_cells()  # the cells, bound to the layer's torch-named weights
        return layer.layer_cells()

    def state_names(self) -> list[str]:
        cells = self.cells()
        if self.torch_layout:
            return ["h", "c"][: len(cells[0].state_sizes())]
        if isinstance(self.module, SequenceClassifier):
            return []
        return [f"state{i}_{name}" for i, c in enumerate(cells) for name in c.state_type._fields]

    def forward(self, inputs: Tensor, *rest: Tensor) -> tuple[Tensor, ...]:
        lengths = rest[0] if self.with_lengths else None
        state = list(rest[1:] if self.with_lengths else rest)
        module = self.module
        if isinstance(module, LanguageModel):
            sequence = module.embedding(inputs)  # (B, T, E)
        elif isinstance(module, SequenceClassifier):
            sequence = (inputs - module.feature_mean) / module.feature_std
        elif self.layer.batch_first:
            sequence = inputs
        else:
            sequence = inputs.transpose(0, 1)
        outputs, finals = run_traced_stack(
            self.cells(),
            self.num_directions,
            sequence,
            self._cell_states(state, sequence),
            lengths,
            self.one_step,
        )
        if isinstance(module, SequenceClassifier):
            assert lengths is not None  # a classifier always takes lengths
            return (self._classify(outputs, lengths),)
        if isinstance(module, LanguageModel):
            outputs = module.head(outputs)
        elif not self.layer.batch_first:
            outputs = outputs.transpose(0, 1)
        if self.torch_layout:  # fields stacked over cells: (L * dirs, B, size)
            return (outputs, *(torch.stack(field) for field in zip(*finals, strict=True)))
        return (outputs, *(field for final in finals for field in final))

    def _cell_states(self, state: list[Tensor], sequence: Tensor) -> list[tuple[Tensor, ...]]:
        cells = self.cells()
        if not state:  # a classifier starts every sequence from the initial state
            batch = sequence.shape[0]
            return [tuple(c.initial_state(batch, dtype=sequence.dtype)) for c in cells]
        if self.torch_layout:
            return [tuple(field[index] for field in state) for index in range(len(cells))]
        counts = [len(cell.state_sizes()) for cell in cells]
        starts = [sum(counts[:index]) for index in range(len(cells))]
        return [tuple(state[s : s + n]) for s, n in zip(starts, counts, strict=True)]

    def _classify(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        module = self.module
        assert isinstance(module, SequenceClassifier)
        if module.attention is not None:
            pooled = module.attention(outputs, lengths)
        elif module.config.pooling == "mean":
            pooled = pool_mean(outputs, lengths)
        else:
            pooled = pool_last(outputs, lengths, self.num_directions)
        return module.head(pooled)

    def example_inputs(
        self, batch_size: int = 1
    ) -> tuple[tuple[Tensor, ...], tuple[Any, ...], list[str], list[str]]:
        """Example arguments of ``batch_size`` rows, their dynamic shapes (the time axis) and
        the input and output names."""
        time, batch, rows = torch.export.Dim("time"), None, batch_size
        cells, module = self.cells(), self.module
        dtype = next(module.parameters()).dtype
        if isinstance(module, LanguageModel):
            first = torch.zeros(rows, EXAMPLE_STEPS, dtype=torch.int64)
            names, shapes = ["tokens"], [_axes({0: batch, 1: time})]
        else:
            size = cells[0].input_size
            first = torch.zeros(rows, EXAMPLE_STEPS, size, dtype=dtype)
            layout = _axes({0: batch, 1: time})
            if self.torch_layout and not self.layer.batch_first:
                first, layout = first.transpose(0, 1), _axes({0: time, 1: batch})
            names, shapes = ["input" if self.torch_layout else "inputs"], [layout]
        arguments = [first]
        if self.with_lengths:
            arguments.append(torch.full((rows,), EXAMPLE_STEPS, dtype=torch.int64))
            names.append("lengths")
            shapes.append(_axes({0: batch}))
        for index, name in enumerate(self.state_names()):
            if self.torch_layout:
                size = cells[0].state_sizes()[index]
                arguments.append(torch.zeros(len(cells), rows, size, dtype=dtype))
                shapes.append(_axes({1: batch}))
            else:
                cell_index = int(name[len("state") :].split("_")[0])
                field = name.split("_", 1)[1]
                sizes = dict(
                    zip(
                        cells[cell_index].state_type._fields,
                        cells[cell_index].state_sizes(),
                        strict=True,
                    )
                )
                arguments.append(torch.zeros(rows, sizes[field], dtype=dtype))
                shapes.append(_axes({0: batch}))
            names.append(f"{name}0" if self.torch_layout else name)
        first_output = "logits" if isinstance(module, LanguageModel | SequenceClassifier) else None
        outputs = [first_output or ("output" if self.torch_layout else "outputs")]
        outputs += [f"{n}n" if self.torch_layout else f"final_{n}" for n in self.state_names()]
        return tuple(arguments), (shapes[0], *shapes[1:]), names, outputs


def _axes(axes: dict[int, Any]) -> dict[int, Any]:
    """The symbolic axes among ``axes`` (a None axis is fixed to the example's size)."""
    return {axis: dim for axis, dim in axes.items() if dim is not None}


def export_onnx(
    module: nn.Module, path: str | Path, with_lengths: bool = False, batch_size: int = 1
) -> list[str]:
    """Write ``module`` to the ONNX file ``path`` (one file, weights inside); returns the
    graph's input names (the module docstring gives them).

    The time axis is symbolic; the batch axis is fixed to ``batch_size`` rows: torch 2.13's
    ONNX exporter fails on a scan whose body slices or reshapes by a symbolic batch size
    ("'SymInt' object has no attribute 'unsqueeze'" in its type-promotion pass), so export
    once per batch size a runtime needs (1 to stream one sequence frame by frame).
    """
    graph = StateGraph(module, with_lengths)
    arguments, shapes, inputs, outputs = graph.example_inputs(batch_size)
    was_training = module.training
    module.eval()
    try:
        torch.onnx.export(
            graph,
            arguments,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_shapes=(shapes[0], shapes[1:]),
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    finally:
        module.train(was_training)
    return inputs
