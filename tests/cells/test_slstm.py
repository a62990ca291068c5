"""The sLSTM cell (Beck et al. 2024): its equations against a transcription written here from
the paper, stabilized and unstabilized; heads that are block-diagonal; no overflow on large
inputs; the empty first step; the state Jacobian; validation; and a layer that trains."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from rnnkit.cells import SLSTMCell, SLSTMState, make_cell
from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES

F64 = torch.float64
TOLERANCE = {"rtol": 1e-10, "atol": 1e-10}
CONFIGS = [
    pytest.param({}, id="exponential"),
    pytest.param({"num_heads": 2}, id="exponential-heads2"),
    pytest.param({"forget_gate": "sigmoid"}, id="sigmoid"),
    pytest.param({"forget_gate": "sigmoid", "num_heads": 4}, id="sigmoid-heads4"),
]


def perturbed_cell(hidden_size: int = 8, input_size: int = 3, **options) -> SLSTMCell:
    """A float64 cell with every parameter moved off its initial value (R starts at zero)."""
    torch.manual_seed(0)
    cell = make_cell("slstm", input_size, hidden_size, **options)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    assert isinstance(cell, SLSTMCell)
    return cell.to(F64)


def dense_recurrent(cell: SLSTMCell) -> torch.Tensor:
    """R as one ``(4H, H)`` matrix, gate-major rows, zero outside each head's block."""
    hidden, size = cell.hidden_size, cell.head_size
    full = torch.zeros(4 * hidden, hidden, dtype=cell.weight_hh.dtype)
    for head in range(cell.num_heads):
        for gate in range(4):
            rows = slice(gate * hidden + head * size, gate * hidden + (head + 1) * size)
            columns = slice(head * size, (head + 1) * size)
            full[rows, columns] = cell.weight_hh[head, gate * size : (gate + 1) * size]
    return full


def paper_preactivations(cell: SLSTMCell, x: torch.Tensor, h: torch.Tensor):
    """``i~, f~, z~, o~`` of one step: W x + R h + b with the dense R, gate order (i, f, z, o)."""
    bias = cell.bias_ih if cell.bias_ih is not None else 0.0
    gates = x @ cell.weight_ih.T + h @ dense_recurrent(cell).T + bias
    return gates.chunk(4, -1)


def log_forget(cell: SLSTMCell, forget_pre: torch.Tensor) -> torch.Tensor:
    return forget_pre if cell.forget_gate == "exponential" else functional.logsigmoid(forget_pre)


def stabilized_loop(cell: SLSTMCell, inputs: torch.Tensor, state: SLSTMState):
    """The paper's stabilized equations (Section 2.2), step by step; ``m_1 = i~_1`` where the
    memory is empty (``n = 0``), as the authors' kernel."""
    h, c, n, m = state
    outputs = []
    for x in inputs.unbind(1):
        i_pre, f_pre, z_pre, o_pre = paper_preactivations(cell, x, h)
        log_f = log_forget(cell, f_pre)
        m_new = torch.where(n == 0, i_pre, torch.maximum(log_f + m, i_pre))
        i_gate = torch.exp(i_pre - m_new)
        f_gate = torch.minimum(torch.exp(log_f + m - m_new), torch.ones_like(m))
        c = f_gate * c + i_gate * torch.tanh(z_pre)
        n = f_gate * n + i_gate
        m = m_new
        h = torch.sigmoid(o_pre) * c / n
        outputs.append(h)
    return torch.stack(outputs, 1), SLSTMState(h, c, n, m)


def unstabilized_loop(cell: SLSTMCell, inputs: torch.Tensor, state: SLSTMState):
    """The unstabilized equations: ``i = exp(i~)``, ``f = exp(f~)`` or ``sigmoid(f~)``,
    ``c, n`` the stabilized ones times ``exp(m)``."""
    h, c, n, m = state
    c, n = c * torch.exp(m), n * torch.exp(m)
    outputs = []
    for x in inputs.unbind(1):
        i_pre, f_pre, z_pre, o_pre = paper_preactivations(cell, x, h)
        f_gate = torch.exp(log_forget(cell, f_pre))
        c = f_gate * c + torch.exp(i_pre) * torch.tanh(z_pre)
        n = f_gate * n + torch.exp(i_pre)
        h = torch.sigmoid(o_pre) * c / n
        outputs.append(h)
    return torch.stack(outputs, 1), (c, n)


