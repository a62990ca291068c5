"""Drop-ins for torch.nn.LSTM, GRU and RNN.

Same constructor arguments and defaults, input and state shapes (batched, unbatched,
batch_first), PackedSequence in and out, ``(output, h_n)`` / ``(output, (h_n, c_n))`` returns,
parameter names (``weight_ih_l0``, ``weight_hh_l1_reverse``, ``weight_hr_l0``), gate order and
initialization (the same values as torch.nn for the same seed). A state_dict moves between
torch.nn and rnnkit both ways. The extra keyword ``strategy`` chooses how the cells run.

The layer owns its parameters under torch's names; the cells that compute with them are not
registered as submodules and are rebound to those parameters at every call.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnkit.cells import Cell, ElmanCell, GRUCell, LSTMCell
from rnnkit.nn.packed_native import run_packed, runs_natively
from rnnkit.nn.packing import repack, unpack
from rnnkit.nn.stack import run_stack, step_stack
from rnnkit.strategies import choose, make_strategy


class TorchCompatibleRNN(nn.Module):
    """Shared body of ``LSTM``, ``GRU`` and ``RNN``; ``mode`` is ``LSTM``, ``GRU``,
    ``RNN_TANH`` or ``RNN_RELU`` as in torch."""

    def __init__(
        self,
        mode: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        strategy: str = "auto",
    ) -> None:
        super().__init__()
        _check_torch_arguments(mode, hidden_size, num_layers, dropout, proj_size)
        # one fresh strategy object per cell, so each keeps its own diagnostics
        self.strategies = [
            make_strategy(strategy) for _ in range(num_layers * (2 if bidirectional else 1))
        ]
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.strategy = strategy
        num_directions = 2 if bidirectional else 1
        output_size = proj_size or hidden_size
        # fork_rng forks only CUDA generators: passing meta (or cpu) would initialize CUDA
        rng_devices = [device] if device is not None and torch.device(device).type == "cuda" else []
        cells: list[Cell] = []
        with torch.random.fork_rng(devices=rng_devices):  # torch.nn draws only in reset below
            for layer in range(num_layers):
                layer_input_size = input_size if layer == 0 else output_size * num_directions
                for direction in range(num_directions):
                    cell = _make_cell(mode, layer_input_size, hidden_size, bias, proj_size)
                    cell.to(device=device, dtype=dtype)
                    suffix = f"_l{layer}" + ("_reverse" if direction else "")
                    for name, parameter in cell.named_parameters():
                        self.register_parameter(name + suffix, parameter)
                    cells.append(cell)
        self._cells = cells
        self._flat_weights_names = [name for name, _ in self.named_parameters()]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn's initialization, drawing in the same order: U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / self.hidden_size**0.5 if self.hidden_size > 0 else 0
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """Parameters per layer and direction, as torch.nn's ``all_weights``."""
        return [list(cell.parameters()) for cell in self._bound_cells()]

    def flatten_parameters(self) -> None:
        """Kept for compatibility: torch.nn compacts cuDNN weights here; rnnkit needs nothing."""

    def describe_strategy(self) -> str:
        """Which strategy runs the cells now, and why."""
        cell = self._bound_cells()[0]
        if self.strategy != "auto":
            return self.strategy
        name, reason = choose(cell)
        return f"auto -> {name} ({reason})"

    def _bound_cells(self) -> list[Cell]:
        """The cells, pointed at this layer's current parameters (they may have been replaced)."""
        suffixes = [
            f"_l{layer}" + ("_reverse" if direction else "")
            for layer in range(self.num_layers)
            for direction in range(2 if self.bidirectional else 1)
        ]
        for cell, suffix in zip(self._cells, suffixes, strict=False):
            for name in cell._parameters:
                cell._parameters[name] = self._parameters[name + suffix]
            cell.train(self.training)
        return self._cells

    def forward(self, input: Tensor | PackedSequence, hx=None):  # noqa: A002 (torch's name)
        packed = input if isinstance(input, PackedSequence) else None
        batched = True
        if packed is not None and runs_natively(self._bound_cells(), self.strategy):
            return self._forward_packed_natively(packed, hx)
        if packed is not None:
            inputs, lengths = unpack(packed)
        else:
            if not isinstance(input, Tensor) or input.dim() not in (2, 3):
                got = f"{input.dim()}D" if isinstance(input, Tensor) else type(input).__name__
                got += " tensor" if self._name() == "RNN" else ""  # torch's wording differs
                raise ValueError(
                    f"{self._name()}: Expected input to be 2D or 3D, got {got} instead"
                )
            batched = input.dim() == 3
            inputs = input if batched else input.unsqueeze(0 if self.batch_first else 1)
            inputs = inputs if self.batch_first else inputs.transpose(0, 1)
            lengths = None
        if inputs.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {inputs.shape[-1]}"
            )
        cells = self._bound_cells()
        states = None if hx is None else self._states_from_torch(hx, inputs.shape[0], batched)
        outputs, final_states = run_stack(
            cells,
            2 if self.bidirectional else 1,
            inputs,
            states,
            lengths,
            self.strategies,
            self.dropout,
            self.training,
        )
        hidden = self._states_to_torch(final_states, batched)
        if packed is not None:
            assert lengths is not None  # from unpack(packed)
            return repack(outputs, lengths, packed), hidden
        if not self.batch_first:
            outputs = outputs.transpose(0, 1)
        if not batched:
            outputs = outputs.squeeze(0 if self.batch_first else 1)
        return outputs, hidden

    def _forward_packed_natively(self, packed: PackedSequence, hx):
        """The whole stack in one fused-kernel call on the packed data, as torch.nn runs it."""
        if packed.data.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {packed.data.shape[-1]}"
            )
        cells = self._bound_cells()
        if hx is not None:  # torch's shape checks and messages
            self._states_from_torch(hx, int(packed.batch_sizes[0]), batched=True)
            hx = tuple(hx) if self.mode == "LSTM" else hx
        weights = [self._flat_weight(name) for name in self._flat_weights_names]
        layout = (self.num_layers, self.bidirectional, self.dropout, self.training)
        return run_packed(cells, weights, packed, hx, layout)

    def _flat_weight(self, name: str) -> Tensor:
        weight = self._parameters[name]
        assert weight is not None  # registered from a cell's parameters in __init__
        return weight

    def step(self, input: Tensor, hx=None):  # noqa: A002 (torch's name)
        """One time step for decoding: ``input (B, D)`` (or unbatched ``(D,)``) and ``hx`` in
        torch's shape ``(num_layers, B, H)`` (LSTM: ``(h, c)``; None for zeros) -> ``output
        (B, O)`` (or ``(O,)``) and the new ``hx``, as ``forward`` returns them.

        Equal to ``forward`` over a sequence one step at a time. Unidirectional layers only: a
        reverse direction needs the future.
        """
        if self.bidirectional:
            raise ValueError(
                f"{self._name()}.step needs a unidirectional layer (bidirectional=False): "
                "the reverse direction needs the inputs of later steps"
            )
        if not isinstance(input, Tensor) or input.dim() not in (1, 2):
            got = f"{input.dim()}-D" if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(
                f"{self._name()}.step: expected input of shape (B, {self.input_size}) or "
                f"({self.input_size},), got {got}"
            )
        if input.shape[-1] != self.input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                f"got {input.shape[-1]}"
            )
        batched = input.dim() == 2
        inputs = input if batched else input.unsqueeze(0)
        states = None if hx is None else self._states_from_torch(hx, inputs.shape[0], batched)
        output, new_states = step_stack(
            self._bound_cells(), inputs, states, self.dropout, self.training
        )
        return (output if batched else output.squeeze(0)), self._states_to_torch(
            new_states, batched
        )

    def _name(self) -> str:
        return "RNN" if self.mode.startswith("RNN") else self.mode

    def _states_from_torch(self, hx, batch_size: int, batched: bool) -> list:
        """torch's ``(L * dirs, B, size)`` tensors -> one NamedTuple per cell."""
        fields = tuple(hx) if self.mode == "LSTM" else (hx,)
        if self.mode == "LSTM" and len(fields) != 2:
            raise ValueError(f"LSTM: hx must be a tuple (h_0, c_0), got {len(fields)} tensors")
        expected_dim = 3 if batched else 2
        if any(not isinstance(field, Tensor) or field.dim() != expected_dim for field in fields):
            dims = [f"{f.dim()}-D" if isinstance(f, Tensor) else type(f).__name__ for f in fields]
            kind = "batched 3-D" if batched else "unbatched 2-D"
            if self.mode == "LSTM":
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {expected_dim}-D but got "
                    f"({dims[0]}, {dims[1]}) tensors"
                )
            raise RuntimeError(
                f"For {kind} input, hx should also be {expected_dim}-D but got {dims[0]} tensor"
            )
        if not batched:
            fields = tuple(field.unsqueeze(1) for field in fields)
        count = self.num_layers * (2 if self.bidirectional else 1)
        sizes = self._cells[0].state_sizes()
        for index, (field, size) in enumerate(zip(fields, sizes, strict=False)):
            expected = (count, batch_size, size)
            if tuple(field.shape) != expected:
                which = f"hidden[{index}]" if self.mode == "LSTM" else "hidden"
                raise RuntimeError(f"Expected {which} size {expected}, got {list(field.shape)}")
        state_type = self._cells[0].state_type
        return [state_type(*(field[index] for field in fields)) for index in range(count)]

    def _states_to_torch(self, states, batched: bool):
        fields = [
            torch.stack(list(values)) for values in zip(*states, strict=False)
        ]  # each (L * dirs, B, size)
        if not batched:
            fields = [field.squeeze(1) for field in fields]
        return tuple(fields) if self.mode == "LSTM" else fields[0]

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size:
            text += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if not self.bias:
            text += ", bias=False"
        if self.batch_first:
            text += ", batch_first=True"
        if self.dropout:
            text += f", dropout={self.dropout}"
        if self.bidirectional:
            text += ", bidirectional=True"
        if self.strategy != "auto":
            text += f", strategy={self.strategy!r}"
        return text


