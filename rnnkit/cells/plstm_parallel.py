"""pLSTM's parallel form over a 2-D grid: the gating matrix ``G`` and ``H = ((Q K^T) ⊙ G) V``.

Pöppel et al. 2025, https://arxiv.org/abs/2506.11997; the recurrence and the notation are in
``rnnkit.cells.plstm``. Unrolled, the scan from the top-left corner is, per head,

    h_n = q_n^T sum_{n'} G_{n n'} k_{n'} v_{n'}^T,   i.e.   H = ((Q K^T) ⊙ G) V

over the ``N = X Y`` nodes (``q`` already divided by ``sqrt(d_k)``), where ``G_{n n'}`` sums,
over the monotone paths from ``n'`` to ``n``, the Source of the first edge, the Transitions at
the nodes passed and the Mark of the last edge (``G_{n n} = D_n``).

``G`` is built row of the grid by row (fixed ``x``, ``y`` running): in row ``x`` the downward
edges form a chain, so the downward state arriving at ``(x, y)`` from inside the row is the
chain's cumulative product applied to what enters it,

    C^d_{x,y-1} = sum_{y' < y} L_x[y, y'] (T^{dl}_{x,y'} C^r_{x-1,y'} + S^d_{x,y'} k v^T_{x,y'}),
    L_x[y, y'] = prod_{y' < j < y} T^{du}_{x,j}          (zero for y' >= y),

and the rightward states of a row follow from the previous row's by a ``(Y, Y)`` matrix:

    C^r_x = A_x C^r_{x-1} + B_x (k v^T)_x,      h_x = q_x^T (C_x C^r_{x-1} + E_x (k v^T)_x),
    A_x = diag(T^{rl}_x) + diag(T^{ru}_x) L_x diag(T^{dl}_x),
    B_x = diag(S^r_x) + diag(T^{ru}_x) L_x diag(S^d_x),
    C_x = diag(M^l_x) + diag(M^u_x) L_x diag(T^{dl}_x),
    E_x = diag(D_x) + diag(M^u_x) L_x diag(S^d_x).

So ``G``'s block of rows ``x`` and sources in row ``x' < x`` is ``C_x A_{x-1} ... A_{x'+1} B_{x'}``
and its diagonal block ``E_x``, built in ``X - 1`` small batched matrix products
(``gating_matrix``; exact: no logarithms or divisions, ``L`` is a masked ``cumprod``). Two
forms use it: ``scan_gating_matrix``, the full ``((Q K^T) ⊙ G) V`` with ``O(N^2)`` memory per
image and head, and ``scan_rows``, the chunkwise form with one grid row per chunk: ``E_x``
inside a row, the ``Y`` matrix states ``C^r_x`` carried across rows, ``O(N d_k d_v)`` memory.
Row chunks, not the reference code's square tiles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from rnnkit.cells.plstm import GridTerms


def row_chains(transition_down_from_up: Tensor) -> Tensor:
    """``L[..., x, y, y'] = prod_{y' < j < y} T^{du}[..., x, j]`` for ``y' < y``, else zero:
    ``(..., X, Y) -> (..., X, Y, Y)``."""
    size_y = transition_down_from_up.shape[-1]
    ones = torch.ones(size_y, size_y, dtype=torch.bool, device=transition_down_from_up.device)
    after = torch.tril(ones, -1)  # after[j, y'] = j > y'
    factors = torch.where(after, transition_down_from_up[..., :, None], 1.0)  # [.., j, y']
    products = torch.cumprod(factors, -2)  # [..., j, y'] = prod_{y' < i <= j} T^{du}_i
    shifted = torch.cat([torch.zeros_like(products[..., :1, :]), products[..., :-1, :]], -2)
    return shifted * after  # [..., y, y'] = prod_{y' < j <= y - 1}, for y > y' only


def row_matrices(terms: GridTerms) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``A_x, B_x, C_x, E_x`` of every row: each ``(B, heads, X, Y, Y)``."""

    def gate(tensor: Tensor) -> Tensor:
        return tensor.permute(0, 3, 1, 2)  # (B, heads, X, Y)

    t_rl, t_ru = gate(terms.transition_right_from_left), gate(terms.transition_right_from_up)
    t_dl, t_du = gate(terms.transition_down_from_left), gate(terms.transition_down_from_up)
    s_r, s_d = gate(terms.source_right), gate(terms.source_down)
    m_l, m_u, direct = gate(terms.mark_left), gate(terms.mark_up), gate(terms.direct)
    chain = row_chains(t_du)  # (B, heads, X, Y, Y)
    from_left, from_source = chain * t_dl[..., None, :], chain * s_d[..., None, :]
    carry = torch.diag_embed(t_rl) + t_ru[..., None] * from_left
    enter = torch.diag_embed(s_r) + t_ru[..., None] * from_source
    read = torch.diag_embed(m_l) + m_u[..., None] * from_left
    local = torch.diag_embed(direct) + m_u[..., None] * from_source
    return carry, enter, read, local


