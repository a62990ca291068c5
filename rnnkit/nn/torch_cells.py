"""Drop-ins for torch.nn.LSTMCell, GRUCell and RNNCell: one step, torch's names and shapes.

Parameters are ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` as in torch; the input is
``(B, D)`` or unbatched ``(D,)``; the state defaults to zeros.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnkit.cells import Cell, ElmanCell
from rnnkit.cells import GRUCell as GRUCellMath
from rnnkit.cells import LSTMCell as LSTMCellMath


class TorchCompatibleCell(nn.Module):
    """Shared body: owns the cell's parameters under torch's names and steps it once."""

    _cell: Cell  # kept in __dict__, not a submodule: the parameters are this module's

    def __init__(self, cell: Cell, name: str, device=None, dtype=None) -> None:
        super().__init__()
        cell.to(device=device, dtype=dtype)
        self.input_size = cell.input_size
        self.hidden_size = cell.hidden_size
        self.bias = cell.bias
        self._name = name
        for parameter_name, parameter in cell.named_parameters():
            self.register_parameter(parameter_name, parameter)
        self.__dict__["_cell"] = cell  # not a submodule: the parameters are this module's

    def reset_parameters(self) -> None:
        bound = 1.0 / self.hidden_size**0.5
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    def _step(self, input: Tensor, hx: tuple[Tensor, ...] | None) -> tuple[Tensor, ...]:  # noqa: A002
        if not isinstance(input, Tensor) or input.dim() not in (1, 2):
            got = f"{input.dim()}D" if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"{self._name}: Expected input to be 1D or 2D, got {got} instead")
        batched = input.dim() == 2
        inputs = input if batched else input.unsqueeze(0)
        if inputs.shape[1] != self.input_size:
            raise RuntimeError(
                f"input has inconsistent input_size: got {inputs.shape[1]} expected "
                f"{self.input_size}"
            )
        cell = self._cell
        for name in cell._parameters:
            cell._parameters[name] = self._parameters[name]
        cell.train(self.training)
        if hx is None:
            state = cell.initial_state(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
        else:
            state = cell.state_type(*self._check_hidden(hx, inputs.shape[0], batched))
        cell.begin_sequence(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
        _, new_state = cell.step(inputs, state)
        return tuple(field if batched else field.squeeze(0) for field in new_state)

    def _check_hidden(self, hx: tuple[Tensor, ...], batch_size: int, batched: bool):
        fields = []
        for field in hx:
            if field.dim() != (2 if batched else 1):
                raise RuntimeError(
                    f"{self._name}: Expected hidden to be {'2D' if batched else '1D'}, got "
                    f"{field.dim()}D instead"
                )
            field = field if batched else field.unsqueeze(0)
            if tuple(field.shape) != (batch_size, self.hidden_size):
                raise RuntimeError(
                    f"hidden has inconsistent size: expected {(batch_size, self.hidden_size)}, "
                    f"got {tuple(field.shape)}"
                )
            fields.append(field)
        return fields

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTMCell(TorchCompatibleCell):
    """Drop-in for ``torch.nn.LSTMCell``: ``forward(input, (h, c)) -> (h', c')``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        with torch.random.fork_rng(devices=_rng_devices(device)):  # draw only in reset, as torch
            cell = LSTMCellMath(input_size, hidden_size, bias)
        super().__init__(cell, "LSTMCell", device, dtype)
        self.reset_parameters()

    def forward(self, input: Tensor, hx: tuple[Tensor, Tensor] | None = None):  # noqa: A002
        if hx is not None and (not isinstance(hx, (tuple, list)) or len(hx) != 2):
            raise ValueError("LSTMCell: hx must be a tuple (h_0, c_0)")
        return self._step(input, hx)


class GRUCell(TorchCompatibleCell):
    """Drop-in for ``torch.nn.GRUCell``: ``forward(input, h) -> h'``."""

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None
    ) -> None:
        with torch.random.fork_rng(devices=_rng_devices(device)):  # draw only in reset, as torch
            cell = GRUCellMath(input_size, hidden_size, bias)
        super().__init__(cell, "GRUCell", device, dtype)
        self.reset_parameters()

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        return self._step(input, None if hx is None else (hx,))[0]


class RNNCell(TorchCompatibleCell):
    """Drop-in for ``torch.nn.RNNCell``: ``forward(input, h) -> h'``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        nonlinearity: str = "tanh",
        device=None,
        dtype=None,
    ) -> None:
        with torch.random.fork_rng(devices=_rng_devices(device)):  # draw only in reset
            cell = ElmanCell(input_size, hidden_size, bias, nonlinearity=nonlinearity)
        super().__init__(cell, "RNNCell", device, dtype)
        self.nonlinearity = nonlinearity
        self.reset_parameters()

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:  # noqa: A002
        return self._step(input, None if hx is None else (hx,))[0]


def _rng_devices(device) -> list:
    return [] if device is None or torch.device(device).type == "cpu" else [device]
