"""pLSTM over 2-D grids (``rnnkit.cells.plstm``): the wavefront, gating-matrix and row-chunked
forms against the node-by-node reference (float64 values and gradients, every mode and
direction, non-square grids, heads), all against the paper's gating-matrix form written out path
by path, and the modes' bounds."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from rnnkit.cells import CELLS
from rnnkit.cells.plstm import (
    ALL_DIRECTIONS,
    PLSTM2D,
    GridTerms,
    scan_reference,
    scan_wavefront,
    skew,
    unskew,
)
from rnnkit.cells.plstm_parallel import scan_gating_matrix, scan_rows

SCANS = {
    "wavefront": scan_wavefront,
    "parallel": scan_gating_matrix,
    "chunked": scan_rows,
}

TOLERANCE = {"atol": 1e-10, "rtol": 1e-10}


def assert_close(actual: Tensor, expected: Tensor, name: str) -> None:
    torch.testing.assert_close(actual, expected, **TOLERANCE, msg=lambda m: f"{name}: {m}")


def random_terms(batch: int, size_x: int, size_y: int, heads: int, generator) -> GridTerms:
    """Gates drawn in (-1, 1) (signs included, so no cancellation hides a wrong edge)."""

    def draw(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1

    grid = (batch, size_x, size_y, heads)
    return GridTerms(
        draw(*grid, 3), draw(*grid, 3), draw(*grid, 2), *(draw(*grid) for _ in range(9))
    )


def path_sum_output(terms: GridTerms, x: int, y: int) -> Tensor:
    """``h_{x,y} = q^T sum_{n'} G_{(x,y) n'} k_{n'} v_{n'}^T`` with the gating matrix written
    out as the paper defines it: over every monotone path from ``n'`` to ``(x, y)``, the Source
    of the first edge, the Transition at each node passed (outgoing edge from incoming edge),
    the Mark of the last edge; ``D`` for ``n' = (x, y)``. ``(B, heads, d_v)``."""
    source = {"r": terms.source_right, "d": terms.source_down}
    mark = {"r": terms.mark_left, "d": terms.mark_up}  # an r edge arrives from the left
    transition = {
        ("r", "r"): terms.transition_right_from_left,
        ("r", "d"): terms.transition_right_from_up,
        ("d", "r"): terms.transition_down_from_left,
        ("d", "d"): terms.transition_down_from_up,
    }
    total = terms.direct[:, x, y, :, None, None] * outer(terms, x, y)
    for start_x, start_y in itertools.product(range(x + 1), range(y + 1)):
        steps_x, steps_y = x - start_x, y - start_y
        if steps_x + steps_y == 0:
            continue
        for right_steps in itertools.combinations(range(steps_x + steps_y), steps_x):
            moves = ["r" if step in right_steps else "d" for step in range(steps_x + steps_y)]
            weight = source[moves[0]][:, start_x, start_y]
            node_x, node_y = start_x, start_y
            for incoming, outgoing in itertools.pairwise(moves):
                node_x, node_y = node_x + (incoming == "r"), node_y + (incoming == "d")
                weight = weight * transition[outgoing, incoming][:, node_x, node_y]
            weight = weight * mark[moves[-1]][:, x, y]
            total = total + weight[:, :, None, None] * outer(terms, start_x, start_y)
    return torch.einsum("bhk,bhkv->bhv", terms.query[:, x, y], total)


def outer(terms: GridTerms, x: int, y: int) -> Tensor:
    return terms.key[:, x, y, :, :, None] * terms.value[:, x, y, :, None, :]


