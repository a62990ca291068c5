"""minGRU and minLSTM: gates that depend on the input only, so the recurrence is linear.

Feng, Tung, Ahmed, Bengio, Hajimirsadeghi 2024, "Were RNNs All We Needed?",
https://arxiv.org/abs/2410.01201 (Sections 3.1.3 and 3.2.3, Appendix A):

minGRU:
    z_t  = sigmoid(W_z x_t + b_z)
    h~_t = g(W_h x_t + b_h)
    h_t  = (1 - z_t) * h_{t-1} + z_t * h~_t

minLSTM:
    f_t  = sigmoid(W_f x_t + b_f),   i_t = sigmoid(W_i x_t + b_i)
    f'_t = f_t / (f_t + i_t),        i'_t = i_t / (f_t + i_t)
    h~_t = g(W_h x_t + b_h)
    h_t  = f'_t * h_{t-1} + i'_t * h~_t

g(v) = v + 0.5 for v >= 0, sigmoid(v) otherwise: the paper's continuous positive activation of
its log-space version (``candidate_activation="g"``, the default); ``"identity"`` gives the
plain version. Both are diagonal linear recurrences ``h_t = a_t * h_{t-1} + b_t`` with
(a, b) = (1 - z, z h~) for minGRU and (f', i' h~) for minLSTM. The output is h_t.

``allow_negative_eigenvalues=True`` stretches the transition from (0, 1) to (-1, 1),
``a_t -> 2 a_t - 1`` (for minGRU ``1 - 2 z_t``), with ``b_t`` unchanged: the change Grazzi et al.
2025 ("Unlocking State-Tracking in Linear RNNs Through Negative Eigenvalues",
https://arxiv.org/abs/2411.12537) make to Mamba's diagonal transition, applied to these gates, so
that a channel can flip its sign each step (as parity needs). The compiled scans of
``kernels/gated_scan_cpu.py`` hold the positive form only; with the option the scan strategy runs
the generic diagonal scan on ``scan_terms``.
Parameters: ``weight_ih (kH, D)``, ``bias_ih (kH)`` initialized as torch.nn.Linear.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional

from rnnkit.cells.base import Cell
from rnnkit.cells.gru import HiddenState

CANDIDATE_ACTIVATIONS = ("g", "identity")


def positive_g(values: Tensor) -> Tensor:
    """The paper's g: v + 0.5 for v >= 0, sigmoid(v) for v < 0 (continuous, positive)."""
    return torch.where(values >= 0, values + 0.5, torch.sigmoid(values))


class MinimalCell(Cell):
    """Shared body of minGRU and minLSTM (``gates`` input-only gates plus the candidate)."""

    is_linear = True
    linear_form = "diagonal"
    state_type = HiddenState
    output_field = "h"
    gates = 1
    kernel_family = ""  # the compiled scan's name is f"{kernel_family}_{candidate_activation}"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        *,
        candidate_activation: str = "g",
        allow_negative_eigenvalues: bool = False,
    ) -> None:
        super().__init__(input_size, hidden_size)
        if candidate_activation not in CANDIDATE_ACTIVATIONS:
            raise ValueError(
                f"candidate_activation must be one of {CANDIDATE_ACTIVATIONS}, "
                f"got {candidate_activation!r}"
            )
        self.bias = bias
        self.candidate_activation = candidate_activation
        self.allow_negative_eigenvalues = allow_negative_eigenvalues
        rows = (self.gates + 1) * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.bias_ih = nn.Parameter(torch.empty(rows)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """As torch.nn.Linear: U(-1/sqrt(D), 1/sqrt(D)) for weight and bias."""
        nn.init.kaiming_uniform_(self.weight_ih, a=math.sqrt(5))
        if self.bias_ih is not None:
            bound = 1 / math.sqrt(self.input_size)
            nn.init.uniform_(self.bias_ih, -bound, bound)

    @property
    def compiled_kernel(self) -> str | None:  # type: ignore[override]  # a property here
        """The compiled scan of this cell and activation (``kernels/gated_scan_cpu.py``); None
        with negative eigenvalues, which it does not hold."""
        if self.allow_negative_eigenvalues:
            return None
        return f"{self.kernel_family}_{self.candidate_activation}"

    def compiled_weights(self) -> dict[str, Tensor]:
        """None: the compiled scan reads only the projected inputs."""
        return {}

    def project_inputs(self, inputs: Tensor) -> Tensor:
        """``(..., D) -> (..., kH)``: all gates and the candidate pre-activations."""
        return functional.linear(inputs, self.weight_ih, self.bias_ih)

    def candidate(self, projected: Tensor) -> Tensor:
        values = projected[..., self.gates * self.hidden_size :]
        return positive_g(values) if self.candidate_activation == "g" else values

    def gate_coefficients(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)`` of the paper's cell, ``a`` in (0, 1), from ``projected (..., kH)``."""
        raise NotImplementedError

    def coefficients(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        """``(a, b)`` of ``h_t = a_t * h_{t-1} + b_t`` from ``projected (..., kH)``."""
        transition, update = self.gate_coefficients(projected)
        if self.allow_negative_eigenvalues:
            transition = 2 * transition - 1
        return transition, update

    def recur(self, projected: Tensor, state: HiddenState) -> tuple[Tensor, HiddenState]:
        """``projected (B, kH)``, state ``(h (B, H),)`` -> ``h_t``, new state."""
        a, b = self.coefficients(projected)
        h_new = a * state.h + b
        return h_new, HiddenState(h_new)

    def scan_terms(self, projected: Tensor, state: HiddenState) -> tuple[Tensor, Tensor]:
        return self.coefficients(projected)

    def scan_initial(self, state: HiddenState) -> Tensor:
        return state.h

    def scan_readout(
        self, projected: Tensor, hidden: Tensor, state: HiddenState, lengths: Tensor | None
    ) -> tuple[Tensor, HiddenState]:
        return hidden, HiddenState(hidden[:, -1])

    def extra_repr(self) -> str:
        options = [super().extra_repr(), f"candidate_activation={self.candidate_activation!r}"]
        options += [] if self.bias else ["bias=False"]
        options += ["allow_negative_eigenvalues=True"] if self.allow_negative_eigenvalues else []
        return ", ".join(options)


class MinGRUCell(MinimalCell):
    """minGRU: ``weight_ih`` rows are (z, h~)."""

    gates = 1
    kernel_family = "mingru"

    def gate_coefficients(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        update = torch.sigmoid(projected[..., : self.hidden_size])
        return 1 - update, update * self.candidate(projected)


class MinLSTMCell(MinimalCell):
    """minLSTM: ``weight_ih`` rows are (f, i, h~)."""

    gates = 2
    kernel_family = "minlstm"

    def gate_coefficients(self, projected: Tensor) -> tuple[Tensor, Tensor]:
        forget_pre, input_pre = projected[..., : 2 * self.hidden_size].chunk(2, -1)
        forget, input_gate = torch.sigmoid(forget_pre), torch.sigmoid(input_pre)
        total = forget + input_gate
        return forget / total, input_gate / total * self.candidate(projected)
