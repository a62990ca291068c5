"""int8 dynamic quantization of trained models for CPU inference.

Dynamic quantization stores weights as int8 (one scale per tensor) and quantizes activations
on the fly at each matrix product (fbgemm / x86 kernels): no calibration data, no retraining.
It uses ``torch.ao.quantization.quantize_dynamic``; torch 2.13 marks ``torch.ao.quantization``
deprecated in favour of torchao's ``quantize_`` (a separate package, not a dependency of
rnnkit), and the quantized tensor functions behind it too (pytorch/pytorch#184982); both
warnings are silenced here.

What is quantized:

- every ``nn.Linear`` (heads, projections, and any ``nn.Linear`` a custom cell holds);
- a ``Recurrent`` stack of standard LSTM (without ``proj_size``), GRU or Elman cells that
  torch's fused kernel computes as configured (``native_unsupported_reason() is None``):
  it is rebuilt as ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` with the same weights
  (``TorchRecurrent``), whose dynamically quantized versions run the whole recurrence.

- the weight matrices of every other cell (custom cells: layer-norm or peephole LSTM, sLSTM,
  minGRU, GLA, DeltaNet, ...) that the cell uses only as a matrix product's weight
  (``functional.linear(x, W, b)``, ``torch.addmm(b, x, W.t())``, ``x @ W.t()``): each becomes
  an ``Int8DynamicWeight`` (``int8_weight.py``, int8 with one scale per output row), whose
  products run torch's dynamic int8 kernel, as ``nn.Linear``'s. Which matrices qualify is
  found by running the cell once (``sequential``, a batch of 2 by 3 steps) and watching how it
  uses each 2-D float32 parameter (``linear_weight_uses``); the others (sLSTM's 3-D per-head
  W_hh, ParaGRU's diagonal ``(3, H)`` recurrence, S4D's and LRU's parameters, ...) stay float.

The quantized model keeps each ``Recurrent``'s strategy. The ``sequential`` and ``scan``
strategies call ``project_inputs`` / ``step``, so the int8 products run; the ``fused``
strategy (``auto``'s pick for layer-norm or peephole LSTMs, sLSTM, ...) projects the inputs in
int8 but hands its compiled loop the recurrent matrix as an array: that use dequantizes it
(once per call; the recurrence then runs in float32 on the int8-rounded weights).
``quantize_report`` lists every weight tensor: int8 and how, or float and why; each
``Int8DynamicWeight`` counts its int8 and dequantized uses.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from rnnkit.cells.base import Cell, State
from rnnkit.deploy.int8_weight import (
    LINEAR_FUNCTIONS,
    METADATA_FUNCTIONS,
    PRODUCT_FUNCTIONS,
    TRANSPOSE_FUNCTIONS,
    Int8DynamicWeight,
)
from rnnkit.nn.recurrent import Recurrent
from rnnkit.strategies import sequential

TORCH_LAYERS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN, "rnn_relu": nn.RNN}
WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def torch_layer_reason(recurrent: Recurrent) -> str | None:
    """Why ``recurrent`` cannot be rebuilt as a torch.nn layer, or None when it can."""
    cells = recurrent.layer_cells()
    kernels = {cell.native_kernel for cell in cells}
    if len(kernels) != 1 or next(iter(kernels)) not in TORCH_LAYERS:
        return f"{type(cells[0]).__name__} has no torch.nn layer with a quantized version"
    for cell in cells:
        reason = cell.native_unsupported_reason()
        if reason is not None:
            return reason
        if getattr(cell, "weight_hr", None) is not None:
            return "torch's quantized LSTM has no proj_size"
    return None


class TorchRecurrent(nn.Module):
    """A ``Recurrent`` of standard cells as the torch.nn layer with the same weights, keeping
    ``Recurrent``'s interface: ``forward(inputs (B, T, D), state) -> (outputs, one NamedTuple
    per cell)`` and ``step``. Resets and lengths are not supported."""

    def __init__(self, recurrent: Recurrent) -> None:
        super().__init__()
        reason = torch_layer_reason(recurrent)
        if reason is not None:
            raise ValueError(f"cannot rebuild this Recurrent as a torch.nn layer: {reason}")
        cells = recurrent.layer_cells()
        first = cells[0]
        kernel = first.native_kernel
        assert kernel is not None  # torch_layer_reason checked it
        options = {"nonlinearity": kernel[4:]} if kernel.startswith("rnn_") else {}
        self.layer = TORCH_LAYERS[kernel](
            first.input_size,
            first.hidden_size,
            num_layers=recurrent.num_layers,
            bias=len(first.native_weights()) > 2,
            batch_first=True,
            bidirectional=recurrent.bidirectional,
            **options,
        )
        for index, cell in enumerate(cells):
            layer, direction = divmod(index, recurrent.num_directions)
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for name, weight in zip(WEIGHT_NAMES, cell.native_weights(), strict=False):
                getattr(self.layer, name + suffix).data.copy_(weight.detach())
        self.state_type = first.state_type
        self.num_directions = recurrent.num_directions
        self.output_size = recurrent.output_size

    def forward(
        self, inputs: Tensor, state: Sequence[State] | None = None, resets: Tensor | None = None
    ) -> tuple[Tensor, tuple[State, ...]]:
        if resets is not None:
            raise ValueError("a quantized recurrent layer runs without resets")
        hidden = None
        if state is not None:
            fields = [torch.stack(list(values)) for values in zip(*state, strict=True)]
            hidden = tuple(fields) if len(fields) > 1 else fields[0]
        outputs, final = self.layer(inputs, hidden)
        final_fields = final if isinstance(final, tuple) else (final,)
        count = final_fields[0].shape[0]
        states = tuple(
            self.state_type(*(field[index] for field in final_fields)) for index in range(count)
        )
        return outputs, states

    def step(
        self, inputs: Tensor, state: Sequence[State] | None = None
    ) -> tuple[Tensor, tuple[State, ...]]:
        """One step: ``inputs (B, D)`` -> ``(B, O)`` and the new states."""
        outputs, new_state = self.forward(inputs.unsqueeze(1), state)
        return outputs.squeeze(1), new_state


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (evaluation mode) with int8 dynamic quantization, see the module
    docstring; ``model`` itself is unchanged."""
    quantized = copy.deepcopy(model).eval()
    for name, child in list(quantized.named_modules()):
        if isinstance(child, Recurrent) and torch_layer_reason(child) is None:
            parent_name, _, attribute = name.rpartition(".")
            parent = quantized.get_submodule(parent_name) if parent_name else quantized
            if parent is quantized and not attribute:
                quantized = TorchRecurrent(child)
            else:
                setattr(parent, attribute, TorchRecurrent(child))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.ao.quantization, see above
        warnings.filterwarnings("ignore", message="torch.quantize_per_tensor")
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(quantized, {nn.Linear, nn.LSTM, nn.GRU, nn.RNN}, torch.qint8)
    for cell in [module for module in quantized.modules() if isinstance(module, Cell)]:
        quantize_cell_weights(cell)
    return quantized


