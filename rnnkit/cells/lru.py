"""LRU: the Linear Recurrent Unit, a complex diagonal linear recurrence with ring initialization.

Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu, De 2023, "Resurrecting Recurrent Neural
Networks for Long Sequences", https://arxiv.org/abs/2303.06349 (Section 3 and the code of
Appendix A). With u_t the input (B, H), H = input_size (the paper's model width), and x_t the
complex state (B, N), N = hidden_size:

    lambda = exp(-exp(nu_log) + i exp(theta_log))                  (N,) complex, |lambda| < 1
    gamma  = exp(gamma_log)                                        (N,) real
    x_t    = lambda * x_{t-1} + gamma * ((B_real + i B_imag) u_t)
    y_t    = Re((C_real + i C_imag) x_t) + D * u_t                 (B, H) real

The output y_t has the input's width, as in the paper's LRU layer (which then mixes
channels with an MLP or GLU outside the recurrence); stacked layers therefore keep the width
of what they read. ``bias=False`` drops the feedthrough ``D * u_t``, the paper's only
parameter vector outside the projections and the recurrence (the LRU has no additive bias).

Initialization (Appendix A): lambda uniform on the ring r_min <= |lambda| <= r_max with phase
in [0, max_phase], drawn as u1, u2 ~ U[0, 1),

    nu_log    = log(-1/2 log(u1 (r_max^2 - r_min^2) + r_min^2)),  theta_log = log(max_phase u2),
    gamma_log = log(sqrt(1 - |lambda|^2))                          (the normalization),
    B_real, B_imag ~ N(0, 1 / (2 H)),  C_real, C_imag ~ N(0, 1 / N),  D ~ N(0, 1),

with the defaults of the paper's code, r_min = 0, r_max = 1, max_phase = 6.28 (the paper tunes
them per task; rings close to 1 for long-range dependencies). Parameters are named as in the
paper's code (its B_re, B_im, C_re, C_im are B_real, B_imag, C_real, C_imag) and are all real:
complex quantities are computed from them, so optimizers and ``torch.autograd.gradcheck`` see
real tensors only.

The state is complex, ``LRUState(x)`` with ``x (B, N)`` of the complex dtype matching the
parameters (float32 -> complex64, float64 -> complex128). For the scan strategy the
recurrence is the ``"diagonal"`` form ``x_t = a * x_{t-1} + b_t`` with ``a = lambda`` for every
step and ``b_t = gamma * B u_t``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell


class LRUState(NamedTuple):
    """The complex state ``x (B, N)``."""

    x: Tensor


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype whose parts are ``dtype``: float32 -> complex64, float64 -> complex128."""
    return torch.promote_types(dtype, torch.complex64)


