"""A PackedSequence straight into torch's fused kernel, as torch.nn.LSTM/GRU/RNN run it.

When every cell of a drop-in runs with ``native`` (named, or picked by ``auto``), the whole
stack is one call of the ``_VF`` kernel on ``packed.data`` and ``packed.batch_sizes``: no
packed -> padded -> packed round trip per layer. The kernel reads the batch in the packed
(sorted) order, so ``hx`` is permuted by ``sorted_indices`` and ``h_n`` back by
``unsorted_indices``, as ``torch.nn.RNNBase.permute_hidden`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence

from rnnkit.cells import Cell
from rnnkit.strategies import choose
from rnnkit.strategies.native import KERNELS


def runs_natively(cells: Sequence[Cell], strategy: str) -> bool:
    """Whether every cell runs with ``native`` now: named so, or as ``auto`` picks it."""
    if strategy not in ("native", "auto"):
        return False
    return all(choose(cell)[0] == "native" for cell in cells)


def run_packed(
    cells: Sequence[Cell],
    weights: list[Tensor],
    packed: PackedSequence,
    hx: Tensor | tuple[Tensor, Tensor] | None,
    layout: tuple[int, bool, float, bool],
) -> tuple[PackedSequence, Tensor | tuple[Tensor, ...]]:
    """``packed`` data ``(N, D)`` -> packed outputs ``(N, dirs * O)`` and torch's ``h_n``.

    ``weights``: the flat weights in torch's order; ``hx``: torch's ``(L * dirs, B, size)``
    (LSTM: ``(h_0, c_0)``) in the caller's batch order, or None for zeros; ``layout``:
    ``(num_layers, bidirectional, dropout, training)``.
    """
    num_layers, bidirectional, dropout, training = layout
    kernel = KERNELS[str(cells[0].native_kernel)]
    batch_size = int(packed.batch_sizes[0])
    if hx is None:
        hidden = tuple(
            torch.zeros(
                len(cells), batch_size, size, dtype=packed.data.dtype, device=packed.data.device
            )
            for size in cells[0].state_sizes()
        )  # each (L * dirs, B, size), already in any order
    else:
        fields = hx if isinstance(hx, tuple) else (hx,)
        hidden = tuple(_permute(field, packed.sorted_indices) for field in fields)
    result = kernel(
        packed.data,
        packed.batch_sizes,
        hidden if len(hidden) > 1 else hidden[0],
        weights,
        cells[0].bias,
        num_layers,
        dropout,
        training,
        bidirectional,
    )
    outputs = PackedSequence(
        result[0], packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
    )
    final = tuple(_permute(field, packed.unsorted_indices) for field in result[1:])
    return outputs, (final if len(final) > 1 else final[0])


def _permute(field: Tensor, order: Tensor | None) -> Tensor:
    return field if order is None else field.index_select(1, order)
