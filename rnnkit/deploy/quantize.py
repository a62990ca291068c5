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

Cells that keep raw weight matrices (``functional.linear(x, self.weight_ih)``: mingru, gla,
slstm, ...) stay in floating point; ``quantize_report`` lists the tensors left so.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rnnkit.cells.base import Cell, State
from rnnkit.nn.recurrent import Recurrent

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

        return quantize_dynamic(quantized, {nn.Linear, nn.LSTM, nn.GRU, nn.RNN}, torch.qint8)


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
