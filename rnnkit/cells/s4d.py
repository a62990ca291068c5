"""S4D: a diagonal state-space layer, one complex diagonal SSM per input channel.

Gu, Johnson, Goel, Saab, Dao, Rudra, Re 2021, "Combining Recurrent, Convolutional, and
Continuous-time Models with Linear State-Space Layers" (LSSL), https://arxiv.org/abs/2110.13985,
and Gu, Gupta, Goel, Re 2022, "On the Parameterization and Initialization of Diagonal State
Space Models" (S4D), https://arxiv.org/abs/2206.11893. Every channel c of u_t (B, H),
H = input_size, runs its own SSM x' = A x + B u, y = C x + D u with diagonal complex A,
discretized by zero-order hold with a learned step dt_c:

    dt     = exp(log_dt)                                       (H,)
    A      = -exp(log_A_real) + i A_imag                       (H, M) complex
    A_bar  = exp(dt A),   B_bar = (exp(dt A) - 1) / A * B      (zero-order hold)
    x_t    = A_bar * x_{t-1} + B_bar * u_t                     (B, H, M) complex
    y_t    = 2 Re(sum_m C_m x_{t,m}) + D * u_t                 (B, H) real

Conjugate-pair convention: a real SSM with state size N = hidden_size has its eigenvalues in
conjugate pairs, so only M = N / 2 modes per channel are kept and the other half contributes
the complex conjugate, hence the factor 2 in y_t (hidden_size must be even). The state is
``S4DState(x)`` with ``x (B, H * M)`` complex (channel-major: index c * M + m), of the complex
dtype matching the parameters. The output has the input's width H. ``bias=False`` drops the
skip ``D * u_t`` (S4D has no additive bias).

Initialization (S4D Section 4 and the reference code, state-spaces/s4 ``s4d.py``, ``dplr.py``):
log_dt ~ U[log dt_min, log dt_max] (dt_min = 0.001, dt_max = 0.1), Re A = -1/2, B = 1,
C ~ complex N(0, 1) (real and imaginary parts of variance 1/2), D ~ N(0, 1), and Im A by
``initialization``:

    "lin" (S4D-Lin):  A_n = -1/2 + i pi n
    "inv" (S4D-Inv):  A_n = -1/2 + i (N / pi) (N / (2n + 1) - 1),   n = 0 .. M - 1.

All parameters are real (complex ones stored as real and imaginary parts).

Two ways to compute the same map: the recurrence (``recur``, or the scan strategy over the
``"diagonal"`` form with ``a = A_bar`` and ``b_t = B_bar u_t`` flattened to (B, T, H * M)), and
the convolution ``y = K * u + D u`` with the kernel ``K_l = 2 Re(sum_m C_m B_bar_m A_bar_m^l)``
computed by FFT (``convolve``, which also adds the initial state's contribution
``2 Re(sum_m C_m A_bar_m^(t+1) x_{0,m})`` and returns the final state).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.cells.base import Cell
from rnnkit.cells.lru import check_positive_number, complex_dtype

INITIALIZATIONS = ("lin", "inv")


class S4DState(NamedTuple):
    """The complex state ``x (B, H * M)``, channel-major."""

    x: Tensor


class S4DCell(Cell):
    """Diagonal state-space layer; see the module docstring for the equations.

    Args:
        input_size: H, the channels of u_t and y_t (one SSM each).
        hidden_size: N, the state size per channel (even; N / 2 complex modes are kept).
        bias: whether y_t has the skip ``D * u_t``.
        initialization: ``"lin"`` (S4D-Lin) or ``"inv"`` (S4D-Inv) for Im A.
        dt_min, dt_max: the range of the step dt at initialization (log-uniform).
    """

    is_linear = True
    linear_form = "diagonal"
    state_type = S4DState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        initialization: str = "lin",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
    ) -> None:
        super().__init__(input_size, hidden_size)
        if hidden_size % 2:
            raise ValueError(
                "hidden_size (the state size N per channel) must be even: N / 2 complex modes "
                f"and their conjugates, got {hidden_size}"
            )
        if initialization not in INITIALIZATIONS:
            raise ValueError(
                f"initialization must be one of {INITIALIZATIONS}, got {initialization!r}"
            )
        check_positive_number("dt_min", dt_min)
        if not dt_min <= dt_max:
            raise ValueError(f"need dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.bias = bias
        self.initialization = initialization
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.modes = hidden_size // 2
        shape = (input_size, self.modes)
        self.log_dt = nn.Parameter(torch.empty(input_size))
        self.log_A_real = nn.Parameter(torch.empty(shape))
        self.A_imag = nn.Parameter(torch.empty(shape))
        self.B_real = nn.Parameter(torch.empty(shape))
        self.B_imag = nn.Parameter(torch.empty(shape))
        self.C_real = nn.Parameter(torch.empty(shape))
        self.C_imag = nn.Parameter(torch.empty(shape))
        self.D = nn.Parameter(torch.empty(input_size)) if bias else None
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        """y_t has the input's width H."""
        return self.input_size

    def state_sizes(self) -> tuple[int, ...]:
        return (self.input_size * self.modes,)

    def reset_parameters(self) -> None:
        """S4D-Lin or S4D-Inv A, log-uniform dt, B = 1, complex normal C, normal D."""
        size = self.hidden_size
        index = torch.arange(self.modes, dtype=torch.float64)
        if self.initialization == "lin":
            imaginary = math.pi * index
        else:
            imaginary = size / math.pi * (size / (2 * index + 1) - 1)
        log_low, log_high = math.log(self.dt_min), math.log(self.dt_max)
        with torch.no_grad():
            nn.init.uniform_(self.log_dt, log_low, log_high)
            self.log_A_real.fill_(math.log(0.5))
            self.A_imag.copy_(imaginary.expand_as(self.A_imag))
            self.B_real.fill_(1.0)
            self.B_imag.zero_()
            nn.init.normal_(self.C_real, std=math.sqrt(0.5))
            nn.init.normal_(self.C_imag, std=math.sqrt(0.5))
            if self.D is not None:
                nn.init.normal_(self.D)

    def discretized(self) -> tuple[Tensor, Tensor, Tensor]:
        """``dt A``, ``A_bar`` and ``B_bar``, each ``(H, M)`` complex (zero-order hold)."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        dt_A = torch.exp(self.log_dt)[:, None] * A
        A_bar = torch.exp(dt_A)
        B_bar = (A_bar - 1) / A * torch.complex(self.B_real, self.B_imag)
        return dt_A, A_bar, B_bar

    def initial_state(
        self,
        batch_size: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> S4DState:
        """The zero state ``x (batch_size, H * M)`` in the complex dtype matching ``dtype``."""
        (zeros,) = super().initial_state(batch_size, device=device, dtype=dtype)
        return S4DState(zeros.to(complex_dtype(zeros.dtype)))

    def readout(self, x: Tensor, inputs: Tensor) -> Tensor:
        """``y = 2 Re(sum_m C_m x_m) + D u`` for ``x (..., H, M)`` complex, ``u (..., H)``."""
        outputs = 2 * (x.real * self.C_real - x.imag * self.C_imag).sum(-1)
        return outputs if self.D is None else outputs + self.D * inputs

    def recur(self, projected: Tensor, state: S4DState) -> tuple[Tensor, S4DState]:
        """``u_t (B, H)``, state ``x (B, H * M)`` -> ``y_t (B, H)``, new state."""
        _, A_bar, B_bar = self.discretized()
        x = state.x.unflatten(-1, (self.input_size, self.modes))  # (B, H, M)
        x = A_bar * x + B_bar * projected[..., None]
        return self.readout(x, projected), S4DState(x.flatten(-2))

    def scan_terms(self, projected: Tensor, state: S4DState) -> tuple[Tensor, Tensor]:
        """``a = A_bar (H * M,)`` (broadcast over B and T) and ``b = B_bar u (B, T, H * M)``."""
        _, A_bar, B_bar = self.discretized()
        return A_bar.flatten(), (B_bar * projected[..., None]).flatten(-2)

    def scan_initial(self, state: S4DState) -> Tensor:
        return state.x

    def scan_readout(
        self, projected: Tensor, hidden: Tensor, state: S4DState, lengths: Tensor | None
    ) -> tuple[Tensor, S4DState]:
        """Padded steps leave the state unchanged, so the final state is ``hidden[:, -1]``."""
        x = hidden.unflatten(-1, (self.input_size, self.modes))  # (B, T, H, M)
        return self.readout(x, projected), S4DState(hidden[:, -1])

    def convolution_kernel(self, steps: int) -> Tensor:
        """``K (H, steps)``: ``K_l = 2 Re(sum_m C_m B_bar_m A_bar_m^l)``, the impulse response."""
        dt_A, _, B_bar = self.discretized()
        powers = self.powers(dt_A, 0, steps)  # (H, M, L)
        weights = torch.complex(self.C_real, self.C_imag) * B_bar
        return 2 * torch.einsum("hm,hml->hl", weights, powers).real

    @staticmethod
    def powers(dt_A: Tensor, start: int, steps: int) -> Tensor:
        """``A_bar^l`` for l = start .. start + steps - 1: ``(H, M, steps)``."""
        exponents = torch.arange(start, start + steps, device=dt_A.device, dtype=dt_A.real.dtype)
        return torch.exp(dt_A[..., None] * exponents)

    def convolve(
        self, inputs: Tensor, state: S4DState | None = None, lengths: Tensor | None = None
    ) -> tuple[Tensor, S4DState]:
        """The convolution mode: ``inputs (B, T, H)`` -> ``outputs (B, T, H)``, final state.

        ``y = K * u`` by FFT (zero-padded to 2T, so the circular convolution is the linear one),
        plus ``D u`` and the initial state's response ``2 Re(sum_m C_m A_bar_m^(t+1) x_{0,m})``.
        The final state ``x_L = A_bar^L x_0 + sum_(s<L) A_bar^(L-1-s) B_bar u_s`` with L each
        sequence's length (``lengths (B,)``, default T). As the sequential strategy does, the
        outputs after a sequence's end are zero. Equals the recurrence.
        """
        batch, steps, _ = inputs.shape
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        lengths = torch.as_tensor(lengths).to(inputs.device)
        if lengths.shape != (batch,) or bool((lengths < 1).any() | (lengths > steps).any()):
            raise ValueError(
                f"lengths: expected ({batch},) values in 1..{steps}, got {lengths.tolist()}"
            )
        active = torch.arange(steps, device=inputs.device) < lengths[:, None]  # (B, T)
        inputs = inputs * active[..., None]
        dt_A, _, B_bar = self.discretized()
        signal = inputs.transpose(1, 2)  # (B, H, T)
        kernel = self.convolution_kernel(steps)  # (H, T)
        spectrum = torch.fft.rfft(signal, n=2 * steps) * torch.fft.rfft(kernel, n=2 * steps)
        outputs = torch.fft.irfft(spectrum, n=2 * steps)[..., :steps].transpose(1, 2)
        if self.D is not None:
            outputs = outputs + self.D * inputs
        # A_bar^(L-1-s) for s < L (inputs after the end are zero, the exponent clamped there)
        exponents = (lengths[:, None] - 1 - torch.arange(steps, device=inputs.device)).clamp(0)
        reversed_powers = torch.exp(dt_A[:, :, None, None] * exponents.to(dt_A.real.dtype))
        final = B_bar * torch.einsum("bht,hmbt->bhm", signal.to(B_bar.dtype), reversed_powers)
        if state is not None:
            initial = state.x.unflatten(-1, (self.input_size, self.modes))  # (B, H, M)
            output_weights = torch.complex(self.C_real, self.C_imag)[..., None]
            response = output_weights * self.powers(dt_A, 1, steps)  # (H, M, T)
            outputs = outputs + 2 * torch.einsum("bhm,hmt->bth", initial, response).real
            elapsed = lengths.to(dt_A.real.dtype)[:, None, None]  # (B, 1, 1)
            final = final + torch.exp(elapsed * dt_A) * initial
        outputs = outputs * active[..., None]
        return outputs, S4DState(final.flatten(-2))

    def extra_repr(self) -> str:
        options = [
            super().extra_repr(),
            f"initialization={self.initialization!r}, dt_min={self.dt_min}, dt_max={self.dt_max}",
        ]
        return ", ".join(options + ([] if self.bias else ["bias=False"]))