def check_positive_number(name: str, value: object) -> None:
    """Raise a ValueError naming ``name`` unless ``value`` is a positive real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")


class LRUCell(Cell):
    """The Linear Recurrent Unit; see the module docstring for the equations.

    Args:
        input_size: H, the features of u_t and of y_t.
        hidden_size: N, the complex state dimension.
        bias: whether y_t has the feedthrough ``D * u_t``.
        r_min, r_max: the ring of |lambda| at initialization, 0 <= r_min < r_max <= 1.
        max_phase: the largest phase arg(lambda) at initialization, in radians.
    """

    is_linear = True
    linear_form = "diagonal"
    state_type = LRUState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        r_min: float = 0.0,
        r_max: float = 1.0,
        max_phase: float = 6.28,
    ) -> None:
        super().__init__(input_size, hidden_size)
        if not 0 <= r_min < r_max <= 1:
            raise ValueError(f"need 0 <= r_min < r_max <= 1, got r_min={r_min}, r_max={r_max}")
        check_positive_number("max_phase", max_phase)
        self.bias = bias
        self.r_min, self.r_max, self.max_phase = float(r_min), float(r_max), float(max_phase)
        self.nu_log = nn.Parameter(torch.empty(hidden_size))
        self.theta_log = nn.Parameter(torch.empty(hidden_size))
        self.gamma_log = nn.Parameter(torch.empty(hidden_size))
        self.B_real = nn.Parameter(torch.empty(hidden_size, input_size))
        self.B_imag = nn.Parameter(torch.empty(hidden_size, input_size))
        self.C_real = nn.Parameter(torch.empty(input_size, hidden_size))
        self.C_imag = nn.Parameter(torch.empty(input_size, hidden_size))
        self.D = nn.Parameter(torch.empty(input_size)) if bias else None
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        """y_t has the input's width H."""
        return self.input_size

    def reset_parameters(self) -> None:
        """The ring initialization of lambda, gamma's normalization, Glorot-scaled B and C."""
        # drawn in float64: a uniform of exactly 0 would put nu_log or theta_log at -inf
        uniform = torch.rand(2, self.hidden_size, dtype=torch.float64)
        squared_radius = uniform[0] * (self.r_max**2 - self.r_min**2) + self.r_min**2
        nu_log = torch.log(-0.5 * torch.log(squared_radius))
        theta_log = torch.log(self.max_phase * uniform[1])
        with torch.no_grad():
            self.nu_log.copy_(nu_log)
            self.theta_log.copy_(theta_log)
            self.gamma_log.copy_(0.5 * torch.log1p(-squared_radius))  # log sqrt(1 - |lambda|^2)
            nn.init.normal_(self.B_real, std=1 / math.sqrt(2 * self.input_size))
            nn.init.normal_(self.B_imag, std=1 / math.sqrt(2 * self.input_size))
            nn.init.normal_(self.C_real, std=1 / math.sqrt(self.hidden_size))
            nn.init.normal_(self.C_imag, std=1 / math.sqrt(self.hidden_size))
            if self.D is not None:
                nn.init.normal_(self.D)

    def eigenvalues(self) -> Tensor:
        """lambda ``(N,)``, complex."""
        return torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> LRUState:
        """The zero state ``x (batch_size, N)`` in the complex dtype matching ``dtype``."""
        (zeros,) = super().initial_state(batch_size, device=device, dtype=dtype)
        return LRUState(zeros.to(complex_dtype(zeros.dtype)))

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., H) -> (..., 2N + H)``: real and imaginary parts of gamma * B u_t, then u_t."""
        gamma = torch.exp(self.gamma_log)
        weight = torch.cat([gamma[:, None] * self.B_real, gamma[:, None] * self.B_imag])
        return torch.cat([functional.linear(inputs, weight), inputs], -1)

    def split(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        """``projected (..., 2N + H)`` -> ``gamma B u_t (..., N)`` complex, ``u_t (..., H)``."""
        size = self.hidden_size
        driven = torch.complex(projected[..., :size], projected[..., size : 2 * size])
        return driven, projected[..., 2 * size :]

    def readout(self, x: Tensor, inputs: Tensor) -> Tensor:
        """``y = Re(C x) + D * u`` for ``x (..., N)`` complex and ``u (..., H)``."""
        outputs = functional.linear(x.real, self.C_real) - functional.linear(x.imag, self.C_imag)
        return outputs if self.D is None else outputs + self.D * inputs

    def recur(self, projected: Tensor, state: LRUState) -> tuple[Tensor, LRUState]:
        """``projected (B, 2N + H)``, state ``x (B, N)`` -> ``y_t (B, H)``, new state."""
        driven, inputs = self.split(projected)
        x = self.eigenvalues() * state.x + driven
        return self.readout(x, inputs), LRUState(x)

    def scan_terms(self, projected: Tensor, state: LRUState) -> tuple[Tensor, Tensor]:
        """``a = lambda (N,)`` (the same every step, broadcast) and ``b = gamma B u (B, T, N)``."""
        driven, _ = self.split(projected)
        return self.eigenvalues(), driven

    def scan_initial(self, state: LRUState) -> Tensor:
        return state.x

    def scan_readout(
        self, projected: Tensor, hidden: Tensor, state: LRUState, lengths: Tensor | None
    ) -> tuple[Tensor, LRUState]:
        """Padded steps leave the state unchanged, so the final state is ``hidden[:, -1]``."""
        _, inputs = self.split(projected)
        return self.readout(hidden, inputs), LRUState(hidden[:, -1])

    def extra_repr(self) -> str:
        options = [
            super().extra_repr(),
            f"r_min={self.r_min}, r_max={self.r_max}, max_phase={self.max_phase}",
        ]
        return ", ".join(options + ([] if self.bias else ["bias=False"]))