def quantize_cell_weights(cell: Cell) -> dict[str, str]:
    """Replace, in place, each weight matrix ``cell`` uses only as a matrix product's weight
    by its ``Int8DynamicWeight`` (a buffer of the same name); returns, for each of the
    cell's own floating-point parameters left, why it stays float (also kept on the cell as
    ``int8_float_reasons`` for ``quantize_report``)."""
    uses = linear_weight_uses(cell)
    reasons: dict[str, str] = {}
    for name, parameter in list(cell.named_parameters(recurse=False)):
        reason = _float_reason(name, parameter, uses.get(name))
        if reason is None:
            del cell._parameters[name]
            cell.register_buffer(name, Int8DynamicWeight.from_float(parameter.detach()))
        elif parameter.is_floating_point():
            reasons[name] = reason
    cell.__dict__["int8_float_reasons"] = reasons  # a plain attribute, kept by torch.save
    return reasons


def _float_reason(name: str, parameter: Tensor, uses: tuple[int, int] | None) -> str | None:
    """Why the cell's parameter ``name`` stays float, or None when it becomes int8."""
    if parameter.dim() != 2:
        if name.rsplit(".", 1)[-1].startswith("bias"):
            return "bias: added in float32 after the int8 product (as torch's dynamic Linear)"
        return f"{parameter.dim()}-D: used elementwise or as a stack of blocks, not a matrix"
    if parameter.dtype != torch.float32 or parameter.device.type != "cpu":
        return f"{parameter.dtype} on {parameter.device}: the int8 kernel takes float32 on CPU"
    linear, other = uses if uses is not None else (0, 0)
    if linear == 0:
        return "never the weight of a matrix product (used elementwise, or as a whole matrix)"
    if other:
        return f"used {other} time(s) other than as a matrix product's weight (3 steps)"
    return None


