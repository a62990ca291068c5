"""Recurrent regularization for the classic cells (Elman, Jordan, LSTM, GRU), training only.

- Variational dropout (Gal & Ghahramani 2016, https://arxiv.org/abs/1512.05287): one dropout
  mask per sequence, the same at every step, on the inputs x_t and on the recurrent input h_{t-1}.
- DropConnect on the recurrent weights (Merity et al. 2017, AWD-LSTM,
  https://arxiv.org/abs/1708.02182): W_hh is dropped once per sequence, shared by all steps.
- Zoneout (Krueger et al. 2016, https://arxiv.org/abs/1606.01305): each state unit keeps its
  previous value with probability p, ``s_t = d_t * s_{t-1} + (1 - d_t) * s~_t``, a fresh mask
  d_t ~ Bernoulli(p) per step; in evaluation the expectation ``p s_{t-1} + (1 - p) s~_t``.

Dropout masks are scaled by 1 / (1 - p) in training and are the identity in evaluation. The
per-sequence quantities are drawn by ``Cell.begin_sequence`` (every strategy calls it once per
run); a cell stepped by hand in training mode must call it first.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.cells.base import State, check_probability


class SequenceNoise(NamedTuple):
    """What stays fixed over one sequence."""

    batch_size: int
    input_mask: Tensor | None  # (B, D), already scaled by 1 / (1 - p)
    hidden_mask: Tensor | None  # (B, R)
    recurrent_weight: Tensor | None  # W_hh after DropConnect


class Regularization:
    """The regularization settings of one cell and the operations that apply them."""

    def __init__(
        self,
        input_dropout: float = 0.0,
        hidden_dropout: float = 0.0,
        weight_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        for name, value in [
            ("input_dropout", input_dropout),
            ("hidden_dropout", hidden_dropout),
            ("weight_dropout", weight_dropout),
            ("zoneout", zoneout),
        ]:
            check_probability(name, value)
        self.input_dropout = float(input_dropout)
        self.hidden_dropout = float(hidden_dropout)
        self.weight_dropout = float(weight_dropout)
        self.zoneout = float(zoneout)

    @property
    def uses_sequence_noise(self) -> bool:
        return self.input_dropout > 0 or self.hidden_dropout > 0 or self.weight_dropout > 0

    def native_unsupported_reason(self, training: bool) -> str | None:
        """Why a fused kernel cannot apply these settings, or None."""
        if self.zoneout > 0:
            return "zoneout is not supported by torch's fused kernels"
        if training and self.uses_sequence_noise:
            return "recurrent dropout in training is not supported by torch's fused kernels"
        return None

    def time_parallel_unsupported_reason(self, training: bool) -> str | None:
        """Why steps cannot be batched across time: random masks tied to the step or sequence."""
        if training and (self.uses_sequence_noise or self.zoneout > 0):
            return "recurrent dropout or zoneout in training ties randomness to the sequence"
        return None

    def draw(
        self,
        batch_size: int,
        input_size: int,
        recurrent_size: int,
        recurrent_weight: Tensor,
        device: torch.device,
        dtype: torch.dtype,
    ) -> SequenceNoise:
        """Draw the masks and the dropped recurrent weight of one sequence."""

        def mask(probability: float, size: int) -> Tensor | None:
            if probability == 0:
                return None
            keep = torch.full((batch_size, size), 1 - probability, device=device, dtype=dtype)
            return torch.bernoulli(keep) / (1 - probability)

        dropped_weight = None
        if self.weight_dropout > 0:
            dropped_weight = functional.dropout(recurrent_weight, self.weight_dropout, True)
        return SequenceNoise(
            batch_size,
            mask(self.input_dropout, input_size),
            mask(self.hidden_dropout, recurrent_size),
            dropped_weight,
        )

    def noise_for(
        self, noise: SequenceNoise | None, training: bool, batch_size: int
    ) -> SequenceNoise | None:
        """The noise to use now: None in evaluation; an error when it was not drawn."""
        if not training or not self.uses_sequence_noise:
            return None
        if noise is None or noise.batch_size != batch_size:
            drawn = "none" if noise is None else f"batch_size={noise.batch_size}"
            raise RuntimeError(
                "a cell with recurrent dropout in training mode needs "
                f"cell.begin_sequence(batch_size={batch_size}, ...) before stepping; "
                f"drawn: {drawn}"
            )
        return noise

    @staticmethod
    def apply_input_mask(inputs: Tensor, noise: SequenceNoise | None) -> Tensor:
        """Inputs ``(B, D)`` or ``(B, T, D)`` times the sequence's input mask."""
        if noise is None or noise.input_mask is None:
            return inputs
        if inputs.dim() == 3:
            return inputs * noise.input_mask.unsqueeze(1)
        return inputs * noise.input_mask

    @staticmethod
    def apply_hidden_mask(hidden: Tensor, noise: SequenceNoise | None) -> Tensor:
        if noise is None or noise.hidden_mask is None:
            return hidden
        return hidden * noise.hidden_mask

    @staticmethod
    def recurrent_weight(weight: Tensor, noise: SequenceNoise | None) -> Tensor:
        if noise is None or noise.recurrent_weight is None:
            return weight
        return noise.recurrent_weight

    def apply_zoneout(self, previous: State, candidate: State, training: bool) -> State:
        """Zoneout every field of the state."""
        if self.zoneout == 0:
            return candidate
        fields = []
        for old, new in zip(previous, candidate, strict=False):
            if training:
                keep = torch.bernoulli(torch.full_like(new, self.zoneout))
                fields.append(torch.lerp(new, old, keep))
            else:
                fields.append(torch.lerp(new, old, self.zoneout))
        return type(candidate)(*fields)

    def draw_zoneout(
        self,
        steps: int,
        batch_size: int,
        sizes: tuple[int, ...],
        training: bool,
        device: torch.device,
        dtype: torch.dtype,
    ) -> tuple[Tensor, ...] | None:
        """Zoneout's weight of the previous value for ``steps`` steps, per field of ``sizes``.

        Training: ``(steps, B, size)`` masks holding the draws ``apply_zoneout`` makes step by
        step and field by field over a sequence, so the same seed gives the same masks.
        Evaluation: ``(1, B, size)`` filled with the probability. None without zoneout.
        """
        if self.zoneout == 0:
            return None
        if not training:
            return tuple(
                torch.full((1, batch_size, size), self.zoneout, device=device, dtype=dtype)
                for size in sizes
            )
        # One draw for all steps: torch's CPU Bernoulli consumes the generator element by
        # element, so a (steps, B * sum(sizes)) draw holds, row by row, exactly the per-step,
        # per-field draws of ``apply_zoneout`` (tests compare with the sequential strategy);
        # a loop of 2T small draws measured 10 ms at T=1024.
        width = batch_size * sum(sizes)
        keep = torch.full((steps, width), self.zoneout, device=device, dtype=dtype)
        drawn = torch.bernoulli(keep).split([batch_size * size for size in sizes], 1)
        return tuple(
            field.reshape(steps, batch_size, size) for field, size in zip(drawn, sizes, strict=True)
        )

    def extra_repr(self) -> str:
        settings = [f"{name}={value}" for name, value in vars(self).items() if value > 0]
        return ", ".join(settings)
