"""Piecewise-linear RNNs for dynamical-systems reconstruction: the PLRNN and the AL-RNN.

PLRNN (Durstewitz 2017, "A state space approach for piecewise-linear recurrent neural networks
for identifying computational dynamics from neural measurements", PLoS Comput Biol 13(6),
https://doi.org/10.1371/journal.pcbi.1005542; Koppe, Toutounji, Kirsch, Lis, Durstewitz 2019,
https://doi.org/10.1371/journal.pcbi.1007263):

    z_t = A z_{t-1} + W relu(z_{t-1}) + h + C s_t

AL-RNN (Brenner, Hess, Mikhaeil, Bereska, Monfared, Kuo, Durstewitz 2024, "Almost-Linear RNNs
Yield Highly Interpretable Symbolic Codes in Dynamical Systems Reconstruction", NeurIPS 2024,
https://arxiv.org/abs/2410.14240): only the last P of the M units pass through the ReLU,

    z_t = A z_{t-1} + W phi*(z_{t-1}) + h + C s_t,
    phi*(z) = (z_1, ..., z_{M-P}, relu(z_{M-P+1}), ..., relu(z_M))

A = diag(``diagonal``) (M,), h = ``bias`` (M,), C = ``weight_ih`` (M, D) for external inputs s_t
(an autonomous system reads zeros). In the PLRNN W = ``off_diagonal`` (M, M) with its diagonal
masked to zero (the self-connection is A alone; the reference GTF-shPLRNN code keeps W off the
diagonal, ``keep_connectivity_offdiagonal!``); in the AL-RNN W = ``weight_hh`` (M, M) is a full
matrix, as in the reference ALRNN-DSR code (``src/models/alrnn.jl``: ``A .* z .+ W * phi*(z)``),
so a ReLU unit's self-map is piecewise linear, A_i z + W_ii relu(z). The PLRNN is the AL-RNN
with P = M and W's diagonal zero. The output y_t is z_t; a dynamics model observes the first N
units (the identity observation of generalized teacher forcing,
``rnnkit.train.teacher_forcing``), which in the AL-RNN are linear units when N <= M - P.

Initialization as the DurstewitzLab reference code: the "normalized positive definite" matrix
of Talathi & Vartak 2016 (https://arxiv.org/abs/1511.03771), K = (R^T R / M + I) / lambda_max
with R ~ N(0, 1), gives A = diag(K); the PLRNN takes W = offdiag(K) (GTF-shPLRNN
``initialize_A_W_h``), the AL-RNN W ~ N(0, 0.01^2) (ALRNN-DSR ``initialize_A_W_h``:
``gaussian_init``), which starts it almost linear and decoupled; h = 0; C from
U(-1/sqrt(D), 1/sqrt(D)). ``initial_radius`` scales K to a smaller largest eigenvalue (1 in the
papers): a contractive start.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int
from rnnkit.cells.gru import HiddenState


def normalized_positive_definite(size: int, radius: float = 1.0) -> Tensor:
    """Talathi & Vartak's ``(size, size)`` positive definite matrix, largest eigenvalue
    ``radius`` (1 in the paper)."""
    random = torch.randn(size, size)
    matrix = random.t() @ random / size + torch.eye(size)
    return radius * matrix / torch.linalg.eigvalsh(matrix).abs().max()


def almost_linear_step(
    projected: Tensor, z: Tensor, diagonal: Tensor, weight: Tensor, floor: Tensor | None
) -> Tensor:
    """``A z + W phi*(z) + projected`` for ``z (B, M)``, ``projected (B, M) = h + C s_t``, the
    effective ``weight`` W ``(M, M)``: phi*(z) = max(z, floor) with ``floor (M)`` -inf on the
    linear units and 0 on the ReLU units (the module's equation); relu(z) when ``floor`` is
    None (every unit a ReLU: a third faster than ``maximum`` with a zero floor, measured)."""
    activated = torch.relu(z) if floor is None else torch.maximum(z, floor)
    return torch.addmm(projected + diagonal * z, activated, weight.t())


def relu_floor(size: int, num_relu: int) -> Tensor:
    """``(size,)``: -inf on the first ``size - num_relu`` units, 0 on the last ``num_relu``."""
    floor = torch.full((size,), float("-inf"))
    floor[size - num_relu :] = 0.0
    return floor


def piecewise_linear_parameters(
    input_size: int, hidden_size: int, bias: bool, initial_radius: float, almost_linear: bool
) -> tuple[nn.Parameter, nn.Parameter, nn.Parameter, nn.Parameter | None]:
    """``diagonal (M)``, W ``(M, M)``, ``weight_ih (M, D)``, ``bias (M)`` or None, initialized
    as the module docstring says (the AL-RNN's W with ``almost_linear``)."""
    if not 0 < initial_radius <= 1:
        raise ValueError(f"initial_radius must be in (0, 1], got {initial_radius!r}")
    diagonal = nn.Parameter(torch.empty(hidden_size))
    off_diagonal = nn.Parameter(torch.empty(hidden_size, hidden_size))
    weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
    bias_parameter = nn.Parameter(torch.zeros(hidden_size)) if bias else None
    initialize(diagonal, off_diagonal, weight_ih, bias_parameter, initial_radius, almost_linear)
    return diagonal, off_diagonal, weight_ih, bias_parameter


@torch.no_grad()
def initialize(
    diagonal: Tensor,
    off_diagonal: Tensor,
    weight_ih: Tensor,
    bias: Tensor | None,
    initial_radius: float,
    almost_linear: bool,
) -> None:
    """The reference initialization of the module docstring, in place (W the AL-RNN's with
    ``almost_linear``, else the PLRNN's)."""
    matrix = normalized_positive_definite(diagonal.shape[0], initial_radius)
    diagonal.copy_(torch.diagonal(matrix))
    if almost_linear:
        nn.init.normal_(off_diagonal, std=0.01)
    else:
        off_diagonal.copy_(matrix - torch.diag(torch.diagonal(matrix)))
    bound = 1.0 / weight_ih.shape[1] ** 0.5
    nn.init.uniform_(weight_ih, -bound, bound)
    if bias is not None:
        bias.zero_()


class PLRNNCell(Cell):
    """PLRNN: ``z_t = A z_{t-1} + W relu(z_{t-1}) + h + C s_t`` (module docstring).

    Parameters: ``diagonal (M)``, ``off_diagonal (M, M)`` (its diagonal unused),
    ``weight_ih (M, D)``, ``bias (M)`` (None with ``bias=False``).
    """

    state_type = HiddenState
    output_field = "h"
    diagonal: nn.Parameter
    off_diagonal: nn.Parameter
    weight_ih: nn.Parameter
    bias: nn.Parameter | None
    mask: Tensor

    def __init__(
        self, input_size: int, hidden_size: int, bias: bool = True, *, initial_radius: float = 1.0
    ) -> None:
        super().__init__(input_size, hidden_size)
        self.initial_radius = initial_radius
        parameters = piecewise_linear_parameters(
            input_size, hidden_size, bias, initial_radius, almost_linear=False
        )
        self.diagonal, self.off_diagonal, self.weight_ih, self.bias = parameters
        self.register_buffer("mask", 1 - torch.eye(hidden_size), persistent=False)

    @property
    def num_relu(self) -> int:
        """P: units passed through the ReLU (all of them)."""
        return self.hidden_size

    def reset_parameters(self) -> None:
        initialize(
            self.diagonal, self.off_diagonal, self.weight_ih, self.bias, self.initial_radius, False
        )

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., M)``: C s_t + h."""
        return functional.linear(inputs, self.weight_ih, self.bias)

    def recur(self, projected: Tensor, state: HiddenState) -> tuple[Tensor, HiddenState]:
        """``projected (B, M)``, state ``(z (B, M),)`` -> ``z_t``, new state."""
        weight = self.off_diagonal * self.mask
        z = almost_linear_step(projected, state.h, self.diagonal, weight, None)
        return z, HiddenState(z)

    def extra_repr(self) -> str:
        return super().extra_repr() + ("" if self.bias is not None else ", bias=False")


class ALRNNCell(Cell):
    """AL-RNN: ReLU on the last ``num_relu`` (P) of the M units only (module docstring).

    Parameters: ``diagonal (M)``, ``weight_hh (M, M)`` (W, all of it), ``weight_ih (M, D)``,
    ``bias (M)`` (None with ``bias=False``); ``num_relu`` in 1..M.
    """

    state_type = HiddenState
    output_field = "h"
    diagonal: nn.Parameter
    weight_hh: nn.Parameter
    weight_ih: nn.Parameter
    bias: nn.Parameter | None
    floor: Tensor

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        num_relu: int = 2,
        initial_radius: float = 1.0,
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("num_relu", num_relu)
        if num_relu > hidden_size:
            raise ValueError(
                f"num_relu must be at most hidden_size ({hidden_size}), got {num_relu}"
            )
        self.num_relu = num_relu
        self.initial_radius = initial_radius
        parameters = piecewise_linear_parameters(
            input_size, hidden_size, bias, initial_radius, almost_linear=True
        )
        self.diagonal, self.weight_hh, self.weight_ih, self.bias = parameters
        self.register_buffer("floor", relu_floor(hidden_size, num_relu), persistent=False)

    def reset_parameters(self) -> None:
        initialize(
            self.diagonal, self.weight_hh, self.weight_ih, self.bias, self.initial_radius, True
        )

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., M)``: C s_t + h."""
        return functional.linear(inputs, self.weight_ih, self.bias)

    def recur(self, projected: Tensor, state: HiddenState) -> tuple[Tensor, HiddenState]:
        """``projected (B, M)``, state ``(z (B, M),)`` -> ``z_t``, new state."""
        z = almost_linear_step(projected, state.h, self.diagonal, self.weight_hh, self.floor)
        return z, HiddenState(z)

    def extra_repr(self) -> str:
        options = [super().extra_repr(), f"num_relu={self.num_relu}"]
        return ", ".join(options + ([] if self.bias is not None else ["bias=False"]))
