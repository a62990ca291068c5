"""ParaGRU and ParaLSTM: nonlinear cells with diagonal recurrence, made for Newton solves.

Danieli, Rodriguez, Sarabia, Suau, Zappella 2025, "ParaRNN: Unlocking Parallel Training of
Nonlinear RNNs for Large Language Models", https://arxiv.org/abs/2510.21450. The input
projections are dense; the recurrent matrices are diagonal (vectors a_*), so the Jacobian of a
step is diagonal (ParaGRU) or 2x2 blocks per unit over (c, h) (ParaLSTM), and a Newton step is
a cheap scan.

ParaGRU (gate order z, r, n):
    z_t = sigmoid(W_z x_t + b_z + a_z * h_{t-1})
    r_t = sigmoid(W_r x_t + b_r + a_r * h_{t-1})
    n_t = tanh(W_n x_t + b_n + a_n * (r_t * h_{t-1}))
    h_t = (1 - z_t) * h_{t-1} + z_t * n_t
With ``num_heads = k`` the a_* become block-diagonal matrices of k heads (H/k x H/k blocks),
``A_* h`` replacing ``a_* * h``, and the Jacobian is block-diagonal.

ParaLSTM (coupled input and forget gates with peepholes; gate order f, o, c):
    f_t  = sigmoid(W_f x_t + b_f + a_f * h_{t-1} + p_f * c_{t-1})
    c~_t = tanh(W_c x_t + b_c + a_c * h_{t-1})
    c_t  = f_t * c_{t-1} + (1 - f_t) * c~_t
    o_t  = sigmoid(W_o x_t + b_o + a_o * h_{t-1} + p_o * c_t)
    h_t  = o_t * tanh(c_t)

Initialization as the ParaRNN reference code: recurrent and peephole weights from
N(0, (2 / sqrt(5 H))^2), input weights Xavier-uniform, biases zero except the first gate's
(z for ParaGRU, f for ParaLSTM), which starts at -linspace(0, 1, H).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int
from rnnkit.cells.gru import HiddenState


class ParaLSTMState(NamedTuple):
    h: Tensor  # (B, H)
    c: Tensor  # (B, H)


def _initialize(cell: ParaGRUCell | ParaLSTMCell, recurrent: list[Tensor], gates: int) -> None:
    hidden, inputs = cell.hidden_size, cell.input_size
    with torch.no_grad():
        for weight in recurrent:
            weight.normal_(0.0, 2 / math.sqrt(5 * hidden))
        bound = math.sqrt(6 / (inputs + hidden))
        cell.weight_ih.uniform_(-bound, bound)
        if cell.bias_ih is not None:
            cell.bias_ih.zero_()
            cell.bias_ih[:hidden] = -torch.linspace(0, 1, hidden, dtype=cell.bias_ih.dtype)


class ParaGRUCell(Cell):
    """ParaGRU: ``weight_ih (3H, D)``, ``bias_ih (3H)``, ``weight_hh (3, H)`` diagonal or
    ``(3, k, H/k, H/k)`` with ``num_heads = k``."""

    state_type = HiddenState
    output_field = "h"
    fused_kernel = "paragru"  # diagonal and block-diagonal (heads) recurrence alike

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, num_heads: int | None = None
    ) -> None:
        super().__init__(input_size, hidden_size)
        if num_heads is not None:
            check_positive_int("num_heads", num_heads)
            if hidden_size % num_heads:
                raise ValueError(
                    f"num_heads must divide hidden_size, got num_heads={num_heads} and "
                    f"hidden_size={hidden_size}"
                )
        self.bias = bias
        self.num_heads = num_heads
        self.jacobian_structure = "diagonal" if num_heads is None else "block"
        self.jacobian_block_size = 1 if num_heads is None else hidden_size // num_heads
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        shape = (
            (3, hidden_size)
            if num_heads is None
            else (3, num_heads, self.jacobian_block_size, self.jacobian_block_size)
        )
        self.weight_hh = nn.Parameter(torch.empty(shape))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _initialize(self, [self.weight_hh], 3)

    @property
    def compiled_kernel(self) -> str | None:  # type: ignore[override]  # a property here
        """The compiled kernel covers the diagonal form only, not heads."""
        return "paragru" if self.num_heads is None else None

    def compiled_weights(self) -> dict[str, Tensor]:
        """``{"recurrent": weight_hh (3, H)}``."""
        return {"recurrent": self.weight_hh}

    def fused_weights(self, batch_size: int) -> dict[str, Any]:
        """``{"recurrent": weight_hh (3, H)}``, or with heads ``{"recurrent_blocks": weight_hh
        (3, k, H/k, H/k)}`` (``kernels/fused_pararnn.py``); no regularization to apply."""
        role = "recurrent" if self.num_heads is None else "recurrent_blocks"
        return {role: self.weight_hh}

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., 3H)``: W x + b for z, r, n."""
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def _recurrent(self, index: int, h: Tensor) -> Tensor:
        """``a_index * h`` (diagonal) or ``A_index h`` per head, ``h (N, H)``."""
        if self.num_heads is None:
            return self.weight_hh[index] * h
        heads = h.unflatten(-1, (self.num_heads, self.jacobian_block_size))  # (N, k, d)
        return torch.einsum("gde,nge->ngd", self.weight_hh[index], heads).flatten(-2)

    def recur(self, projected: Tensor, state: HiddenState) -> tuple[Tensor, HiddenState]:
        """``projected (N, 3H)``, state ``(h (N, H),)`` -> ``h_t``, new state."""
        (h,) = state
        input_z, input_r, input_n = projected.chunk(3, -1)
        update = torch.sigmoid(input_z + self._recurrent(0, h))
        reset = torch.sigmoid(input_r + self._recurrent(1, h))
        candidate = torch.tanh(input_n + self._recurrent(2, reset * h))
        h_new = torch.lerp(h, candidate, update)
        return h_new, HiddenState(h_new)

    def state_jacobian(self, projected: Tensor, state: HiddenState) -> Tensor:
        """dh_t/dh_{t-1}: ``(N, H)`` diagonal, or ``(N, k, d, d)`` blocks with heads."""
        (h,) = state
        input_z, input_r, input_n = projected.chunk(3, -1)
        update = torch.sigmoid(input_z + self._recurrent(0, h))
        reset = torch.sigmoid(input_r + self._recurrent(1, h))
        candidate = torch.tanh(input_n + self._recurrent(2, reset * h))
        if self.num_heads is None:
            update_slope = update * (1 - update) * self.weight_hh[0]
            reset_slope = reset * (1 - reset) * self.weight_hh[1]
            candidate_slope = (1 - candidate**2) * self.weight_hh[2] * (reset + h * reset_slope)
            return 1 - update + (candidate - h) * update_slope + update * candidate_slope
        split = (self.num_heads, self.jacobian_block_size)
        z, r, n, h_heads = (t.unflatten(-1, split) for t in (update, reset, candidate, h))
        eye = torch.eye(split[1], dtype=h.dtype, device=h.device)
        dz = (z * (1 - z)).unsqueeze(-1) * self.weight_hh[0]  # (N, k, d, d): rows scaled
        dr = (r * (1 - r)).unsqueeze(-1) * self.weight_hh[1]
        d_product = r.unsqueeze(-1) * eye + h_heads.unsqueeze(-1) * dr  # d(r * h)/dh
        dn = (1 - n**2).unsqueeze(-1) * torch.matmul(self.weight_hh[2], d_product)
        return (1 - z).unsqueeze(-1) * eye + (n - h_heads).unsqueeze(-1) * dz + z.unsqueeze(-1) * dn


