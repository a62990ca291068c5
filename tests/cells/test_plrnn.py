"""PLRNN and AL-RNN against a readable loop of their equations (values and gradients, float64),
their initialization and option checks. Strategies against sequential: ``test_oracle.py``."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from rnnkit.cells import CELLS, ALRNNCell, PLRNNCell
from rnnkit.strategies import STRATEGIES

F64 = torch.float64


def reference_run(cell, inputs: torch.Tensor, z0: torch.Tensor, num_relu: int) -> torch.Tensor:
    """z_t = A z_{t-1} + W phi*(z_{t-1}) + h + C s_t, written unit by unit: the PLRNN's W
    without its diagonal, the AL-RNN's whole."""
    size = cell.hidden_size
    plrnn = isinstance(cell, PLRNNCell)
    weight = cell.off_diagonal if plrnn else cell.weight_hh
    bias = cell.bias if cell.bias is not None else torch.zeros(size, dtype=F64)
    outputs = []
    z = z0
    for t in range(inputs.shape[1]):
        rows = []
        for b in range(inputs.shape[0]):
            phi = [z[b, j] if j < size - num_relu else torch.relu(z[b, j]) for j in range(size)]
            unit = []
            for i in range(size):
                value = cell.diagonal[i] * z[b, i] + bias[i] + cell.weight_ih[i] @ inputs[b, t]
                value = value + sum(
                    weight[i, j] * phi[j] for j in range(size) if j != i or not plrnn
                )
                unit.append(value)
            rows.append(torch.stack(unit))
        z = torch.stack(rows)
        outputs.append(z)
    return torch.stack(outputs, 1)


def perturbed(cell):
    torch.manual_seed(3)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    return cell.to(F64)


@pytest.mark.parametrize(
    ("name", "options", "num_relu"),
    [
        ("plrnn", {}, 5),
        ("alrnn", {"num_relu": 2}, 2),
        ("alrnn", {"num_relu": 1, "bias": False}, 1),
    ],
    ids=["plrnn", "alrnn-P2", "alrnn-P1-nobias"],
)
def test_matches_the_equation_in_values_and_gradients(name, options, num_relu):
    cell = perturbed(CELLS[name](3, 5, **options))
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 6, 3, dtype=F64, generator=generator, requires_grad=True)
    z0 = torch.randn(2, 5, dtype=F64, generator=generator, requires_grad=True)
    outputs, final = STRATEGIES["sequential"](cell, inputs, cell.state_type(z0))
    expected = reference_run(cell, inputs, z0, num_relu)
    assert_close(outputs, expected, rtol=1e-12, atol=1e-12)
    assert_close(final.h, expected[:, -1], rtol=1e-12, atol=1e-12)
    weights = torch.randn(expected.shape, dtype=F64, generator=generator)
    wrt = [inputs, z0, *cell.parameters()]
    got = torch.autograd.grad((outputs * weights).sum(), wrt)
    want = torch.autograd.grad((expected * weights).sum(), wrt, allow_unused=True)
    names = ["inputs", "z0", *(name for name, _ in cell.named_parameters())]
    for label, actual, reference in zip(names, got, want, strict=True):
        reference = torch.zeros_like(actual) if reference is None else reference
        assert_close(actual, reference, rtol=1e-11, atol=1e-11, msg=f"grad of {label}")


def test_plrnn_is_the_alrnn_with_every_unit_piecewise_linear_and_no_self_weight():
    plrnn = perturbed(PLRNNCell(2, 4))
    alrnn = ALRNNCell(2, 4, num_relu=4).to(F64)
    weights = plrnn.state_dict()
    weights["weight_hh"] = weights.pop("off_diagonal") * (1 - torch.eye(4, dtype=F64))
    alrnn.load_state_dict(weights)
    inputs = torch.randn(3, 9, 2, dtype=F64)
    assert_close(
        STRATEGIES["sequential"](alrnn, inputs)[0], STRATEGIES["sequential"](plrnn, inputs)[0]
    )
    assert plrnn.num_relu == 4


def test_linear_units_pass_negative_values_and_only_the_plrnn_masks_the_self_weight():
    weight = torch.tensor([[5.0, 0, 0], [1, 5, 1], [0, 0, 5]], dtype=F64)
    z = torch.tensor([[-2.0, 0.0, -3.0]], dtype=F64, requires_grad=True)
    projected = torch.zeros(1, 3, dtype=F64)
    alrnn = ALRNNCell(1, 3, num_relu=1).to(F64)
    with torch.no_grad():
        alrnn.diagonal.zero_()
        alrnn.weight_hh.copy_(weight)
    new, _ = alrnn.recur(projected, alrnn.state_type(z))
    # z_0 = -2 is linear: 5 z_0 = -10 to itself, 1 z_0 to unit 1; relu(z_2 = -3) = 0
    assert_close(new, torch.tensor([[-10.0, -2.0, 0.0]], dtype=F64))
    plrnn = PLRNNCell(1, 3).to(F64)
    with torch.no_grad():
        plrnn.diagonal.zero_()
        plrnn.off_diagonal.copy_(weight)
    new, _ = plrnn.recur(projected, plrnn.state_type(-z))
    # relu(2, 0, 3): unit 1 reads 2 + 3, the diagonal of off_diagonal is masked
    assert_close(new, torch.tensor([[0.0, 5.0, 0.0]], dtype=F64))
    (grad,) = torch.autograd.grad(new.sum(), plrnn.off_diagonal)
    assert torch.all(torch.diagonal(grad) == 0)


@pytest.mark.parametrize("radius", [1.0, 0.5])
def test_initialization_is_the_normalized_positive_definite_matrix(radius):
    torch.manual_seed(0)
    cell = PLRNNCell(2, 12, initial_radius=radius)
    matrix = torch.diag(cell.diagonal) + cell.off_diagonal
    eigenvalues = torch.linalg.eigvalsh(matrix.double())
    assert_close(eigenvalues.max(), torch.tensor(radius, dtype=F64), rtol=1e-5, atol=1e-6)
    assert eigenvalues.min() > 0
    assert_close(matrix, matrix.t())
    assert torch.all(cell.bias == 0)
    assert cell.weight_ih.abs().max() <= 1 / 2**0.5


def test_options_are_checked():
    with pytest.raises(ValueError, match="num_relu must be at most hidden_size"):
        ALRNNCell(2, 4, num_relu=5)
    with pytest.raises(ValueError, match="num_relu must be a positive integer"):
        ALRNNCell(2, 4, num_relu=0)
    with pytest.raises(ValueError, match="initial_radius"):
        PLRNNCell(2, 4, initial_radius=1.5)
    assert "num_relu=3" in repr(ALRNNCell(2, 4, num_relu=3))


def test_alrnn_starts_almost_linear_and_decoupled():
    torch.manual_seed(0)
    cell = ALRNNCell(2, 40)
    # A = diag(K) of the normalized positive definite K (in (0, 1]), W ~ N(0, 0.01^2)
    assert torch.all((cell.diagonal > 0) & (cell.diagonal <= 1))
    assert 0.008 < float(cell.weight_hh.detach().std()) < 0.012
    assert torch.all(cell.bias == 0)