def gating_matrix(terms: GridTerms) -> Tensor:
    """The gating matrix of one corner scan, in its frame: ``(B, heads, X Y, X Y)``, nodes in
    row-major order (``n = x Y + y``), ``G[n, n']`` zero unless ``n'`` is upstream of ``n``."""
    batch, size_x, size_y, heads = terms.direct.shape
    carry, enter, read, local = (m.unbind(2) for m in row_matrices(terms))
    zeros = local[0].new_zeros(batch, heads, size_y, (size_x - 1) * size_y)
    rows = [torch.cat([local[0], zeros], -1)]
    right = enter[0]  # C^r of the row just done, per source: (B, heads, Y, sources so far)
    for x in range(1, size_x):
        after = zeros[..., : (size_x - 1 - x) * size_y]
        rows.append(torch.cat([read[x] @ right, local[x], after], -1))
        right = torch.cat([carry[x] @ right, enter[x]], -1)
    return torch.cat(rows, -2)


def scan_gating_matrix(terms: GridTerms) -> Tensor:
    """The scan as ``H = ((Q K^T) ⊙ G) V``: ``(B, X, Y, heads, d_v)``, like ``scan_reference``."""
    batch, size_x, size_y, heads, _ = terms.key.shape
    query, key, value = (t.flatten(1, 2).transpose(1, 2) for t in terms[:3])  # (B, heads, N, d)
    weights = (query @ key.transpose(-1, -2)) * gating_matrix(terms)  # (B, heads, N, N)
    return (weights @ value).transpose(1, 2).unflatten(1, (size_x, size_y))


def scan_rows(terms: GridTerms) -> Tensor:
    """The chunkwise form with one grid row per chunk: ``(B, X, Y, heads, d_v)``. Inside a row
    ``((Q_x K_x^T) ⊙ E_x) V_x``; across rows the ``Y`` rightward matrix states
    ``C^r_x = A_x C^r_{x-1} + B_x (k v^T)_x``, read as ``q^T C_x C^r_{x-1}``: ``X - 1`` batched
    ``(2Y, Y) @ (Y, d_k d_v)`` products, ``O(X Y d_k d_v)`` memory."""
    batch, size_x, size_y, heads, key_size = terms.key.shape
    value_size = terms.value.shape[-1]
    query, key, value = (t.permute(0, 3, 1, 2, 4) for t in terms[:3])  # (B, heads, X, Y, d)
    carry, enter, read, local = row_matrices(terms)  # (B, heads, X, Y, Y)
    within = ((query @ key.transpose(-1, -2)) * local) @ value  # (B, heads, X, Y, d_v)
    key_value = (key[..., :, None] * value[..., None, :]).flatten(-2)  # (.., X, Y, d_k d_v)
    entering = enter @ key_value  # what each row adds to its rightward states
    # per-row lists: indexing a whole tensor at each step would make backward fill a zero
    # gradient of all of it at every step
    carry_read, entering_rows = torch.cat([carry, read], -2).unbind(2), entering.unbind(2)
    right = entering_rows[0]  # (B, heads, Y, d_k d_v)
    reads = []
    for x in range(1, size_x):
        if x == size_x - 1:  # the last row passes nothing on
            reads.append(carry_read[x][..., size_y:, :] @ right)
            break
        carried, read_row = (carry_read[x] @ right).split(size_y, -2)  # (B, heads, Y, d_k d_v)
        reads.append(read_row)
        right = carried + entering_rows[x]
    if reads:
        states = torch.stack(reads, 2).unflatten(-1, (key_size, value_size))
        # elementwise, not as a batch of (1, d_k) @ (d_k, d_v) products (slow on the CPU)
        across = (query[:, :, 1:, :, :, None] * states).sum(-2)  # (B, heads, X - 1, Y, d_v)
        within = within + torch.cat([torch.zeros_like(within[:, :, :1]), across], 2)
    return within.permute(0, 2, 3, 1, 4)


def choose_form(size_x: int, size_y: int, key_size: int, value_size: int) -> str:
    """``form="auto"``: ``"parallel"`` while a head's gating matrix, ``(X Y)^2`` entries, is no
    larger than the chunked form's states, ``X Y d_k d_v``; else ``"chunked"`` (both beat the
    wavefront; on one CPU thread the full ``G`` was faster at 8x8, the chunks at 16x16)."""
    return "parallel" if size_x * size_y <= key_size * value_size else "chunked"