class ParaLSTMCell(Cell):
    """ParaLSTM: ``weight_ih (3H, D)``, ``bias_ih (3H)``, ``weight_hh (3, H)`` (a_f, a_o,
    a_c), ``weight_peephole (2, H)`` (p_f, p_o); Jacobian 2x2 blocks over (c_j, h_j)."""

    state_type = ParaLSTMState
    output_field = "h"
    jacobian_structure = "block"
    jacobian_block_size = 2
    compiled_kernel = "paralstm"
    fused_kernel = "paralstm"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True) -> None:
        super().__init__(input_size, hidden_size)
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size)) if bias else None
        self.weight_hh = nn.Parameter(torch.empty(3, hidden_size))
        self.weight_peephole = nn.Parameter(torch.empty(2, hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _initialize(self, [self.weight_hh, self.weight_peephole], 3)

    def compiled_weights(self) -> dict[str, Tensor]:
        """``{"recurrent": weight_hh (3, H), "peephole": weight_peephole (2, H)}``."""
        return {"recurrent": self.weight_hh, "peephole": self.weight_peephole}

    def fused_weights(self, batch_size: int) -> dict[str, Any]:
        """``{"recurrent": weight_hh (3, H), "peephole": weight_peephole (2, H)}``
        (``kernels/fused_pararnn.py``); no regularization to apply."""
        return {"recurrent": self.weight_hh, "peephole": self.weight_peephole}

    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size, self.hidden_size)

    def flatten_state(self, state: ParaLSTMState) -> Tensor:
        """``(N, 2H)`` with each unit's (c_j, h_j) side by side: the Jacobian's 2x2 blocks."""
        return torch.stack((state.c, state.h), -1).flatten(-2)

    def unflatten_state(self, flat: Tensor) -> ParaLSTMState:
        c, h = flat.unflatten(-1, (self.hidden_size, 2)).unbind(-1)
        return ParaLSTMState(h, c)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., 3H)``: W x + b for f, o, c~."""
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def _gates(self, projected: Tensor, state: ParaLSTMState):
        h, c = state
        input_f, input_o, input_c = projected.chunk(3, -1)
        forget = torch.sigmoid(input_f + self.weight_hh[0] * h + self.weight_peephole[0] * c)
        candidate = torch.tanh(input_c + self.weight_hh[2] * h)
        c_new = torch.lerp(candidate, c, forget)  # f c + (1 - f) c~
        output = torch.sigmoid(input_o + self.weight_hh[1] * h + self.weight_peephole[1] * c_new)
        return forget, candidate, c_new, output

    def recur(self, projected: Tensor, state: ParaLSTMState) -> tuple[Tensor, ParaLSTMState]:
        """``projected (N, 3H)``, state ``(h, c)`` each ``(N, H)`` -> ``h_t``, new state."""
        _, _, c_new, output = self._gates(projected, state)
        h_new = output * torch.tanh(c_new)
        return h_new, ParaLSTMState(h_new, c_new)

    def state_jacobian(self, projected: Tensor, state: ParaLSTMState) -> Tensor:
        """``(N, H, 2, 2)``: per unit, d(c_t, h_t)/d(c_{t-1}, h_{t-1})."""
        h, c = state
        forget, candidate, c_new, output = self._gates(projected, state)
        forget_slope = forget * (1 - forget)
        dc_dc = forget + (c - candidate) * forget_slope * self.weight_peephole[0]
        dc_dh = (c - candidate) * forget_slope * self.weight_hh[0] + (1 - forget) * (
            1 - candidate**2
        ) * self.weight_hh[2]
        output_slope = output * (1 - output)
        tanh_c = torch.tanh(c_new)
        through_cell = output_slope * self.weight_peephole[1] * tanh_c + output * (1 - tanh_c**2)
        dh_dc = through_cell * dc_dc
        dh_dh = output_slope * self.weight_hh[1] * tanh_c + through_cell * dc_dh
        return torch.stack((torch.stack((dc_dc, dc_dh), -1), torch.stack((dh_dc, dh_dh), -1)), -2)
