"""The linear cells LRU, S4D and the selective SSM (Mamba): every scan implementation against the
sequential reference, whole = chunks = steps, gradcheck of the step, each cell's equations and
initialization against hand-written versions from its paper, and stacks through ``Recurrent``.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_all_close, assert_close, assert_states_close
from oracle_table import ORACLE_TABLE
from torch import nn
from torch.nn import functional

from rnnkit.cells import make_cell
from rnnkit.strategies import STRATEGIES

F64, F32 = torch.float64, torch.float32
SCANS = ["scan", "scan:loop", "scan:chunked", "scan:compiled"]
# this file's entries of the one oracle table
CONFIGS: dict[str, tuple[str, dict]] = {
    key: ORACLE_TABLE[key]
    for key in (
        "lru", "lru_ring_nobias", "s4d_lin", "s4d_inv_nobias", "selective_ssm", "selective_ssm_k2"
    )
}


def build(config: str, input_size: int, hidden_size: int, dtype=F64, perturb: bool = False):
    """The cell of ``CONFIGS[config]``; ``perturb`` moves every parameter off its (often
    constant) initial value, so that a formula that ignored one would be caught."""
    name, options = CONFIGS[config]
    torch.manual_seed(0)
    cell = make_cell(name, input_size, hidden_size, **options).to(dtype)
    if perturb:
        with torch.no_grad():
            for parameter in cell.parameters():
                parameter.add_(0.1 * torch.randn_like(parameter))
    return cell


def random_state(cell, batch_size: int, generator: torch.Generator):
    """A random state requiring grad, each field in the dtype of the cell's zero state."""
    fields = cell.initial_state(batch_size)
    return cell.state_type(
        *(
            torch.randn(field.shape, dtype=field.dtype, generator=generator).requires_grad_()
            for field in fields
        )
    )


def loss_of(outputs, final_state):
    """A weighted sum of every output and final-state element (real and imaginary parts)."""
    generator = torch.Generator().manual_seed(1)
    loss = 0
    for tensor in [outputs, *final_state]:
        parts = torch.view_as_real(tensor) if tensor.is_complex() else tensor
        weights = torch.randn(parts.shape, generator=generator, dtype=parts.dtype)
        loss = loss + (parts * weights).sum()
    return loss


def run_with_gradients(run, cell, inputs, state, lengths=None):
    outputs, final_state = run(cell, inputs, state, lengths)
    wrt = [inputs, *(state or ()), *cell.parameters()]
    return outputs, final_state, torch.autograd.grad(loss_of(outputs, final_state), wrt)


def gradient_names(cell, state) -> list[str]:
    names = ["grad of inputs"]
    names += [f"grad of initial state.{field}" for field in (state._fields if state else ())]
    return names + [f"grad of {name}" for name, _ in cell.named_parameters()]


class Step(nn.Module):
    """``cell.step`` as a module's forward, for ``torch.func.functional_call``."""

    def __init__(self, cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, inputs, *state):
        output, new_state = self.cell.step(inputs, self.cell.state_type(*state))
        return (output, *new_state)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_step_gradcheck(config):
    cell = build(config, 2, 4, perturb=True)
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(2, 2, dtype=F64, generator=generator, requires_grad=True)
    state = random_state(cell, 2, generator)
    names = [f"cell.{name}" for name, _ in cell.named_parameters()]
    parameters = [parameter.detach().clone().requires_grad_() for parameter in cell.parameters()]
    fields = len(state)

    def step(inputs, *tensors):
        arguments = (inputs, *tensors[:fields])
        values = dict(zip(names, tensors[fields:], strict=True))
        return torch.func.functional_call(Step(cell), values, arguments)

    assert all(not parameter.is_complex() for parameter in parameters), "parameters are real"
    assert torch.autograd.gradcheck(step, (inputs, *state, *parameters))


def run_all(cell, inputs, state):
    """Outputs and final state of ``sequential`` and of every scan implementation."""
    return {name: STRATEGIES[name](cell, inputs, state) for name in ["sequential", *SCANS]}


