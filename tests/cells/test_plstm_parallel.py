"""pLSTM's parallel forms (``rnnkit.cells.plstm_parallel``): the gating matrix ``G`` read off
the node-by-node reference, the row chains, and ``form="auto"``. The forms' values and
gradients against the reference are in ``test_plstm.py``."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from rnnkit.cells.plstm import PLSTM2D, GridTerms, scan_reference
from rnnkit.cells.plstm_parallel import choose_form, gating_matrix, row_chains

TOLERANCE = {"atol": 1e-12, "rtol": 1e-12}


def random_gates(batch: int, size_x: int, size_y: int, heads: int, seed: int) -> list[Tensor]:
    """The nine gates of ``GridTerms`` drawn in (-1, 1), each ``(B, X, Y, heads)``."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, size_x, size_y, heads)
    return [torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1 for _ in range(9)]


def gating_matrix_from_reference(gates: list[Tensor]) -> Tensor:
    """``G`` by linearity: with ``q = k = 1`` (``d_k = 1``) and ``v_{n'}`` the ``n'``-th unit
    vector (``d_v = N``), the reference's ``h_n = sum_{n'} G_{n n'} v_{n'}`` is row ``n`` of
    ``G``. ``(B, heads, N, N)``."""
    batch, size_x, size_y, heads = gates[0].shape
    nodes = size_x * size_y
    ones = torch.ones(batch, size_x, size_y, heads, 1, dtype=torch.float64)
    unit = torch.eye(nodes, dtype=torch.float64).reshape(1, size_x, size_y, 1, nodes)
    value = unit.expand(batch, -1, -1, heads, -1)
    outputs = scan_reference(GridTerms(ones, ones, value, *gates))  # (B, X, Y, heads, N)
    return outputs.flatten(1, 2).transpose(1, 2)


@pytest.mark.parametrize("size", [(1, 1), (1, 5), (5, 1), (3, 5), (4, 4), (5, 2)])
def test_gating_matrix_equals_the_references_path_sums(size):
    gates = random_gates(2, *size, heads=3, seed=size[0] * 10 + size[1])
    expected = gating_matrix_from_reference(gates)
    terms = GridTerms(*([torch.zeros(0)] * 3), *gates)  # gating_matrix reads only the gates
    torch.testing.assert_close(gating_matrix(terms), expected, **TOLERANCE)
    upstream = torch.tensor(
        [[x2 <= x1 and y2 <= y1 for x2 in range(size[0]) for y2 in range(size[1])]
         for x1 in range(size[0]) for y1 in range(size[1])]
    )  # fmt: skip
    assert torch.equal(expected[..., ~upstream], torch.zeros_like(expected[..., ~upstream]))


def test_row_chains_are_products_of_the_transitions_between():
    transitions = torch.rand(2, 3, 5, dtype=torch.float64) * 2 - 1  # (..., X, Y)
    chains = row_chains(transitions)
    assert chains.shape == (2, 3, 5, 5)
    for y in range(5):
        for y_from in range(5):
            expected = (
                transitions[..., y_from + 1 : y].prod(-1)
                if y_from < y
                else torch.zeros(2, 3, dtype=torch.float64)
            )
            torch.testing.assert_close(chains[..., y, y_from], expected, **TOLERANCE)


def test_row_chains_gradient_through_a_zero_transition():
    """A Transition of exactly zero cuts the chain; its gradient stays finite and correct."""
    transitions = torch.tensor([0.5, 0.0, -0.7, 0.3], dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(row_chains(transitions)[3, 0], transitions)
    # L[3, 0] = T_1 T_2: d/dT_1 = T_2, d/dT_2 = T_1 = 0
    torch.testing.assert_close(gradient, torch.tensor([0.0, -0.7, 0.0, 0.0], dtype=torch.float64))


def test_auto_form_picks_by_the_size_of_the_gating_matrix():
    assert choose_form(8, 8, 8, 8) == "parallel"  # N^2 = N d_k d_v
    assert choose_form(16, 16, 8, 8) == "chunked"
    assert choose_form(16, 16, 16, 16) == "parallel"
    torch.manual_seed(4)
    layer = PLSTM2D(3, 8, num_heads=2).double()
    assert layer.form == "auto"
    inputs = torch.randn(2, 3, 4, 3, dtype=torch.float64)
    torch.testing.assert_close(layer(inputs), layer.forward_parallel(inputs), rtol=0, atol=0)
    big = torch.randn(1, 5, 5, 3, dtype=torch.float64)  # 25 nodes > d_k d_v = 16
    torch.testing.assert_close(layer(big), layer.forward_chunked(big), rtol=0, atol=0)