class LSTM(TorchCompatibleRNN):
    """Drop-in for ``torch.nn.LSTM``; returns ``output, (h_n, c_n)``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        strategy: str = "auto",
    ) -> None:
        super().__init__(
            "LSTM",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            strategy,
        )


class GRU(TorchCompatibleRNN):
    """Drop-in for ``torch.nn.GRU``; returns ``output, h_n``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        strategy: str = "auto",
    ) -> None:
        super().__init__(
            "GRU",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            strategy,
        )


class RNN(TorchCompatibleRNN):
    """Drop-in for ``torch.nn.RNN`` (Elman, tanh or relu); returns ``output, h_n``."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        strategy: str = "auto",
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'."
            )
        self.nonlinearity = nonlinearity
        super().__init__(
            f"RNN_{nonlinearity.upper()}",
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            0,
            device,
            dtype,
            strategy,
        )


def _make_cell(mode: str, input_size: int, hidden_size: int, bias: bool, proj_size: int) -> Cell:
    if mode == "LSTM":
        return LSTMCell(input_size, hidden_size, bias, proj_size=proj_size)
    if mode == "GRU":
        return GRUCell(input_size, hidden_size, bias)
    nonlinearity = "relu" if mode == "RNN_RELU" else "tanh"
    return ElmanCell(input_size, hidden_size, bias, nonlinearity=nonlinearity)


def _check_torch_arguments(
    mode: str, hidden_size: int, num_layers: int, dropout: float, proj_size: int
) -> None:
    """torch.nn.RNNBase's argument checks, with its messages."""
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the probability of an "
            "element being zeroed"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so non-zero "
            f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
            f"num_layers={num_layers}",
            stacklevel=3,
        )
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool):
        raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")
    if proj_size and mode != "LSTM":
        raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
