"""A sequence classifier: a recurrent stack, a pooling of its outputs, a linear head.

For a padded batch ``x (B, T, D)`` with ``lengths (B,)``, the inputs are normalized per feature
(``(x - mean) / std``, statistics of the training data held as buffers), an
``rnnkit.nn.Recurrent`` stack (any cell, any strategy: ``RecurrentConfig``) gives outputs
``o_t (B, T, directions * O)``, and the pooling reads one vector per sequence of length ``L``:

- ``last``: ``o_{L-1}``; with a bidirectional stack, the forward half at step ``L - 1`` and the
  backward half at step 0 (the step where the backward direction has read the whole sequence);
- ``mean``: ``(1 / L) sum_{t < L} o_t``;
- ``attention``: feed-forward attention (Raffel & Ellis 2015, https://arxiv.org/abs/1512.08756),
  ``e_t = v^T tanh(W o_t + b)``, ``a = softmax(e)`` over the valid steps, ``sum_t a_t o_t``.

Padded steps never reach the pooled vector, so a sequence's logits do not depend on the
padding of the batch it is in. ``logits = W_c dropout(pooled) + b_c``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rnnkit.models.recurrent_config import RecurrentConfig, check_range

POOLINGS = ("last", "mean", "attention")


@dataclass
class SequenceClassifierConfig:
    """The recurrent stack, the pooling and the head."""

    recurrent: RecurrentConfig = field(default_factory=lambda: RecurrentConfig(hidden_size=64))
    """Cell, strategy, sizes, depth, direction (``bidirectional``)."""
    pooling: str = "last"
    """How the outputs become one vector per sequence: ``last``, ``mean`` or ``attention``."""
    dropout: float = 0.0
    """Dropout on the pooled vector, in training."""

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, got {self.pooling!r}")
        check_range("dropout", self.dropout, 0.0, 1.0)


def valid_mask(lengths: Tensor, steps: int) -> Tensor:
    """``(B, T)`` booleans, True at the steps ``t < lengths[b]``."""
    return torch.arange(steps, device=lengths.device) < lengths[:, None]


def pool_last(outputs: Tensor, lengths: Tensor, num_directions: int) -> Tensor:
    """``outputs (B, T, directions * O)`` -> ``(B, directions * O)``: the forward half at each
    sequence's last valid step, the backward half (if any) at step 0."""
    rows = torch.arange(outputs.shape[0], device=outputs.device)
    last = outputs[rows, lengths - 1]  # (B, directions * O)
    if num_directions == 1:
        return last
    size = outputs.shape[-1] // 2
    return torch.cat([last[:, :size], outputs[:, 0, size:]], dim=-1)


def pool_mean(outputs: Tensor, lengths: Tensor) -> Tensor:
    mask = valid_mask(lengths, outputs.shape[1]).unsqueeze(-1)  # (B, T, 1)
    total = torch.where(mask, outputs, torch.zeros((), dtype=outputs.dtype)).sum(1)
    return total / lengths[:, None].to(outputs.dtype)


class AttentionPooling(nn.Module):
    """``e_t = v^T tanh(W o_t + b)``, softmax over the valid steps, the weighted sum."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.project = nn.Linear(size, size)
        self.score = nn.Linear(size, 1, bias=False)

    def weights(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        """``(B, T)`` attention weights, zero on padded steps."""
        scores = self.score(torch.tanh(self.project(outputs))).squeeze(-1)  # (B, T)
        mask = valid_mask(lengths, outputs.shape[1])
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)

    def forward(self, outputs: Tensor, lengths: Tensor) -> Tensor:
        return torch.einsum("bt,bto->bo", self.weights(outputs, lengths), outputs)


class SequenceClassifier(nn.Module):
    """``inputs (B, T, D), lengths (B,) -> logits (B, num_classes)``."""

    feature_mean: Tensor  # (D,) buffers, saved with the weights
    feature_std: Tensor

    def __init__(self, config: SequenceClassifierConfig, input_size: int, num_classes: int):
        super().__init__()
        self.config = config
        self.recurrent = config.recurrent.build(input_size)
        size = self.recurrent.output_size
        self.attention = AttentionPooling(size) if config.pooling == "attention" else None
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(size, num_classes)
        self.register_buffer("feature_mean", torch.zeros(input_size))
        self.register_buffer("feature_std", torch.ones(input_size))

    def set_normalization(self, mean: Tensor, std: Tensor) -> None:
        """Inputs are read as ``(x - mean) / std`` (per feature, ``(D,)`` each)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std)

    def pooled(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """``(B, directions * O)``: one vector per sequence (see the module docstring)."""
        if inputs.dim() != 3 or inputs.shape[-1] != self.feature_mean.shape[0]:
            raise ValueError(
                f"inputs must be (B, T, {self.feature_mean.shape[0]}), got {tuple(inputs.shape)}"
            )
        normalized = (inputs - self.feature_mean) / self.feature_std
        outputs, _ = self.recurrent(normalized, lengths=lengths)
        assert isinstance(outputs, Tensor)  # a padded input gives padded outputs
        if self.attention is not None:
            return self.attention(outputs, lengths)
        if self.config.pooling == "mean":
            return pool_mean(outputs, lengths)
        return pool_last(outputs, lengths, self.recurrent.num_directions)

    def forward(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.dropout(self.pooled(inputs, lengths)))

    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def describe(self) -> str:
        recurrent = self.config.recurrent
        direction = "bidirectional " if recurrent.bidirectional else ""
        return (
            f"{recurrent.num_layers} x {direction}{recurrent.cell} (hidden "
            f"{recurrent.hidden_size}), {self.config.pooling} pooling, linear head; "
            f"{self.parameter_count():,} parameters"
        )
