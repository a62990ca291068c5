"""A multi-step forecaster: any registered cell and strategy (``rnnkit.nn.Recurrent``) + a head.

The recurrent stack reads a context window of inputs ``x_t = [y_t, c_t]`` (the scaled value and
the covariates). Two decodings of the next ``H`` values:

``"direct"`` (multi-output; Taieb et al. 2012, "A review and comparison of strategies for
multi-step ahead time series forecasting", https://arxiv.org/abs/1108.3259): one linear head
reads the final output ``h_T`` and emits all ``H`` values at once,

    (y_{T+1}, ..., y_{T+H}) = W h_T + b

``"autoregressive"`` (recursive): a head emits one step, ``y_{T+k+1} = w . h_{T+k} + b``, and
the forecast is fed back as the next input, ``x_{T+k} = [y_{T+k}, c_T]``: the covariates are
held at their last observed values over the horizon (they are observed, not known ahead), in
training and in forecasting alike. Training uses teacher forcing (Williams and Zipser 1989):
the true values are fed back, so the whole window is one pass of the stack.

With ``instance_norm`` (reversible instance normalization without its affine part; Kim et al.
2022, https://openreview.net/forum?id=cGDAkQo1C0p) the values of each window are standardized
by their own context, ``y' = (y - mu) / sigma`` with ``mu, sigma`` the mean and standard
deviation of the context's values, and the forecasts mapped back, ``f = f' sigma + mu``: the
model sees the shape of the recent past, not its level, so a trend beyond the training range
does not take it outside the inputs it learnt from.

With a bidirectional stack (direct decoding only) the summary is the forward direction's last
output beside the reverse direction's first, each having read the whole context.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.train import ranges

DECODINGS = ("direct", "autoregressive")


@dataclass
class ForecasterConfig:
    """The recurrent stack and how it forecasts several steps."""

    recurrent: RecurrentConfig = field(default_factory=lambda: RecurrentConfig(hidden_size=32))
    """Cell, strategy, sizes (``--model.recurrent.cell=gru``)."""
    decoding: str = "direct"
    """``"direct"`` (all horizon steps from the final state) or ``"autoregressive"``."""
    instance_norm: bool = True
    """Standardize each window's values by its own context (and map the forecasts back)."""

    def __post_init__(self) -> None:
        ranges.choice("decoding", self.decoding, DECODINGS)
        if self.decoding == "autoregressive" and self.recurrent.bidirectional:
            raise ValueError("autoregressive decoding needs a unidirectional recurrent stack")


class Forecaster(nn.Module):
    """``context (B, T, D)`` with ``D = 1 + covariates`` -> scaled forecasts ``(B, horizon)``."""

    def __init__(self, config: ForecasterConfig, input_size: int, horizon: int) -> None:
        super().__init__()
        self.config, self.input_size, self.horizon = config, input_size, horizon
        self.recurrent = config.recurrent.build(input_size)
        outputs = horizon if config.decoding == "direct" else 1
        self.head = nn.Linear(self.recurrent.output_size, outputs)

    def forward(self, context: Tensor) -> Tensor:
        """Forecasts without the truth: the direct head, or the model's own values fed back."""
        self._check(context)
        shift, scale = self._window_statistics(context)
        return self._normalized_forward(self._normalize(context, shift, scale)) * scale + shift

    def _normalized_forward(self, context: Tensor) -> Tensor:
        outputs, state = self.recurrent(context)  # (B, T, O)
        assert isinstance(outputs, Tensor)
        if self.config.decoding == "direct":
            return self.head(self._summary(outputs))
        value = self.head(outputs[:, -1])  # (B, 1)
        covariates = context[:, -1, 1:]  # (B, C), held over the horizon
        forecasts = [value]
        for _ in range(self.horizon - 1):
            output, state = self.recurrent.step(torch.cat([value, covariates], 1), state)
            value = self.head(output)
            forecasts.append(value)
        return torch.cat(forecasts, 1)

    def teacher_forced(self, context: Tensor, targets: Tensor) -> Tensor:
        """Training forecasts ``(B, H)``: direct as ``forward``; autoregressive with the true
        ``targets (B, H)`` (scaled) fed back in one pass over ``T + H - 1`` steps."""
        if self.config.decoding == "direct":
            return self(context)
        self._check(context)
        shift, scale = self._window_statistics(context)
        context, targets = self._normalize(context, shift, scale), (targets - shift) / scale
        batch, steps, _ = context.shape
        covariates = context[:, -1:, 1:].expand(batch, self.horizon - 1, -1)
        fed_back = torch.cat([targets[:, :-1, None].to(context.dtype), covariates], 2)
        outputs, _ = self.recurrent(torch.cat([context, fed_back], 1))  # (B, T + H - 1, O)
        assert isinstance(outputs, Tensor)
        return self.head(outputs[:, steps - 1 :]).squeeze(-1) * scale + shift

    def _window_statistics(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, sigma)`` ``(B, 1)`` of each context's values (0 and 1 without instance_norm;
        sigma is at least 1e-5 so a flat context stays finite)."""
        values = context[..., 0]
        if not self.config.instance_norm:
            return values.new_zeros(len(values), 1), values.new_ones(len(values), 1)
        shift = values.mean(1, keepdim=True)
        return shift, values.std(1, correction=0, keepdim=True).clamp_min(1e-5)

    @staticmethod
    def _normalize(context: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
        return torch.cat(
            [(context[..., :1] - shift[:, :, None]) / scale[:, :, None], context[..., 1:]], -1
        )

    def _summary(self, outputs: Tensor) -> Tensor:
        """``(B, O)``: the last output, or for two directions forward-last beside reverse-first."""
        if not self.recurrent.bidirectional:
            return outputs[:, -1]
        half = outputs.shape[-1] // 2
        return torch.cat([outputs[:, -1, :half], outputs[:, 0, half:]], -1)

    def _check(self, context: Tensor) -> None:
        if context.dim() != 3 or context.shape[-1] != self.input_size:
            raise ValueError(
                f"context must be (B, T, {self.input_size}), got {tuple(context.shape)}"
            )

    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())
