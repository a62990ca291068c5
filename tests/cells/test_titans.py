"""Titans' neural memory: the closed-form loss gradient against autograd, the cell against a
transcription of the paper's per-token equations (autograd for the inner gradient), the
chunkwise scan against the sequential reference across pieces that cut chunks, and a few
training steps through the command line."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from rnnkit import cli
from rnnkit.cells import TitansCell, TitansState
from rnnkit.cells.titans_memory import MemoryLayout, memory_gradient, memory_loss
from rnnkit.strategies import STRATEGIES

F64 = torch.float64
EXACT = {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("attentional_bias", ["l2", "huber"])
@pytest.mark.parametrize(("depth", "activation"), [(1, "silu"), (2, "silu"), (2, "gelu")])
def test_closed_form_gradient_equals_autograd(depth, activation, attentional_bias):
    layout = MemoryLayout(depth, 3, 5, activation)
    generator = torch.Generator().manual_seed(depth)
    weights = torch.randn(2, 1, layout.numel, dtype=F64, generator=generator)
    keys = torch.randn(2, 4, 3, dtype=F64, generator=generator)  # weights broadcast over 4
    values = torch.randn(2, 4, 3, dtype=F64, generator=generator)
    options = (layout, attentional_bias, 0.3)
    expected = []
    for index in range(4):  # one loss at a time: the gradient of each step's own loss
        single = weights.detach().clone().requires_grad_()
        loss = memory_loss(
            single, keys[:, index : index + 1], values[:, index : index + 1], *options
        )
        expected.append(torch.autograd.grad(loss.sum(), single)[0])
    actual = memory_gradient(weights, keys, values, *options)
    assert actual.shape == (2, 4, layout.numel)
    assert_close(actual, torch.cat(expected, 1), **EXACT)
    if attentional_bias == "huber":  # the clamp is active somewhere, or the test proves little
        residual = memory_loss(weights, keys, values, layout) - memory_loss(
            weights, keys, values, *options
        )
        assert bool((residual.abs() > 1e-6).any())


def paper_memory(weights: list[torch.Tensor], key: torch.Tensor, depth: int, activation: str):
    """``M(k)`` from explicit matrices ``(B, heads, rows, columns)``."""
    if depth == 1:
        return torch.einsum("bhij,bhj->bhi", weights[0], key)
    act = torch.nn.functional.silu if activation == "silu" else torch.nn.functional.gelu
    hidden = act(torch.einsum("bhij,bhj->bhi", weights[0], key))
    return key + torch.einsum("bhij,bhj->bhi", weights[1], hidden)


def paper_reference(cell: TitansCell, inputs: torch.Tensor) -> torch.Tensor:
    """The paper's equations token by token from the zero state, the inner gradient by
    autograd (``create_graph``, so the outer gradients flow): ``outputs (B, T, O)``."""
    layout, heads = cell.layout, cell.num_heads
    batch_size = inputs.shape[0]
    sizes = [rows * columns for rows, columns in layout.shapes]
    initial = [
        block.unflatten(-1, shape).expand(batch_size, heads, *shape)
        for block, shape in zip(cell.initial_memory.split(sizes, -1), layout.shapes, strict=True)
    ]
    memory, momentum = list(initial), [torch.zeros_like(w) for w in initial]
    chunk_start = memory
    outputs = []
    for step, x_t in enumerate(inputs.unbind(1)):
        projected = torch.nn.functional.linear(x_t, cell.weight_ih, cell.bias_ih)
        query, key, value, eta, theta, alpha = projected.split(cell.sizes, -1)
        query, key, value = (
            torch.nn.functional.silu(t).unflatten(-1, (heads, -1)) for t in (query, key, value)
        )
        query, key = (torch.nn.functional.normalize(t, dim=-1) for t in (query, key))
        eta, theta, alpha = (torch.sigmoid(t)[..., None, None] for t in (eta, theta, alpha))
        if step % cell.chunk_size == 0:
            chunk_start = memory
        residual = paper_memory(chunk_start, key, layout.depth, layout.activation) - value
        gradients = torch.autograd.grad((residual**2).sum(), chunk_start, create_graph=True)
        momentum = [eta * s - theta * g for s, g in zip(momentum, gradients, strict=True)]
        memory = [(1 - alpha) * m + s for m, s in zip(memory, momentum, strict=True)]
        read = paper_memory(memory, query, layout.depth, layout.activation).flatten(1)
        outputs.append(torch.nn.functional.linear(read, cell.weight_out, cell.bias_out))
    return torch.stack(outputs, 1)


def make_cell(seed: int = 0, **options) -> TitansCell:
    torch.manual_seed(seed)
    cell = TitansCell(3, 4, num_heads=2, **options).to(F64)
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return cell


@pytest.mark.parametrize("strategy", ["sequential", "scan"])
@pytest.mark.parametrize(("depth", "chunk_size"), [(1, 1), (2, 1), (2, 3), (1, 4), (2, 16)])
def test_cell_equals_the_paper_equations_values_and_gradients(strategy, depth, chunk_size):
    cell = make_cell(memory_depth=depth, chunk_size=chunk_size)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(2, 8, 3, dtype=F64, generator=generator).requires_grad_()
    weights = torch.randn(2, 8, 4, dtype=F64, generator=generator)
    expected = paper_reference(cell, inputs)
    actual, _ = STRATEGIES[strategy](cell, inputs)
    assert_close(actual, expected, **EXACT)
    wrt = [inputs, *cell.parameters()]
    expected_gradients = torch.autograd.grad((expected * weights).sum(), wrt)
    actual_gradients = torch.autograd.grad((actual * weights).sum(), wrt)
    names = ["inputs", *(name for name, _ in cell.named_parameters())]
    for name, got, want in zip(names, actual_gradients, expected_gradients, strict=True):
        assert_close(got, want, **EXACT, msg=lambda text, name=name: f"grad of {name}: {text}")


@pytest.mark.parametrize("pieces", [(3, 6, 2), (1, 1, 9), (5, 6)])
def test_scan_in_pieces_that_cut_chunks_equals_one_sequential_run(pieces):
    cell = make_cell(chunk_size=4)
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(2, sum(pieces), 3, dtype=F64, generator=generator)
    with torch.no_grad():
        expected, expected_state = STRATEGIES["sequential"](cell, inputs)
        outputs, state = [], None
        for piece in inputs.split(list(pieces), 1):
            piece_outputs, state = STRATEGIES["scan"](cell, piece, state)
            outputs.append(piece_outputs)
    assert_close(torch.cat(outputs, 1), expected, **EXACT)
    for field, got, want in zip(TitansState._fields, state, expected_state, strict=True):
        assert_close(got, want, **EXACT, msg=lambda text, field=field: f"{field}: {text}")
    assert torch.equal(state.chunk_position, torch.full((2, 1), sum(pieces) % 4, dtype=F64))


def test_rows_that_end_in_different_chunk_phases_continue_exactly():
    """A run with lengths leaves rows at different places in their chunks; continuing each
    row from its carried state equals running its real steps at once."""
    cell = make_cell(chunk_size=4)
    generator = torch.Generator().manual_seed(3)
    first = torch.randn(3, 7, 3, dtype=F64, generator=generator)
    second = torch.randn(3, 6, 3, dtype=F64, generator=generator)
    lengths = [7, 2, 5]
    with torch.no_grad():
        _, carried = STRATEGIES["scan"](cell, first, None, lengths)
        continued, final = STRATEGIES["scan"](cell, second, carried)
        for row, length in enumerate(lengths):
            whole = torch.cat([first[row : row + 1, :length], second[row : row + 1]], 1)
            outputs, state = STRATEGIES["sequential"](cell, whole)
            assert_close(continued[row], outputs[0, length:], **EXACT)
            for got, want in zip(final, state, strict=True):
                assert_close(got[row], want[0], **EXACT)


def test_zero_state_is_the_learned_initial_memory():
    cell = make_cell(memory_depth=1, chunk_size=2)
    inputs = torch.randn(1, 1, 3, dtype=F64)
    outputs, state = STRATEGIES["sequential"](cell, inputs)
    assert torch.equal(
        cell.initial_state(1).memory, torch.zeros(1, cell.state_sizes()[0], dtype=F64)
    )
    # after one step from M_0 the chunk's memory is M_0 itself: zero relative to M_0
    assert torch.equal(state.chunk_memory, torch.zeros_like(state.chunk_memory))
    gradient = torch.autograd.grad(outputs.sum(), cell.initial_memory)[0]
    assert bool(gradient.abs().gt(0).any()), "the outer loop does not reach M_0"


def test_gradient_clipping_keeps_the_memory_bounded():
    """From a huge state the clipped memory decays towards a bounded set, and stays finite."""
    cell = make_cell(chunk_size=2, max_gradient_norm=1.0)
    state = TitansState(*(100 * torch.randn(2, size, dtype=F64) for size in cell.state_sizes()))
    inputs = torch.randn(2, 200, 3, dtype=F64)
    with torch.no_grad():
        outputs, final = STRATEGIES["scan"](cell, inputs, state)
        expected, _ = STRATEGIES["sequential"](cell, inputs, state)
    assert bool(torch.isfinite(outputs).all())
    assert_close(outputs, expected, rtol=1e-8, atol=1e-8)
    assert final.momentum.abs().max() < state.momentum.abs().max()


def test_bad_options_name_themselves():
    for options, name in [
        ({"memory_depth": 3}, "memory_depth"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"attentional_bias": "l1"}, "attentional_bias"),
        ({"memory_activation": "relu"}, "memory_activation"),
        ({"max_gradient_norm": 0.0}, "max_gradient_norm"),
    ]:
        with pytest.raises(ValueError, match=name):
            TitansCell(3, 4, **options)


def test_passkey_trains_through_the_command_line(tmp_path, capsys):
    threads = torch.get_num_threads()
    arguments = ["train", "passkey", "--steps", "2", "--run-dir", str(tmp_path / "run")]
    arguments += ["--model.cell=titans", "--model.recurrent.options.chunk_size=4"]
    arguments += ["--model.model_size=16", "--model.recurrent.hidden_size=16"]
    arguments += ["--model.num_blocks=1", "--model.num_heads=2", "--trainer.batch_size=4"]
    arguments += ["--evaluation.sequences=8", "--evaluation.batch_size=4"]
    arguments += ["--data.train_length=16", "--data.test_length_factor=4"]
    try:
        assert cli.main(arguments) == 0
    finally:
        torch.set_num_threads(threads)
    output = capsys.readouterr().out
    assert "final validation after 2 steps" in output and "test: loss" in output
    assert "blocks titans, strategy auto;" in output