def random_state(cell: SLSTMCell, batch_size: int, generator: torch.Generator) -> SLSTMState:
    """A valid state: ``n > 0``."""
    h, c, n, m = (
        torch.randn(batch_size, cell.hidden_size, dtype=F64, generator=generator) for _ in range(4)
    )
    return SLSTMState(h, c, n.exp(), m)


@pytest.mark.parametrize("options", CONFIGS)
@pytest.mark.parametrize("initial", ["zero", "random"])
def test_sequential_equals_the_paper_stabilized_and_unstabilized(options, initial):
    cell = perturbed_cell(**options)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(3, 12, 3, dtype=F64, generator=generator)
    state = cell.initial_state(3) if initial == "zero" else random_state(cell, 3, generator)
    with torch.no_grad():
        outputs, final = STRATEGIES["sequential"](cell, inputs, state)
        expected_outputs, expected_final = stabilized_loop(cell, inputs, state)
        plain_outputs, (plain_c, plain_n) = unstabilized_loop(cell, inputs, state)
    torch.testing.assert_close(outputs, expected_outputs, **TOLERANCE)
    for field, got, want in zip(final._fields, final, expected_final, strict=True):
        torch.testing.assert_close(got, want, **TOLERANCE, msg=lambda text, f=field: f"{f}: {text}")
    # no overflow at these sizes: the unstabilized computation is the same function
    assert plain_c.isfinite().all() and plain_n.isfinite().all()
    torch.testing.assert_close(outputs, plain_outputs, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(final.c * final.m.exp(), plain_c, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(final.n * final.m.exp(), plain_n, rtol=1e-9, atol=1e-10)


def test_zero_state_first_step_starts_an_empty_memory():
    """From zeros: ``m_1 = i~_1``, ``c_1 = z_1``, ``n_1 = 1``, ``h_1 = o_1 z_1``, also when the
    forget gate's ``exp(log f + m_0 - m_1)`` would overflow."""
    cell = perturbed_cell()
    projected = torch.randn(4, 4 * cell.hidden_size, dtype=F64)
    projected[:, cell.hidden_size : 2 * cell.hidden_size] = 1000.0  # f~: exp(1000) = inf
    _, (h, c, n, m) = cell.recur(projected, cell.initial_state(4))
    i_pre, _, z_pre, o_pre = projected.chunk(4, -1)
    torch.testing.assert_close(m, i_pre)
    torch.testing.assert_close(c, torch.tanh(z_pre))
    torch.testing.assert_close(n, torch.ones_like(n))
    torch.testing.assert_close(h, torch.sigmoid(o_pre) * torch.tanh(z_pre))


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["f32", "f64"])
@pytest.mark.parametrize("forget_gate", ["exponential", "sigmoid"])
def test_large_inputs_do_not_overflow(forget_gate, dtype):
    """Pre-activations in the thousands (``exp`` overflows in both dtypes): outputs and
    gradients stay finite and ``|h| <= 1`` (``c / n`` averages values of tanh)."""
    cell = perturbed_cell(forget_gate=forget_gate, num_heads=2).to(dtype)
    generator = torch.Generator().manual_seed(2)
    inputs = (3000 * torch.randn(2, 20, 3, generator=generator)).to(dtype).requires_grad_()
    outputs, final = STRATEGIES["sequential"](cell, inputs)
    assert outputs.isfinite().all() and all(field.isfinite().all() for field in final)
    assert outputs.detach().abs().max().item() <= 1.0
    assert final.m.detach().abs().max().item() > 100  # the stabilizer really was needed
    (outputs.sum() + final.c.sum()).backward()
    assert inputs.grad is not None and inputs.grad.isfinite().all()
    assert all(parameter.grad.isfinite().all() for parameter in cell.parameters())


def test_heads_are_block_diagonal():
    """Changing head 0's ``h`` changes head 0's pre-activations (every gate) and leaves head 1's
    pre-activations and new state as they were."""
    cell = perturbed_cell(hidden_size=8, num_heads=2)
    generator = torch.Generator().manual_seed(3)
    state = random_state(cell, 2, generator)
    projected = torch.randn(2, 32, dtype=F64, generator=generator)
    moved = state._replace(h=state.h.clone())
    moved.h[:, :4] += 1.0
    before = cell.recurrent_input(state.h).unflatten(-1, (4, 2, 4))  # (B, gate, head, unit)
    after = cell.recurrent_input(moved.h).unflatten(-1, (4, 2, 4))
    assert torch.equal(before[:, :, 1], after[:, :, 1])
    assert bool((before[:, :, 0] != after[:, :, 0]).all())
    _, new = cell.recur(projected, state)
    _, new_moved = cell.recur(projected, moved)
    for field, got, want in zip(new._fields, new_moved, new, strict=True):
        assert torch.equal(got[:, 4:], want[:, 4:]), f"head 1's {field} changed"
        assert not torch.equal(got[:, :4], want[:, :4]), f"head 0's {field} did not change"


@pytest.mark.parametrize("options", CONFIGS)
def test_state_jacobian_blocks_equal_autograd(options):
    """``state_jacobian`` per head equals ``torch.func.jacrev`` of ``recur`` in the
    ``flatten_state`` layout, which is zero outside the blocks; also from the zero state."""
    cell = perturbed_cell(**options)
    generator = torch.Generator().manual_seed(4)
    projected = 2 * torch.randn(6, 4 * cell.hidden_size, dtype=F64, generator=generator)
    for state in (random_state(cell, 6, generator), cell.initial_state(6)):
        flat = cell.flatten_state(state)
        for got, want in zip(cell.unflatten_state(flat), state, strict=True):
            assert torch.equal(got, want)

        def step(previous: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
            _, new = cell.recur(inputs[None], cell.unflatten_state(previous[None]))
            return cell.flatten_state(new)[0]

        dense = torch.func.vmap(torch.func.jacrev(step))(flat, projected)
        blocks = cell.state_jacobian(projected, state)
        size = cell.jacobian_block_size
        assert blocks.shape == (6, cell.num_heads, size, size)
        for row in range(6):
            torch.testing.assert_close(torch.block_diag(*blocks[row]), dense[row], **TOLERANCE)


def test_initialization_follows_the_authors_code():
    """R zero; forget biases per head from 5 down to -7 (powerlaw, one block), through
    logsigmoid for the exponential gate; the other biases zero."""
    sigmoid = make_cell("slstm", 3, 8, num_heads=2, forget_gate="sigmoid")
    exponential = make_cell("slstm", 3, 8, num_heads=2)
    assert not sigmoid.weight_hh.any()
    forget = sigmoid.bias_ih[8:16].double()
    expected = 5 - 12 * torch.linspace(0, 1, 4, dtype=F64) ** 0.3
    torch.testing.assert_close(forget, expected.repeat(2), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        exponential.bias_ih[8:16].double(), functional.logsigmoid(expected).repeat(2)
    )
    others = torch.cat([sigmoid.bias_ih[:8], sigmoid.bias_ih[16:]])
    assert not others.any()
    single = make_cell("slstm", 3, 4, num_heads=4, forget_gate="sigmoid")
    assert torch.equal(single.bias_ih[4:8], torch.full((4,), 5.0))  # head size 1: no 0 / 0


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"hidden_size": 6, "num_heads": 4}, r"hidden_size \(6\) must be divisible by num_heads"),
        ({"num_heads": 0}, r"num_heads must be a positive integer, got 0"),
        ({"num_heads": 1.5}, r"num_heads must be a positive integer, got 1.5"),
        ({"forget_gate": "exp"}, r"forget_gate must be one of .*'exponential'.*got 'exp'"),
        ({"input_size": 0}, r"input_size must be a positive integer, got 0"),
    ],
)
def test_constructor_rejects_bad_arguments(options, match):
    arguments = {"input_size": 3, "hidden_size": 4, **options}
    with pytest.raises(ValueError, match=match):
        SLSTMCell(**arguments)


def test_recurrent_layer_trains_on_a_toy_task():
    """``Recurrent("slstm", ...)``: predicting the running mean of a signal, the loss falls."""
    torch.manual_seed(0)
    layer = Recurrent("slstm", 1, 8, num_heads=2)
    readout = torch.nn.Linear(8, 1)
    optimizer = torch.optim.Adam([*layer.parameters(), *readout.parameters()], lr=0.05)
    inputs = torch.randn(16, 6, 1)
    targets = inputs.cumsum(1) / torch.arange(1, 7).view(1, 6, 1)
    losses = []
    for _ in range(15):
        outputs, _ = layer(inputs)
        loss = functional.mse_loss(readout(outputs), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