def test_lru_ring_initialization():
    torch.manual_seed(0)
    cell = make_cell("lru", 3, 4000, r_min=0.4, r_max=0.9, max_phase=1.0).to(F64)
    eigenvalues = cell.eigenvalues().detach()
    radius, phase = eigenvalues.abs(), eigenvalues.angle()
    assert radius.min() >= 0.4 and radius.max() <= 0.9, "|lambda| outside [r_min, r_max]"
    assert phase.min() >= 0 and phase.max() <= 1.0, "arg(lambda) outside [0, max_phase]"
    # uniform on the ring: |lambda|^2 ~ U[r_min^2, r_max^2], phase ~ U[0, max_phase]
    assert abs(float((radius**2).mean()) - (0.4**2 + 0.9**2) / 2) < 0.01
    assert abs(float(phase.mean()) - 0.5) < 0.02
    expected_gamma = torch.sqrt(1 - radius**2)
    # parameters are drawn in float32: compare at float32 precision
    assert_close(torch.exp(cell.gamma_log.detach()), expected_gamma, "gamma", F32)
    for name, std in [("B_real", 1 / math.sqrt(6)), ("C_imag", 1 / math.sqrt(4000)), ("D", 1.0)]:
        measured = float(getattr(cell, name).detach().std())
        assert abs(measured / std - 1) < 0.1, f"{name} std {measured} != {std}"
    default = make_cell("lru", 3, 4)
    assert (default.r_min, default.r_max, default.max_phase) == (0.0, 1.0, 6.28)
    assert default.initial_state(2).x.dtype == torch.complex64
    assert default.to(F64).initial_state(2).x.dtype == torch.complex128


@pytest.mark.parametrize("config", ["lru", "lru_ring_nobias"])
def test_lru_equations(config):
    """The paper's forward (Appendix A) written out with complex matrices."""
    cell = build(config, 3, 5, perturb=True)
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(2, 9, 3, dtype=F64, generator=generator)
    state = random_state(cell, 2, generator)
    with torch.no_grad():
        eigenvalues = torch.exp(-torch.exp(cell.nu_log) + 1j * torch.exp(cell.theta_log))
        input_matrix = (cell.B_real + 1j * cell.B_imag) * torch.exp(cell.gamma_log)[:, None]
        output_matrix = cell.C_real + 1j * cell.C_imag
        x, expected = state.x.detach(), []
        for u in inputs.unbind(1):
            x = eigenvalues * x + u.to(x.dtype) @ input_matrix.T
            y = (x @ output_matrix.T).real
            expected.append(y if cell.D is None else y + cell.D * u)
        expected = torch.stack(expected, 1)
        for name, (outputs, final_state) in run_all(cell, inputs, state).items():
            assert_close(outputs, expected, f"{name} outputs", F64)
            assert_close(final_state.x, x, f"{name} final state", F64)


@pytest.mark.parametrize("initialization", ["lin", "inv"])
def test_s4d_initialization(initialization):
    torch.manual_seed(0)
    cell = make_cell("s4d", 500, 8, initialization=initialization).to(F64)
    index = torch.arange(4, dtype=F64)
    if initialization == "lin":
        imaginary = math.pi * index
    else:
        imaginary = 8 / math.pi * (8 / (2 * index + 1) - 1)
    real = -torch.exp(cell.log_A_real.detach())
    assert_close(real, torch.full((500, 4), -0.5, dtype=F64), "Re A", F32)
    assert_close(cell.A_imag.detach(), imaginary.expand(500, 4), "Im A", F32)
    dt = torch.exp(cell.log_dt.detach())
    assert dt.min() >= 0.001 and dt.max() <= 0.1, "dt outside [dt_min, dt_max]"
    assert float(torch.log(dt).mean()) == pytest.approx(math.log(0.01), abs=0.15), "log-uniform"
    assert torch.equal(cell.B_real.detach(), torch.ones(500, 4, dtype=F64))
    assert torch.equal(cell.B_imag.detach(), torch.zeros(500, 4, dtype=F64))
    assert float(cell.C_real.detach().var()) == pytest.approx(0.5, rel=0.1)
    assert cell.state_sizes() == (500 * 4,)