@pytest.mark.parametrize("size", [(2, 2), (3, 3), (2, 4), (4, 3)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_scans_match_the_gating_matrix_path_sums(size):
    terms = random_terms(2, *size, heads=2, generator=torch.Generator().manual_seed(sum(size)))
    expected = torch.stack(
        [
            torch.stack([path_sum_output(terms, x, y) for y in range(size[1])], 1)
            for x in range(size[0])
        ],
        1,
    )
    assert_close(scan_reference(terms), expected, "reference")
    for name, scan in SCANS.items():
        assert_close(scan(terms), expected, name)


def test_two_by_two_grid_by_hand():
    """Node (1, 1) of a 2x2 grid, every path spelled out (r: x + 1, d: y + 1)."""
    t = random_terms(1, 2, 2, heads=1, generator=torch.Generator().manual_seed(7))

    def kv(x: int, y: int) -> Tensor:
        return outer(t, x, y)[0, 0]

    def g(tensor: Tensor, x: int, y: int) -> Tensor:
        return tensor[0, x, y, 0]

    read = (
        g(t.direct, 1, 1) * kv(1, 1)
        + g(t.mark_left, 1, 1) * g(t.source_right, 0, 1) * kv(0, 1)
        + g(t.mark_up, 1, 1) * g(t.source_down, 1, 0) * kv(1, 0)
        # (0,0) -r-> (1,0) -d-> (1,1): a turn from left to down at (1, 0)
        + g(t.mark_up, 1, 1) * g(t.transition_down_from_left, 1, 0) * g(t.source_right, 0, 0)
        * kv(0, 0)
        # (0,0) -d-> (0,1) -r-> (1,1): a turn from up to right at (0, 1)
        + g(t.mark_left, 1, 1) * g(t.transition_right_from_up, 0, 1) * g(t.source_down, 0, 0)
        * kv(0, 0)
    )  # fmt: skip
    expected = t.query[0, 1, 1, 0] @ read
    assert_close(scan_reference(t)[0, 1, 1, 0], expected, "reference (1, 1)")
    for name, scan in SCANS.items():
        assert_close(scan(t)[0, 1, 1, 0], expected, f"{name} (1, 1)")


def test_skew_and_unskew_are_inverse():
    values = torch.randn(2, 3, 5, 4)
    skewed = skew(values)
    assert skewed.shape == (2, 3, 7, 4)
    assert torch.equal(skewed[:, 2, 2 + 4], values[:, 2, 4])
    assert torch.equal(skewed[:, 2, :2], torch.zeros(2, 2, 4))
    assert torch.equal(unskew(skewed, 5), values)


CASES = [
    (mode, directions, heads, size)
    for mode in ("P", "D")
    for directions in [(0,), (1,), (2,), (3,), ALL_DIRECTIONS]
    for heads, size in [(1, (3, 3)), (2, (3, 5)), (4, (4, 2)), (2, (1, 4))]
]


@pytest.mark.parametrize(
    "mode,directions,heads,size",
    CASES,
    ids=[f"{m}-dir{''.join(map(str, d))}-heads{h}-{s[0]}x{s[1]}-f64" for m, d, h, s in CASES],
)
def test_forms_match_reference_values_and_gradients(mode, directions, heads, size):
    """Every form of ``PLSTM2D`` (``form=...``, run through ``forward``) against the
    node-by-node reference: outputs and the gradients of the inputs and every parameter."""
    torch.manual_seed(0)
    layer = PLSTM2D(3, 4 * heads, num_heads=heads, mode=mode, directions=directions).double()
    inputs = torch.randn(2, *size, 3, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, *size, 4 * heads, dtype=torch.float64)
    names = ["inputs", *(name for name, _ in layer.named_parameters())]

    def run(form: str) -> tuple[Tensor, tuple[Tensor, ...]]:
        layer.form = form
        outputs = layer(inputs)
        gradients = torch.autograd.grad((outputs * weights).sum(), [inputs, *layer.parameters()])
        return outputs, gradients

    reference_outputs, reference_gradients = run("reference")
    assert reference_outputs.shape == (2, *size, 4 * heads)
    assert reference_gradients[0].abs().sum() > 0
    for form in SCANS:
        outputs, gradients = run(form)
        assert_close(outputs, reference_outputs, f"{form} outputs")
        for name, actual, expected in zip(names, gradients, reference_gradients, strict=True):
            assert_close(actual, expected, f"{form} gradient of {name}")


def test_direction_reverses_the_grid():
    """The scan from another corner is the top-left scan of the flipped grid, flipped back."""
    torch.manual_seed(1)
    inputs = torch.randn(2, 4, 5, 3, dtype=torch.float64)
    base = PLSTM2D(3, 4, mode="D", directions=(0,)).double()
    for direction, dims in [(1, [1]), (2, [2]), (3, [1, 2])]:
        flipped = PLSTM2D(3, 4, mode="D", directions=(direction,)).double()
        flipped.load_state_dict(base.state_dict())
        expected = base(inputs.flip(dims)).flip(dims)
        assert_close(flipped(inputs), expected, f"direction {direction}")


def test_output_depends_only_on_the_scans_upstream_cone():
    """From the top-left corner, node (x, y) sees exactly the nodes with x' <= x and y' <= y."""
    torch.manual_seed(2)
    layer = PLSTM2D(2, 4, mode="P", directions=(0,)).double()
    inputs = torch.randn(1, 4, 4, 2, dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(layer(inputs)[0, 2, 1].sum(), inputs)
    seen = gradient.abs().sum(-1)[0] > 0
    expected = torch.zeros(4, 4, dtype=torch.bool)
    expected[:3, :2] = True
    assert torch.equal(seen, expected)


@pytest.mark.parametrize("mode", ["P", "D"])
def test_mode_bounds(mode):
    """P-mode: the Transitions out of each incoming edge sum to at most one in absolute value;
    D-mode: no turn from the left edge down (a multitree), each Transition at most one."""
    torch.manual_seed(3)
    layer = PLSTM2D(3, 8, num_heads=2, mode=mode)
    with torch.no_grad():
        layer.gates.weight.mul_(20)  # saturate the gates
        terms = layer.scan_terms(torch.randn(4, 5, 5, 3))
    for scan in terms:
        if mode == "P":
            from_left = scan.transition_right_from_left.abs() + scan.transition_down_from_left.abs()
            from_up = scan.transition_right_from_up.abs() + scan.transition_down_from_up.abs()
            assert from_left.max() <= 1 and from_up.max() <= 1
            assert (scan.source_right + scan.source_down).max() <= 1
            assert torch.equal(scan.transition_right_from_left, scan.transition_right_from_up)
            assert torch.equal(scan.mark_left, scan.mark_up)
        else:
            assert torch.equal(scan.transition_down_from_left, torch.zeros_like(scan.query[..., 0]))
        for gate in scan[3:]:
            assert gate.abs().max() <= 1


def test_p_mode_carries_a_state_across_the_grid():
    """Transitions of one along x (orientation 1) carry the corner's key-value to the far end."""
    layer = PLSTM2D(1, 2, mode="P", directions=(0,)).double()
    terms = layer.scan_terms(torch.zeros(1, 12, 1, 1, dtype=torch.float64))[0]
    ones, zeros = torch.ones_like(terms.direct), torch.zeros_like(terms.direct)
    key = torch.zeros_like(terms.key)
    key[:, 0, 0, :, 0] = 1.0
    query = torch.ones_like(terms.query)
    value = torch.ones_like(terms.value)
    gates = (ones, zeros, ones, ones, zeros, zeros, ones, ones, zeros)
    for name, scan in SCANS.items():
        outputs = scan(GridTerms(query, key, value, *gates))
        assert_close(outputs[0, 1:, 0, 0], torch.ones(11, 2, dtype=torch.float64), name)


def test_validation_and_not_a_sequence_cell():
    assert "plstm" not in CELLS
    with pytest.raises(ValueError, match="mode"):
        PLSTM2D(2, 4, mode="X")
    with pytest.raises(ValueError, match="directions"):
        PLSTM2D(2, 4, directions=(0, 4))
    with pytest.raises(ValueError, match="divisible"):
        PLSTM2D(2, 5, num_heads=2)
    with pytest.raises(ValueError, match="form"):
        PLSTM2D(2, 4, form="fast")
    for form in ("auto", "chunked", "parallel", "wavefront", "reference"):
        with pytest.raises(ValueError, match=r"\(B, X, Y, D\)"):
            PLSTM2D(2, 4, form=form)(torch.randn(3, 2))