class _UseRecorder(TorchFunctionMode):
    """Counts, per watched matrix, its uses as an int8-capable product's weight
    (``functional.linear(x, W, b)``, and ``torch.addmm(b, x, W.t())``, ``x @ W.t()`` on its
    plain transpose) and all its other value uses (metadata queries, ``detach`` and the plain
    transpose are not uses)."""

    def __init__(self, watched: dict[int, str]) -> None:
        super().__init__()
        self.watched = watched
        self.transposes: dict[int, str] = {}
        self.kept: list[Tensor] = []  # the transposes, alive so that their ids stay unique
        self.uses = {name: [0, 0] for name in watched.values()}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if func in METADATA_FUNCTIONS or func is Tensor.detach:
            return result
        if func in TRANSPOSE_FUNCTIONS and len(args) == 1 and not kwargs:
            name = self.watched.get(id(args[0]))
            if name is not None:
                self.transposes[id(result)] = name
                self.kept.append(result)
                return result
        if func in LINEAR_FUNCTIONS:
            weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
            product = self.watched.get(id(weight))
        elif func in PRODUCT_FUNCTIONS and not kwargs and len(args) == 2:
            weight, product = args[1], self.transposes.get(id(args[1]))
        elif func is torch.addmm and not kwargs and len(args) == 3:
            weight, product = args[2], self.transposes.get(id(args[2]))
        else:
            weight, product = None, None
        if product is not None:
            self.uses[product][0] += 1
        for value in tree_flatten((args, kwargs))[0]:
            name = self.watched.get(id(value), self.transposes.get(id(value)))
            if name is not None and value is not weight:
                self.uses[name][1] += 1
        return result


def linear_weight_uses(cell: Cell) -> dict[str, tuple[int, int]]:
    """For each 2-D parameter of ``cell`` (not its submodules'): how often a run of the
    ``sequential`` strategy over a random ``(2, 3, input_size)`` batch uses it as a matrix
    product's weight (see ``_UseRecorder``), and how often otherwise."""
    watched = {
        id(parameter): name
        for name, parameter in cell.named_parameters(recurse=False)
        if parameter.dim() == 2
    }
    parameter = next(cell.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else None
    inputs = torch.randn(2, 3, cell.input_size, dtype=dtype, device=device)
    recorder = _UseRecorder(watched)
    was_training = cell.training
    cell.eval()
    try:
        with torch.no_grad(), recorder:
            sequential.run(cell, inputs)
    finally:
        cell.train(was_training)
    return {name: (linear, other) for name, (linear, other) in recorder.uses.items()}


class WeightReport(NamedTuple):
    """One weight tensor of a quantized model: its name, ``"int8"`` or ``"float"``, and how or
    why."""

    name: str
    kind: str
    how: str


def quantize_report(quantized: nn.Module) -> list[WeightReport]:
    """Every weight tensor of a model from ``quantize_int8``: int8 (how it is computed) or
    float (why). Biases of torch's quantized modules are not listed; biases of cells are."""
    rows: list[WeightReport] = []
    rebuilt: list[str] = []  # TorchRecurrent prefixes: their torch layer is one row
    for module_name, module in quantized.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if any(prefix.startswith(outer) for outer in rebuilt):
            continue
        if isinstance(module, TorchRecurrent):
            rebuilt.append(prefix)
            what = type(module.layer).__name__
            how = f"torch's dynamic quantized {what}, the whole recurrence (one scale per tensor)"
            rows.append(WeightReport(f"{prefix}layer", "int8", how))
        elif type(module).__module__.startswith("torch.ao.nn.quantized.dynamic"):
            how = f"torch's dynamic quantized {type(module).__name__} (one scale per tensor)"
            rows.append(WeightReport(f"{prefix}weight", "int8", how))
        elif isinstance(module, Cell):
            for name, buffer in module.named_buffers(recurse=False):
                if isinstance(buffer, Int8DynamicWeight):
                    how = (
                        "Int8DynamicWeight (one scale per row), its products in int8; uses so "
                        f"far: {buffer.int8_uses} int8, {buffer.dequantized_uses} dequantized"
                    )
                    rows.append(WeightReport(prefix + name, "int8", how))
            reasons = getattr(module, "int8_float_reasons", {})
            for name, parameter in module.named_parameters(recurse=False):
                if parameter.is_floating_point():
                    reason = reasons.get(name, "not quantized (the cell was added afterwards)")
                    rows.append(WeightReport(prefix + name, "float", reason))
        else:
            for name, parameter in module.named_parameters(recurse=False):
                if parameter.is_floating_point():
                    reason = f"{type(module).__name__}: no int8 version here"
                    rows.append(WeightReport(prefix + name, "float", reason))
    return rows


def format_report(rows: Sequence[WeightReport]) -> str:
    """``quantize_report`` as lines ``name: int8|float, how``."""
    return "\n".join(f"{row.name}: {row.kind}, {row.how}" for row in rows)


def serialized_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: the size of the weights on disk."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def float_tensors(model: nn.Module) -> list[str]:
    """Floating-point parameters left in a quantized model (cells with raw weights)."""
    names = [name for name, parameter in model.named_parameters() if parameter.is_floating_point()]
    return [name for name in names if "bias" not in name.rsplit(".", 1)[-1]]


def is_quantizable_cell(cell: Cell) -> bool:
    """Whether ``cell`` is replaced by a quantized torch.nn layer (else it stays float)."""
    return cell.native_kernel in TORCH_LAYERS and cell.native_unsupported_reason() is None