@pytest.mark.parametrize("config", ["s4d_lin", "s4d_inv_nobias"])
def test_s4d_zero_order_hold(config):
    """A_bar, B_bar are the exact solution over one step dt with u held constant: the matrix
    exponential of the augmented system [[A, B], [0, 0]] dt is [[A_bar, B_bar], [0, 1]]."""
    cell = build(config, 3, 6, perturb=True)
    with torch.no_grad():
        _, A_bar, B_bar = cell.discretized()
        A = -torch.exp(cell.log_A_real) + 1j * cell.A_imag
        B = cell.B_real + 1j * cell.B_imag
        system = torch.zeros(3, 3, 2, 2, dtype=A.dtype)
        system[..., 0, 0], system[..., 0, 1] = A, B
        exact = torch.linalg.matrix_exp(torch.exp(cell.log_dt)[:, None, None, None] * system)
    assert_close(A_bar, exact[..., 0, 0], "A_bar", F64)
    assert_close(B_bar, exact[..., 0, 1], "B_bar", F64)


@pytest.mark.parametrize("steps", [1, 8, 37])
@pytest.mark.parametrize("initial", [False, True], ids=["zero", "h0"])
@pytest.mark.parametrize("config", ["s4d_lin", "s4d_inv_nobias"])
@pytest.mark.parametrize("padded", [False, True], ids=["full", "lengths"])
def test_s4d_convolution_equals_recurrence(config, initial, steps, padded):
    cell = build(config, 3, 6, perturb=True)
    generator = torch.Generator().manual_seed(steps)
    inputs = torch.randn(3, steps, 3, dtype=F64, generator=generator, requires_grad=True)
    state = random_state(cell, 3, generator) if initial else None
    lengths = torch.tensor([steps, max(1, steps // 2), max(1, steps - 3)]) if padded else None

    def convolution(cell, inputs, state, lengths):
        return cell.convolve(inputs, state, lengths)

    expected = run_with_gradients(STRATEGIES["sequential"], cell, inputs, state, lengths)
    actual = run_with_gradients(convolution, cell, inputs, state, lengths)

    assert_close(actual[0], expected[0], "convolution outputs", F64)
    assert_states_close(actual[1], expected[1], "convolution final state", F64)
    assert_all_close(actual[2], expected[2], gradient_names(cell, state), F64)


def test_s4d_kernel_is_the_impulse_response():
    cell = build("s4d_inv_nobias", 3, 6, perturb=True)
    impulse = torch.zeros(3, 11, 3, dtype=F64)
    impulse[:, 0] = torch.eye(3, dtype=F64)  # row c: a unit impulse on channel c
    with torch.no_grad():
        response, _ = STRATEGIES["sequential"](cell, impulse)
        kernel = cell.convolution_kernel(11)
    assert_close(response.diagonal(dim1=0, dim2=2).T, kernel, "K", F64)


def naive_mamba(cell, inputs):
    """The Mamba block's inner part from a zero state, as ``mamba_simple.Mamba.forward`` (the
    slow path) and ``selective_scan_ref`` compute it: a padded causal conv over the whole
    sequence, then the selective scan one step at a time. Returns outputs, h_T, x."""
    E, N, K = cell.hidden_size, cell.state_size, cell.conv_size
    x, z = cell.in_proj(inputs).chunk(2, -1)  # (B, T, E) each
    conv = functional.conv1d(
        x.transpose(1, 2), cell.conv1d.weight, cell.conv1d.bias, padding=K - 1, groups=E
    )
    v = functional.silu(conv[..., : inputs.shape[1]]).transpose(1, 2)  # (B, T, E)
    dt, B, C = (v @ cell.x_proj.weight.T).split([cell.dt_rank, N, N], -1)
    delta = functional.softplus(dt @ cell.dt_proj.weight.T + cell.dt_proj.bias)
    A = -torch.exp(cell.A_log)
    h = torch.zeros(inputs.shape[0], E, N, dtype=inputs.dtype)
    outputs = []
    for t in range(inputs.shape[1]):
        h = torch.exp(delta[:, t, :, None] * A) * h
        h = h + delta[:, t, :, None] * B[:, t, None, :] * v[:, t, :, None]
        y = torch.einsum("ben,bn->be", h, C[:, t]) + cell.D * v[:, t]
        outputs.append(cell.out_proj(y * functional.silu(z[:, t])))
    return torch.stack(outputs, 1), h, x


@pytest.mark.parametrize("steps", [1, 2, 9])
@pytest.mark.parametrize("config", ["selective_ssm", "selective_ssm_k2"])
def test_selective_ssm_equals_naive_mamba(config, steps):
    cell = build(config, 3, 5, perturb=True)
    inputs = torch.randn(2, steps, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, h, x = naive_mamba(cell, inputs)
        window = functional.pad(x, (0, 0, cell.conv_size - 1, 0))[:, -(cell.conv_size - 1) :]
        for name, (outputs, final_state) in run_all(cell, inputs, None).items():
            assert_close(outputs, expected, f"{name} outputs", F64)
            assert_close(final_state.h, h.flatten(1), f"{name} final state.h", F64)
            assert_close(final_state.window, window.flatten(1), f"{name} final window", F64)


def test_selective_ssm_final_window_with_lengths():
    """The final window holds the last K - 1 inputs x of each sequence at its own length."""
    cell = build("selective_ssm", 3, 5, perturb=True)
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(3, 8, 3, dtype=F64, generator=generator)
    state = random_state(cell, 3, generator)
    lengths = [8, 2, 5]
    with torch.no_grad():
        x = cell.in_proj(inputs)[..., : cell.hidden_size]
        frames = torch.cat([state.window.unflatten(1, (cell.conv_size - 1, 5)), x], 1)
        for name in SCANS:
            _, final_state = STRATEGIES[name](cell, inputs, state, lengths)
            for row, length in enumerate(lengths):
                expected = frames[row, length : length + cell.conv_size - 1].flatten()
                assert_close(final_state.window[row], expected, f"{name} window[{row}]", F64)


def test_selective_ssm_initialization_and_parameter_names():
    torch.manual_seed(0)
    cell = make_cell("selective_ssm", 40, 2000, state_size=6).to(F64)
    assert cell.dt_rank == math.ceil(40 / 16) and cell.conv_size == 4
    dt = functional.softplus(cell.dt_proj.bias.detach())
    assert dt.min() >= 0.001 * (1 - 1e-6) and dt.max() <= 0.1 * (1 + 1e-6), "dt range"
    assert float(torch.log(dt).mean()) == pytest.approx(math.log(0.01), abs=0.1), "log-uniform"
    assert float(cell.dt_proj.weight.detach().abs().max()) <= cell.dt_rank**-0.5
    expected_log = torch.log(torch.arange(1, 7, dtype=F64)).expand(2000, 6)
    assert_close(cell.A_log.detach(), expected_log, "A_log", F32)
    assert torch.equal(cell.D.detach(), torch.ones(2000, dtype=F64))
    mamba_names = ["in_proj.weight", "conv1d.weight", "conv1d.bias", "x_proj.weight"]
    mamba_names += ["dt_proj.weight", "dt_proj.bias", "A_log", "D", "out_proj.weight"]
    assert set(dict(cell.named_parameters())) == set(mamba_names), "mamba_simple's names"
    assert cell.state_sizes() == (2000 * 6, 3 * 2000)


@pytest.mark.parametrize(
    ("name", "hidden_size", "options", "match"),
    [
        ("lru", 4, {"r_min": 0.9, "r_max": 0.5}, r"need 0 <= r_min < r_max <= 1"),
        ("lru", 4, {"max_phase": 0}, r"max_phase must be a positive number"),
        ("s4d", 5, {}, r"hidden_size \(the state size N per channel\) must be even"),
        ("s4d", 4, {"initialization": "hippo"}, r"initialization must be one of \('lin', 'inv'\)"),
        ("s4d", 4, {"dt_min": 0.5, "dt_max": 0.1}, r"need dt_min <= dt_max"),
        ("selective_ssm", 4, {"dt_rank": 0}, r"dt_rank must be a positive integer"),
        ("selective_ssm", 4, {"conv_size": 0}, r"conv_size must be a positive integer"),
    ],
    ids=["lru-ring", "lru-phase", "s4d-odd", "s4d-init", "s4d-dt", "ssm-dt-rank", "ssm-conv"],
)
def test_invalid_options_raise(name, hidden_size, options, match):
    with pytest.raises(ValueError, match=match):
        make_cell(name, 3, hidden_size, **options)
