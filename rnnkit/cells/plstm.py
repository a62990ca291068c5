"""pLSTM over 2-D grids: a linear recurrence over the grid's edges with Source, Transition and
Mark gates, scanned from the four corners.

Pöppel, Freinschlag, Schmied, Lin, Hochreiter 2025, "pLSTM: parallelizable Linear Source
Transition Mark networks", https://arxiv.org/abs/2506.11997 (pLSTM on DAGs, its 2-D grid
specialization, P-mode and D-mode), transcribed from the authors' reference code
(github.com/ml-jku/plstm: ``pLSTM2D_torch`` in ``src/plstm/torch/plstm_2d.py`` and
``pLSTM2DLayer`` in ``plstm_2d_layer.py``; the scan below agreed with ``pLSTM2D_torch`` to
1e-16 in float64 on random 4x4 grids, checked once outside this repository's tests). The
paper's equation numbers could not be checked here (only its abstract was readable), so the
equations are named, not numbered.

The grid is a DAG: node ``(x, y)`` has two incoming edges, from the left ``(x - 1, y)`` and
from above ``(x, y - 1)``, and two outgoing ones, to the right and down. Each edge carries a
matrix state per head ``(d_k, d_v)``: ``C^r_{x,y}`` leaves ``(x, y)`` to the right, ``C^d_{x,y}``
leaves it downwards. With ``q, k, v`` projections of the node's input and scalar gates per node
and head:

    C^r_{x,y} = T^{rl}_{x,y} C^r_{x-1,y} + T^{ru}_{x,y} C^d_{x,y-1} + S^r_{x,y} k_{x,y} v_{x,y}^T
    C^d_{x,y} = T^{dl}_{x,y} C^r_{x-1,y} + T^{du}_{x,y} C^d_{x,y-1} + S^d_{x,y} k_{x,y} v_{x,y}^T
    h_{x,y}   = (q_{x,y} / sqrt(d_k))^T (M^l_{x,y} C^r_{x-1,y} + M^u_{x,y} C^d_{x,y-1}
                                          + D_{x,y} k_{x,y} v_{x,y}^T)

(states outside the grid are zero). Unrolled, ``h_n = q_n^T sum_{n'} G_{n n'} k_{n'} v_{n'}^T``
where the gating matrix ``G_{n n'}`` sums, over every monotone path from ``n'`` to ``n``, the
Source of the first edge, the Transitions at the nodes passed and the Mark of the last edge
(``D_n`` for ``n' = n``). Long paths are kept stable by one of two modes:

- P-mode (propagation): for each incoming edge, the absolute Transitions to the outgoing edges
  sum to at most one. A per-node orientation ``o = sigmoid(.)`` splits one Transition
  ``T = tanh(.)`` and one Source between the two outgoing edges:
  ``T^{rl} = T^{ru} = o T``, ``T^{dl} = T^{du} = (1 - o) T``, ``S^r = o S``, ``S^d = (1 - o) S``,
  ``M^l = M^u = M``; so ``|T^{rl}| + |T^{dl}| = |T| <= 1``, and a state travels far along a
  direction the orientation picks.
- D-mode (diffusive distribution): the line graph over edges is cut to a multitree (the
  reference's default left chirality): ``T^{dl} = 0``, and ``T^{rl}, T^{du}, T^{ru} = tanh(.)``
  are separate gates, each of absolute value at most one; separate ``S^r, S^d, M^l, M^u``.

Sources, Marks and ``D`` are ``sigmoid(.)`` of linear projections of the node's input (the
reference code's ``logsigmoid`` activation), scalar per head; Transitions are scalars per head
(the reference's ``JT = 1``). Each of the four corner scans (``directions``: bit 0 reverses x,
bit 1 reverses y) has its own gates and shares ``q, k, v``; the scans' outputs (heads
concatenated) are averaged and projected, ``y = W_O mean_directions(h) + b_O``.

Four forms compute the same layer (``form``; ``forward`` runs it): ``forward_reference``
walks the grid node by node; ``forward_wavefront`` runs the recurrence by anti-diagonal
wavefronts, every node with ``x + y = s`` at once, in ``X + Y - 1`` steps; ``forward_parallel``
is the paper's parallel form ``H = ((Q K^T) ⊙ G) V`` with the gating matrix ``G`` built row by
row, ``O((X Y)^2)`` memory per image and head; ``forward_chunked`` is its chunkwise form with
one grid row per chunk, ``G`` inside a row and matrix states across rows (both in
``rnnkit.cells.plstm_parallel``). ``form="auto"`` (the default) picks by ``choose_form``. The
scans of all directions run as one batch. This is a grid module, not a sequence cell: it is
not in ``CELLS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from rnnkit.cells.base import check_positive_int
from rnnkit.cells.gla import head_size
from rnnkit.cells.plstm_parallel import choose_form, scan_gating_matrix, scan_rows

MODES = ("P", "D")
FORMS = ("auto", "chunked", "parallel", "wavefront", "reference")
"""How ``PLSTM2D.forward`` computes: ``choose_form``, a row per chunk, the gating matrix,
anti-diagonals, node by node (``forward_chunked``, ``forward_parallel``, ...)."""
ALL_DIRECTIONS = (0, 1, 2, 3)
"""Corner scans: 0 from the top-left, 1 with x reversed, 2 with y reversed, 3 with both."""
GATES_PER_MODE = {"P": 4, "D": 7}


class GridTerms(NamedTuple):
    """Everything one corner scan needs, in its own frame (x and y increasing). ``query``
    (already divided by ``sqrt(d_k)``) and ``key``: ``(B, X, Y, heads, d_k)``; ``value``:
    ``(B, X, Y, heads, d_v)``; every gate: ``(B, X, Y, heads)``."""

    query: Tensor
    key: Tensor
    value: Tensor
    source_right: Tensor  # S^r
    source_down: Tensor  # S^d
    transition_right_from_left: Tensor  # T^{rl}
    transition_right_from_up: Tensor  # T^{ru}
    transition_down_from_left: Tensor  # T^{dl}
    transition_down_from_up: Tensor  # T^{du}
    mark_left: Tensor  # M^l
    mark_up: Tensor  # M^u
    direct: Tensor  # D


def scan_reference(terms: GridTerms) -> Tensor:
    """The recurrence node by node, x outer, y inner: ``(B, X, Y, heads, d_v)``."""
    batch, size_x, size_y, heads, key_size = terms.key.shape
    zero = terms.key.new_zeros(batch, heads, key_size, terms.value.shape[-1])
    right: list[list[Tensor]] = []  # right[x][y] = C^r_{x,y}
    down: list[list[Tensor]] = []  # down[x][y] = C^d_{x,y}
    outputs = []
    for x in range(size_x):
        right.append([])
        down.append([])
        for y in range(size_y):
            left_state = right[x - 1][y] if x > 0 else zero
            up_state = down[x][y - 1] if y > 0 else zero
            gate = [
                gate_term[:, x, y, :, None, None] for gate_term in terms[3:]
            ]  # each (B, heads, 1, 1)
            s_r, s_d, t_rl, t_ru, t_dl, t_du, m_l, m_u, d = gate
            key_value = terms.key[:, x, y, :, :, None] * terms.value[:, x, y, :, None, :]
            right[x].append(t_rl * left_state + t_ru * up_state + s_r * key_value)
            down[x].append(t_dl * left_state + t_du * up_state + s_d * key_value)
            read = m_l * left_state + m_u * up_state + d * key_value  # (B, heads, d_k, d_v)
            outputs.append(torch.einsum("bhk,bhkv->bhv", terms.query[:, x, y], read))
    return torch.stack(outputs, 1).unflatten(1, (size_x, size_y))


def skew(values: Tensor) -> Tensor:
    """``(B, X, Y, ...) -> (B, X, X + Y - 1, ...)`` with ``out[:, x, x + y] = values[:, x, y]``
    and zeros elsewhere: column ``s`` of the result is the anti-diagonal ``x + y = s``."""
    size_x = values.shape[1]
    rows = []
    for x in range(size_x):
        before = values.new_zeros(values.shape[0], x, *values.shape[3:])
        after = values.new_zeros(values.shape[0], size_x - 1 - x, *values.shape[3:])
        rows.append(torch.cat([before, values[:, x], after], 1))
    return torch.stack(rows, 1)


def unskew(values: Tensor, size_y: int) -> Tensor:
    """The inverse of ``skew``: ``(B, X, X + Y - 1, ...) -> (B, X, Y, ...)``."""
    return torch.stack([values[:, x, x : x + size_y] for x in range(values.shape[1])], 1)


def scan_wavefront(terms: GridTerms) -> Tensor:
    """The recurrence by anti-diagonals, all nodes with ``x + y = s`` at once:
    ``(B, X, Y, heads, d_v)``. Skewed, the positions off the grid get zero gates and inputs,
    so their states stay zero and the borders need no masks."""
    batch, size_x, size_y, heads, key_size = terms.key.shape
    # one list of anti-diagonals per term: indexing the skewed tensor per step instead would
    # make backward allocate a zero gradient of the whole tensor at every step
    diagonals = [skew(term).unbind(2) for term in terms]
    right = terms.key.new_zeros(batch, size_x, heads, key_size, terms.value.shape[-1])
    down = torch.zeros_like(right)  # C^r and C^d of the previous anti-diagonal, by x
    outputs = []
    for diagonal in range(size_x + size_y - 1):
        left_state = torch.cat([torch.zeros_like(right[:, :1]), right[:, :-1]], 1)  # C^r_{x-1,y}
        up_state = down  # C^d_{x,y-1}
        step = GridTerms(*(term[diagonal] for term in diagonals))  # (B, X, heads, ...)
        query, key, value = step.query, step.key, step.value
        s_r, s_d, t_rl, t_ru, t_dl, t_du, m_l, m_u, d = (gate[..., None] for gate in step[3:])
        # the readout contracted with q first, so no (d_k, d_v) sum is formed for it
        outputs.append(
            m_l * torch.einsum("bxhk,bxhkv->bxhv", query, left_state)
            + m_u * torch.einsum("bxhk,bxhkv->bxhv", query, up_state)
            + d * (query * key).sum(-1, keepdim=True) * value
        )
        key_value = key[..., :, None] * value[..., None, :]  # (B, X, heads, d_k, d_v)
        right = _mix(t_rl, left_state, t_ru, up_state) + s_r[..., None] * key_value
        down = _mix(t_dl, left_state, t_du, up_state) + s_d[..., None] * key_value
    return unskew(torch.stack(outputs, 2), size_y)


def _mix(first_gate: Tensor, first: Tensor, second_gate: Tensor, second: Tensor) -> Tensor:
    """``first_gate * first + second_gate * second`` for gates ``(..., 1)`` and states
    ``(..., d_k, d_v)``."""
    return first_gate[..., None] * first + second_gate[..., None] * second


class PLSTM2D(nn.Module):
    """A pLSTM layer over a grid: ``(B, X, Y, input_size) -> (B, X, Y, hidden_size)``.

    ``hidden_size`` splits into ``num_heads`` value heads of ``d_v``; ``key_size`` (default
    ``d_v``) is ``d_k`` per head. ``mode`` is ``"P"`` or ``"D"``; ``directions`` the corner
    scans averaged (a subset of ``ALL_DIRECTIONS``); ``form`` which of ``FORMS`` ``forward`` runs.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_heads: int = 1,
        mode: str = "P",
        directions: Sequence[int] = ALL_DIRECTIONS,
        key_size: int | None = None,
        form: str = "auto",
    ) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("num_heads", num_heads)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        directions = tuple(directions)
        if not directions or len(set(directions)) != len(directions):
            raise ValueError(f"directions must be distinct and not empty, got {directions}")
        if not set(directions) <= set(ALL_DIRECTIONS):
            raise ValueError(f"directions must be among {ALL_DIRECTIONS}, got {directions}")
        self.hidden_size, self.num_heads, self.mode, self.form = hidden_size, num_heads, mode, form
        self.directions = directions
        self.value_size = head_size("hidden_size", hidden_size, num_heads)
        self.key_size = key_size if key_size is not None else self.value_size
        check_positive_int("key_size", self.key_size)
        self.query = nn.Linear(input_size, num_heads * self.key_size)
        self.key = nn.Linear(input_size, num_heads * self.key_size)
        self.value = nn.Linear(input_size, hidden_size)
        gate_count = GATES_PER_MODE[mode]
        self.gates = nn.Linear(input_size, len(directions) * num_heads * gate_count)
        self.direct = nn.Linear(input_size, num_heads)
        self.output = nn.Linear(hidden_size, hidden_size)
        self.reset_gate_biases()

    def reset_gate_biases(self) -> None:
        """Transitions start near one (``tanh(3)``), so states carry far at initialization; in
        P-mode the heads' orientations start spread over ``sigmoid(-2 .. 2)`` as in the
        reference code; the other gates start at ``sigmoid(0) = 1 / 2``."""
        bias = torch.zeros(len(self.directions), self.num_heads, GATES_PER_MODE[self.mode])
        if self.mode == "P":  # orientation, source, transition, mark
            bias[..., 0] = torch.linspace(-2.0, 2.0, self.num_heads)
            bias[..., 2] = 3.0
        else:  # S^r, S^d, T^{rl}, T^{du}, T^{ru}, M^l, M^u
            bias[..., 2:5] = 3.0
        with torch.no_grad():
            self.gates.bias.copy_(bias.flatten())

    def scan_terms(self, inputs: Tensor) -> list[GridTerms]:
        """The ``GridTerms`` of each direction, flipped into its frame; inputs ``(B, X, Y, D)``."""
        query = self.query(inputs).unflatten(-1, (self.num_heads, self.key_size))
        query = query * self.key_size**-0.5
        key = self.key(inputs).unflatten(-1, (self.num_heads, self.key_size))
        value = self.value(inputs).unflatten(-1, (self.num_heads, self.value_size))
        direct = torch.sigmoid(self.direct(inputs))  # (B, X, Y, heads)
        gates = self.gates(inputs).unflatten(-1, (len(self.directions), self.num_heads, -1))
        terms = []
        for index, direction in enumerate(self.directions):
            frame = _flip_dims(direction)
            gate_terms = self._mode_gates(gates[:, :, :, index])  # each (B, X, Y, heads)
            unflipped = (query, key, value, *gate_terms, direct)
            terms.append(GridTerms(*(term.flip(frame) for term in unflipped)))
        return terms

    def _mode_gates(self, raw: Tensor) -> tuple[Tensor, ...]:
        """``raw (B, X, Y, heads, gates)`` -> S^r, S^d, T^{rl}, T^{ru}, T^{dl}, T^{du}, M^l, M^u."""
        if self.mode == "P":
            orientation = torch.sigmoid(raw[..., 0])
            source, mark = torch.sigmoid(raw[..., 1]), torch.sigmoid(raw[..., 3])
            transition = torch.tanh(raw[..., 2])
            right, down = orientation * transition, (1 - orientation) * transition
            return (orientation * source, (1 - orientation) * source, right, right, down, down,
                    mark, mark)  # fmt: skip
        source_right, source_down = torch.sigmoid(raw[..., 0]), torch.sigmoid(raw[..., 1])
        right_from_left, down_from_up, right_from_up = torch.tanh(raw[..., 2:5]).unbind(-1)
        mark_left, mark_up = torch.sigmoid(raw[..., 5]), torch.sigmoid(raw[..., 6])
        no_turn_down = torch.zeros_like(right_from_left)  # the multitree: T^{dl} = 0
        return (source_right, source_down, right_from_left, right_from_up, no_turn_down,
                down_from_up, mark_left, mark_up)  # fmt: skip

    def forward_reference(self, inputs: Tensor) -> Tensor:
        """``(B, X, Y, input_size) -> (B, X, Y, hidden_size)``, node by node."""
        return self._combine(inputs, scan_reference)

    def forward_wavefront(self, inputs: Tensor) -> Tensor:
        """``(B, X, Y, input_size) -> (B, X, Y, hidden_size)``, by anti-diagonal wavefronts."""
        return self._combine(inputs, scan_wavefront)

    def forward_parallel(self, inputs: Tensor) -> Tensor:
        """``(B, X, Y, input_size) -> (B, X, Y, hidden_size)``, as ``((Q K^T) ⊙ G) V``."""
        return self._combine(inputs, scan_gating_matrix)

    def forward_chunked(self, inputs: Tensor) -> Tensor:
        """``(B, X, Y, input_size) -> (B, X, Y, hidden_size)``, a row per chunk."""
        return self._combine(inputs, scan_rows)

    def forward(self, inputs: Tensor) -> Tensor:
        """``(B, X, Y, input_size) -> (B, X, Y, hidden_size)`` in the layer's ``form``."""
        _check_grid(inputs)
        form = self.form
        if form == "auto":
            form = choose_form(inputs.shape[1], inputs.shape[2], self.key_size, self.value_size)
        return getattr(self, f"forward_{form}")(inputs)

    def _combine(self, inputs: Tensor, scan: Callable[[GridTerms], Tensor]) -> Tensor:
        """The corner scans run as one batch, flipped back and averaged, then projected."""
        _check_grid(inputs)
        scans = self.scan_terms(inputs)
        stacked = GridTerms(*(torch.cat(term) for term in zip(*scans, strict=True)))
        outputs = [
            output.flip(_flip_dims(direction))
            for output, direction in zip(
                scan(stacked).split(len(inputs)), self.directions, strict=True
            )
        ]
        mean = torch.stack(outputs).mean(0).flatten(-2)  # (B, X, Y, hidden_size)
        return self.output(mean)


def _check_grid(inputs: Tensor) -> None:
    if inputs.dim() != 4:
        raise ValueError(f"inputs must be (B, X, Y, D), got shape {tuple(inputs.shape)}")


def _flip_dims(direction: int) -> list[int]:
    """The grid dimensions of ``(B, X, Y, ...)`` that direction ``direction`` reverses."""
    return [dim for dim, bit in ((1, 1), (2, 2)) if direction & bit]
