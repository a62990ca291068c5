"""Selective SSM: the inner part of the Mamba block (S6), input-dependent diagonal recurrence.

Gu, Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
https://arxiv.org/abs/2312.00752 (Algorithm 2, Section 3.4, Figure 3), as the reference code
computes it (state-spaces/mamba ``mamba_simple.py`` and ``selective_scan_ref``). With u_t the
input (B, d_model), d_model = input_size, E = hidden_size (Mamba's d_inner, ``expand *
d_model``), N = state_size, K = conv_size and R = dt_rank:

    x_t, z_t = split(in_proj(u_t))                                     (B, E) each
    v_t      = SiLU(conv1d(x_{t-K+1}, ..., x_t))                        causal depthwise conv
    dt_t, B_t, C_t = split(x_proj(v_t))                                (B, R), (B, N), (B, N)
    delta_t  = softplus(dt_proj(dt_t))                                 (B, E), dt_proj has a bias
    A        = -exp(A_log)                                             (E, N)
    h_t      = exp(delta_t A) * h_{t-1} + (delta_t v_t) B_t            (B, E, N)
    y_t      = out_proj((h_t C_t + D * v_t) * SiLU(z_t))               (B, d_model)

(h_t C_t sums over N; B_bar = delta B is Mamba's simplified discretization of B.)

``allow_negative_eigenvalues=True`` (Grazzi, Siems, Zela, Franke, Hutter, Pontil 2025,
"Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues",
https://arxiv.org/abs/2411.12537, Section 4, as their Mamba change) stretches the transition from
(0, 1] to (-1, 1]:

    a_t = 2 exp(delta_t A) - 1

so that a channel can flip its sign each step (parity needs an eigenvalue of -1).

The state is ``SelectiveState(h, window)``: ``h (B, E * N)``, the SSM state (channel-major,
index e * N + n), and ``window (B, (K - 1) * E)``, the last K - 1 conv inputs x_{t-K+2..t}
(time-major, oldest first: ``window.view(B, K - 1, E)``). The zero window is the conv's
causal zero padding, so a sequence run whole, in chunks with the state carried, or one step at
a time gives the same outputs. For the scan strategy the recurrence is the ``"diagonal"`` form
over (B, T, E * N) with ``a_t = exp(delta_t A)`` and ``b_t = (delta_t v_t) B_t``; the conv runs
time-parallel over the window followed by the chunk's x (``scan_terms`` and ``scan_readout``
both recompute it rather than cache it between calls), and the final window is the last K - 1
inputs of each sequence at its own length.

Initialization as ``mamba_simple.Mamba``: torch defaults for in_proj, conv1d, x_proj and
out_proj; dt_proj.weight ~ U(-R^-1/2, R^-1/2); dt_proj.bias = softplus^-1(dt) with
log dt ~ U[log dt_min, log dt_max] (0.001, 0.1), dt clamped below at 1e-4; A_log = log(1..N)
for every channel (S4D-Real); D = 1. Parameter names are Mamba's, so a ``Mamba`` module's
state dict loads into this cell (with ``expand * d_model`` as hidden_size). ``bias`` is
Mamba's ``conv_bias`` (default True); ``projection_bias`` is Mamba's ``bias`` for in_proj and
out_proj (default False). The output has the input's width d_model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell, check_positive_int
from rnnkit.cells.lru import check_positive_number

DT_FLOOR = 1e-4


class SelectiveState(NamedTuple):
    """The SSM state ``h (B, E * N)`` and the conv window ``window (B, (K - 1) * E)``."""

    h: Tensor
    window: Tensor


class SelectiveSSMCell(Cell):
    """Mamba's selective SSM with its conv and gate; see the module docstring for the equations.

    Args:
        input_size: d_model, the features of u_t and of the output.
        hidden_size: E (Mamba's d_inner, usually 2 d_model), the channels of the conv and the SSM.
        bias: whether the conv has a bias (Mamba's ``conv_bias``).
        state_size: N, the SSM state per channel.
        conv_size: K, the causal conv's kernel size.
        dt_rank: R, the rank of the delta projection; ``"auto"`` is ceil(d_model / 16).
        dt_min, dt_max: the range of softplus(dt_proj.bias) at initialization (log-uniform).
        projection_bias: whether in_proj and out_proj have biases (Mamba's ``bias``).
        allow_negative_eigenvalues: the transition ``2 exp(delta A) - 1`` in (-1, 1] instead of
            ``exp(delta A)`` in (0, 1] (Grazzi et al. 2025).
    """

    is_linear = True
    linear_form = "diagonal"
    state_type = SelectiveState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        state_size: int = 16,
        conv_size: int = 4,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        projection_bias: bool = False,
        allow_negative_eigenvalues: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size)
        check_positive_int("state_size", state_size)
        check_positive_int("conv_size", conv_size)
        if dt_rank == "auto":
            dt_rank = math.ceil(input_size / 16)
        check_positive_int("dt_rank", dt_rank)
        check_positive_number("dt_min", dt_min)
        if not dt_min <= dt_max:
            raise ValueError(f"need dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        self.bias, self.projection_bias = bias, projection_bias
        self.allow_negative_eigenvalues = allow_negative_eigenvalues
        self.state_size, self.conv_size, self.dt_rank = state_size, conv_size, int(dt_rank)
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.in_proj = nn.Linear(input_size, 2 * hidden_size, bias=projection_bias)
        self.conv1d = nn.Conv1d(hidden_size, hidden_size, conv_size, groups=hidden_size, bias=bias)
        self.x_proj = nn.Linear(hidden_size, self.dt_rank + 2 * state_size, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, hidden_size)
        self.A_log = nn.Parameter(torch.empty(hidden_size, state_size))
        self.D = nn.Parameter(torch.empty(hidden_size))
        self.out_proj = nn.Linear(hidden_size, input_size, bias=projection_bias)
        self.reset_parameters()

    @property
    def output_size(self) -> int:
        """The output has the input's width d_model."""
        return self.input_size

    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size * self.state_size, (self.conv_size - 1) * self.hidden_size)

    def reset_parameters(self) -> None:
        """Mamba's initialization (see the module docstring)."""
        for module in (self.in_proj, self.conv1d, self.x_proj, self.out_proj):
            module.reset_parameters()
        bound = self.dt_rank**-0.5
        log_low, log_high = math.log(self.dt_min), math.log(self.dt_max)
        log_dt = torch.empty(self.hidden_size, dtype=torch.float64).uniform_(log_low, log_high)
        dt = torch.exp(log_dt).clamp(min=DT_FLOOR)
        states = torch.arange(1, self.state_size + 1, dtype=torch.float64)
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -bound, bound)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
            self.A_log.copy_(torch.log(states).expand_as(self.A_log))
            self.D.fill_(1.0)

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., d_model) -> (..., 2E)``: x and z."""
        return self.in_proj(inputs)

    def selection(self, convolved: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``v (..., E)`` -> ``delta (..., E)``, ``B (..., N)``, ``C (..., N)``."""
        sizes = [self.dt_rank, self.state_size, self.state_size]
        low_rank, input_matrix, output_matrix = self.x_proj(convolved).split(sizes, -1)
        return functional.softplus(self.dt_proj(low_rank)), input_matrix, output_matrix

    def transition(self, delta: Tensor) -> Tensor:
        """``a = exp(delta A)`` (or ``2 exp(delta A) - 1``), ``(..., E, N)`` from ``delta
        (..., E)``."""
        decay = torch.exp(delta[..., None] * -torch.exp(self.A_log))
        return 2 * decay - 1 if self.allow_negative_eigenvalues else decay

    def gated_output(self, read: Tensor, convolved: Tensor, gate: Tensor) -> Tensor:
        """``out_proj((h C + D v) * SiLU(z))`` from ``read = h C (..., E)``."""
        return self.out_proj((read + self.D * convolved) * functional.silu(gate))

    def recur(self, projected: Tensor, state: SelectiveState) -> tuple[Tensor, SelectiveState]:
        """``projected (B, 2E)``, state ``(h (B, E N), window (B, (K-1) E))`` -> ``y_t``."""
        x, z = projected.chunk(2, -1)
        window = state.window.unflatten(-1, (self.conv_size - 1, self.hidden_size))
        frames = torch.cat([window, x[:, None]], 1)  # (B, K, E): x_{t-K+1} .. x_t
        convolved = (frames * self.conv1d.weight[:, 0].T).sum(1)
        if self.conv1d.bias is not None:
            convolved = convolved + self.conv1d.bias
        convolved = functional.silu(convolved)
        delta, input_matrix, output_matrix = self.selection(convolved)
        h = state.h.unflatten(-1, (self.hidden_size, self.state_size))  # (B, E, N)
        h = self.transition(delta) * h
        h = h + (delta * convolved)[..., None] * input_matrix[:, None]
        read = (h * output_matrix[:, None]).sum(-1)
        output = self.gated_output(read, convolved, z)
        return output, SelectiveState(h.flatten(-2), frames[:, 1:].flatten(-2))

    def convolve(self, projected: Tensor, state: SelectiveState) -> tuple[Tensor, Tensor]:
        """The conv over a chunk: ``v (B, T, E)`` and the frames ``(B, K - 1 + T, E)`` it read
        (the state's window, then the chunk's x)."""
        x = projected[..., : self.hidden_size]
        window = state.window.unflatten(-1, (self.conv_size - 1, self.hidden_size))
        frames = torch.cat([window, x], 1)
        weight, bias = self.conv1d.weight, self.conv1d.bias
        convolved = functional.conv1d(frames.transpose(1, 2), weight, bias, groups=self.hidden_size)
        return functional.silu(convolved.transpose(1, 2)), frames

    def scan_terms(self, projected: Tensor, state: SelectiveState) -> tuple[Tensor, Tensor]:
        """``a = exp(delta A)`` (see ``transition``) and ``b = (delta v) B``, both
        ``(B, T, E * N)``."""
        convolved, _ = self.convolve(projected, state)
        delta, input_matrix, _ = self.selection(convolved)
        a = self.transition(delta)  # (B, T, E, N)
        b = (delta * convolved)[..., None] * input_matrix[..., None, :]
        return a.flatten(-2), b.flatten(-2)

    def scan_initial(self, state: SelectiveState) -> Tensor:
        return state.h

    def scan_readout(
        self, projected: Tensor, hidden: Tensor, state: SelectiveState, lengths: Tensor | None
    ) -> tuple[Tensor, SelectiveState]:
        """Outputs from ``hidden (B, T, E * N)``; the final window is the last K - 1 frames up to
        each sequence's length (padded steps leave h unchanged, so h is ``hidden[:, -1]``)."""
        convolved, frames = self.convolve(projected, state)
        _, _, output_matrix = self.selection(convolved)
        h = hidden.unflatten(-1, (self.hidden_size, self.state_size))  # (B, T, E, N)
        read = (h * output_matrix[..., None, :]).sum(-1)
        outputs = self.gated_output(read, convolved, projected[..., self.hidden_size :])
        batch_size, steps = projected.shape[:2]
        ends = torch.full((batch_size,), steps, device=frames.device)
        if lengths is not None:
            ends = lengths.to(frames.device)
        # frame of x_t is at K - 1 + t: the last K - 1 frames of a length L are at L .. L + K - 2
        index = ends[:, None] + torch.arange(self.conv_size - 1, device=frames.device)
        window = frames.gather(1, index[..., None].expand(-1, -1, self.hidden_size))
        return outputs, SelectiveState(hidden[:, -1], window.flatten(-2))

    def extra_repr(self) -> str:
        options = [
            super().extra_repr(),
            f"state_size={self.state_size}, conv_size={self.conv_size}, dt_rank={self.dt_rank}",
            f"dt_min={self.dt_min}, dt_max={self.dt_max}",
        ]
        options += [] if self.bias else ["bias=False"]
        options += ["projection_bias=True"] if self.projection_bias else []
        options += ["allow_negative_eigenvalues=True"] if self.allow_negative_eigenvalues else []
        return ", ".join(options)
