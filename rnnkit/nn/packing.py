"""PackedSequence in and out, for layers that run on padded batch-first tensors."""

from __future__ import annotations

from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


def unpack(packed: PackedSequence) -> tuple[Tensor, Tensor]:
    """``(padded (B, T, D) in the caller's batch order, lengths (B,))``."""
    padded, lengths = pad_packed_sequence(packed, batch_first=True)
    return padded, lengths


def repack(padded: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``padded (B, T, O)`` with the batch order of ``like``, as torch.nn's RNNs return."""
    if like.sorted_indices is None:
        return pack_padded_sequence(padded, lengths.cpu(), batch_first=True)
    order = like.sorted_indices.to(padded.device)
    packed = pack_padded_sequence(
        padded.index_select(0, order),
        lengths.index_select(0, like.sorted_indices.cpu()).cpu(),
        batch_first=True,
    )
    return PackedSequence(
        packed.data, packed.batch_sizes, like.sorted_indices, like.unsorted_indices
    )
