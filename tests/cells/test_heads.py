"""Head-wise (block-diagonal) recurrences of the lstm, gru and elman cells (FlashRNN)."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, assert_states_close

from rnnkit.cells import make_cell
from rnnkit.cells.heads import block_diagonal, headwise_product
from rnnkit.strategies import STRATEGIES
from rnnkit.strategies.native import unsupported_reason

F64 = torch.float64
GATES = {"lstm": 4, "gru": 3, "elman": 1}
TORCH_CELLS = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "elman": torch.nn.RNNCell}


def headed_cell(name: str, hidden_size: int = 8, num_heads: int = 2, **options):
    torch.manual_seed(0)
    return make_cell(name, 3, hidden_size, num_heads=num_heads, **options).to(F64)


def recurrent_preactivations(cell, h: torch.Tensor) -> torch.Tensor:
    """``W_hh h`` of one step as the cell computes it, ``(B, gates * H)``."""
    return headwise_product(h, cell.weight_hh)


@pytest.mark.parametrize("name", list(GATES))
def test_weight_hh_is_stored_per_head(name):
    cell = headed_cell(name, hidden_size=8, num_heads=2)
    assert cell.weight_hh.shape == (2, GATES[name] * 4, 4)
    assert cell.dense_weight_hh().shape == (GATES[name] * 8, 8)


@pytest.mark.parametrize("gates", [1, 3, 4])
def test_headwise_product_equals_the_dense_block_diagonal_product(gates):
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(3, gates * 2, 2, dtype=F64, generator=generator)
    hidden = torch.randn(5, 6, dtype=F64, generator=generator)
    dense = block_diagonal(weight)  # (gates * 6, 6)
    assert_close(headwise_product(hidden, weight), hidden @ dense.T, "head-wise product", F64)
    # gate g's units of head k sit at g H + k d ... g H + (k + 1) d and read only head k
    for gate in range(gates):
        for head in range(3):
            rows = slice(gate * 6 + head * 2, gate * 6 + head * 2 + 2)
            block = dense[rows, head * 2 : head * 2 + 2]
            assert torch.equal(block, weight[head, gate * 2 : gate * 2 + 2]), (gate, head)
            outside = dense[rows].clone()
            outside[:, head * 2 : head * 2 + 2] = 0
            assert not outside.any(), f"gate {gate} head {head} reads another head"


@pytest.mark.parametrize("name", list(GATES))
def test_perturbing_one_head_leaves_the_other_heads_preactivations(name):
    cell = headed_cell(name)
    generator = torch.Generator().manual_seed(2)
    h = torch.randn(3, 8, dtype=F64, generator=generator)
    perturbed = h.clone()
    perturbed[:, :4] += 1.0  # head 0
    before = recurrent_preactivations(cell, h).unflatten(-1, (GATES[name], 2, 4))
    after = recurrent_preactivations(cell, perturbed).unflatten(-1, (GATES[name], 2, 4))
    assert torch.equal(before[:, :, 1], after[:, :, 1]), "head 1 saw head 0's h"
    assert not torch.equal(before[:, :, 0], after[:, :, 0]), "head 0 ignored its own h"


@pytest.mark.parametrize("name", list(GATES))
def test_recur_equals_the_dense_cell_with_the_block_diagonal_matrix(name):
    cell = headed_cell(name)
    torch.manual_seed(0)
    dense = make_cell(name, 3, 8).to(F64)
    with torch.no_grad():
        for parameter_name, parameter in dense.named_parameters():
            source = cell.get_parameter(parameter_name)
            parameter.copy_(cell.dense_weight_hh() if parameter_name == "weight_hh" else source)
    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(2, 5, 3, dtype=F64, generator=generator)
    expected = STRATEGIES["sequential"](dense, inputs)
    actual = STRATEGIES["sequential"](cell, inputs)
    assert_close(actual[0], expected[0], "outputs", F64)
    assert_states_close(actual[1], expected[1], "final state", F64)


@pytest.mark.parametrize("name", list(GATES))
def test_one_head_is_todays_cell_and_matches_torch(name):
    torch.manual_seed(0)
    default = make_cell(name, 3, 4)
    one_head = headed_cell(name, hidden_size=4, num_heads=1).float()
    assert default.state_dict().keys() == one_head.state_dict().keys()
    for key, value in default.state_dict().items():
        assert torch.equal(value, one_head.state_dict()[key]), f"{key} differs with num_heads=1"
    reference = TORCH_CELLS[name](3, 4, dtype=F64)
    cell = one_head.to(F64)
    cell.load_state_dict(reference.state_dict())
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, dtype=F64, generator=generator)
    state = tuple(torch.randn(2, 4, dtype=F64, generator=generator) for _ in cell.state_sizes())
    expected = reference(x, state if name == "lstm" else state[0])
    expected = expected[0] if name == "lstm" else expected
    assert_close(cell.step(x, cell.state_type(*state))[0], expected, "h'", F64)
    assert unsupported_reason(cell) is None


@pytest.mark.parametrize("name", list(GATES))
def test_native_refuses_heads(name):
    reason = unsupported_reason(headed_cell(name))
    assert reason == "torch's fused kernel has no head-wise recurrent matrices"


@pytest.mark.parametrize("name", list(GATES))
def test_hidden_size_must_be_divisible_by_num_heads(name):
    with pytest.raises(ValueError, match=r"hidden_size \(6\) must be divisible by num_heads \(4\)"):
        make_cell(name, 3, 6, num_heads=4)
    with pytest.raises(ValueError, match="num_heads must be a positive integer, got 0"):
        make_cell(name, 3, 6, num_heads=0)


def test_lstm_refuses_proj_size_with_heads():
    with pytest.raises(ValueError, match="proj_size is not supported with num_heads > 1"):
        make_cell("lstm", 3, 8, num_heads=2, proj_size=2)


@pytest.mark.parametrize("name", list(GATES))
def test_dropconnect_with_heads_under_fused_equals_sequential(name):
    results = []
    for strategy in ("sequential", "fused"):
        cell = headed_cell(name, weight_dropout=0.3, hidden_dropout=0.2).train()
        generator = torch.Generator().manual_seed(5)
        inputs = torch.randn(3, 6, 3, dtype=F64, generator=generator).requires_grad_()
        torch.manual_seed(7)
        outputs, _ = STRATEGIES[strategy](cell, inputs)
        assert cell.noise is not None and cell.noise.recurrent_weight is not None
        dropped = cell.noise.recurrent_weight
        assert dropped.shape == cell.weight_hh.shape and (dropped == 0).any()
        grads = torch.autograd.grad(outputs.square().sum(), [inputs, cell.weight_hh])
        results.append((outputs, *grads))
    for actual, expected, label in zip(
        results[1], results[0], ["outputs", "grad of inputs", "grad of weight_hh"], strict=True
    ):
        assert_close(actual, expected, label, F64)
