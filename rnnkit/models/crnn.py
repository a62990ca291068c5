"""A convolutional recurrent network (CRNN) read by CTC: images of text in, label sequences out.

Shi, Bai and Yao 2015 (https://arxiv.org/abs/1507.05717): convolutions turn an image into a
sequence of column features, a bidirectional recurrent layer reads the columns, and CTC
(Graves et al. 2006) trains it without knowing where each label is.

    x                                                   (B, 1, H, W) grey levels
    f = conv blocks: Conv2d 3x3, BatchNorm, ReLU;       (B, K, H / 2^p, W')
        the first p blocks max-pool the height by 2 (the last pooling also halves the width
        when ``halve_width``: W' = floor(W / 2), else W' = W); columns past an image's
        width are zeroed after every block, so padding does not change a reading
    s_t = f[:, :, :, t] flattened                       (B, W', K H / 2^p) a step per column
    y_t = BiRecurrent(dropout(s))_t                     (B, W', 2 hidden_size), with lengths
    log p_t = log_softmax(W dropout(y_t) + b)           (B, W', classes), class 0 the blank

The loss is ``rnnkit.decoding.ctc.ctc_loss`` (``torch.nn.functional.ctc_loss`` summed over the
batch and divided by the number of target labels: nats per label).

Under ``torch.compile`` the check that the widths are at most W is an in-graph assert
(``rnnkit.strategies.validation``): RuntimeError when the graph runs, not ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from rnnkit.decoding.ctc import ctc_loss
from rnnkit.models.recurrent_config import RecurrentConfig, check_range
from rnnkit.strategies.validation import assert_in_graph, compiling, length_mask

BLANK = 0


def default_recurrent() -> RecurrentConfig:
    """The CRNN's reader: one bidirectional LSTM layer of 128 per direction."""
    return RecurrentConfig(cell="lstm", hidden_size=128, bidirectional=True, dropout=0.2)


@dataclass
class CRNNConfig:
    """Sizes of the convolutional front end and the bidirectional recurrent reader."""

    channels: int = 64
    """Feature maps K of every convolution."""
    conv_layers: int = 3
    """Convolution blocks (Conv2d 3x3, BatchNorm, ReLU)."""
    height_poolings: int = 2
    """The first this many blocks halve the height (max-pooling)."""
    halve_width: bool = False
    """The last pooling also halves the width (half as many time steps)."""
    recurrent: RecurrentConfig = field(default_factory=default_recurrent)
    """The recurrent reader over the columns: cell, strategy, sizes, its own options
    (``--model.recurrent.cell=gru``); bidirectional by default (hidden size per direction)."""
    dropout: float = 0.2
    """Dropout on the column features and before the output layer (``recurrent.dropout`` is
    between layers)."""

    def __post_init__(self) -> None:
        """Name and range checks, so a bad value fails when the config is read, not mid-build."""
        for name in ("channels", "conv_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0 <= self.height_poolings <= self.conv_layers:
            raise ValueError(
                f"height_poolings must lie in [0, conv_layers={self.conv_layers}], "
                f"got {self.height_poolings}"
            )
        check_range("dropout", self.dropout, 0.0, 1.0)


class CRNN(nn.Module):
    """Columns of ``(B, H, W)`` images to per-column log-probabilities over ``num_classes``."""

    def __init__(self, config: CRNNConfig, num_classes: int, input_height: int) -> None:
        super().__init__()
        _check_config(config, num_classes, input_height)
        self.config = config
        self.num_classes = num_classes
        blocks: list[nn.Module] = []
        in_channels, height = 1, input_height
        for index in range(config.conv_layers):
            layers = [
                nn.Conv2d(in_channels, config.channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(config.channels),
                nn.ReLU(),
            ]
            if index < config.height_poolings:
                width_stride = 2 if self._halves_width(index) else 1
                layers.append(nn.MaxPool2d((2, width_stride), (2, width_stride)))
                height //= 2
            blocks.append(nn.Sequential(*layers))
            in_channels = config.channels
        self.features = nn.ModuleList(blocks)
        self.feature_size = config.channels * height
        self.dropout = nn.Dropout(config.dropout)
        self.recurrent = config.recurrent.build(self.feature_size)
        self.output = nn.Linear(self.recurrent.output_size, num_classes)

    def _halves_width(self, block: int) -> bool:
        """Whether conv block ``block`` halves the width: the last pooling one, if asked."""
        return self.config.halve_width and block == self.config.height_poolings - 1

    def output_lengths(self, widths: Tensor) -> Tensor:
        """Time steps of each image of ``widths (B,)`` columns."""
        widths = torch.as_tensor(widths, dtype=torch.int64).cpu()
        halved = self.config.halve_width and self.config.height_poolings > 0
        return widths // 2 if halved else widths

    def column_features(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, H, W)`` -> column features ``(B, T, K H')`` and lengths ``(B,)``.

        Columns past each image's width are zeroed after every block, so that a padded image
        reads exactly as it would alone (where the convolutions' own zero padding lies).
        """
        lengths = torch.as_tensor(widths, dtype=torch.int64).cpu()
        features = images.unsqueeze(1)  # (B, 1, H, W)
        for index, block in enumerate(self.features):
            features = block(features)
            if self._halves_width(index):
                lengths = lengths // 2
            columns = length_mask(lengths, features.shape[-1])  # (B, T) on the CPU
            assert columns is not None  # lengths is a tensor
            mask = columns.to(features.device, features.dtype)
            features = features * mask[:, None, None, :]  # (B, K, H', T)
        return features.flatten(1, 2).transpose(1, 2), lengths

    def forward(self, images: Tensor, widths: Tensor) -> tuple[Tensor, Tensor]:
        """``images (B, H, W)``, ``widths (B,)`` -> log-probabilities ``(B, T, classes)`` and
        lengths ``(B,)`` (CPU int64)."""
        if images.dim() != 3:
            raise ValueError(f"images must be (B, H, W), got shape {tuple(images.shape)}")
        if compiling() and widths.shape == images.shape[:1]:  # the value check in the graph
            message = f"widths must be (B,) = ({images.shape[0]},) with values at most W"
            assert_in_graph((widths <= images.shape[2]).all(), f"{message} = {images.shape[2]}")
        elif widths.shape != images.shape[:1] or int(widths.max()) > images.shape[2]:
            raise ValueError(
                f"widths must be (B,) = ({images.shape[0]},) with values at most W = "
                f"{images.shape[2]}, got shape {tuple(widths.shape)} and max {int(widths.max())}"
            )
        columns, lengths = self.column_features(images, widths)  # (B, T, K H')
        outputs, _ = self.recurrent(self.dropout(columns), lengths=lengths)
        logits = self.output(self.dropout(outputs))  # (B, T, classes)
        return logits.log_softmax(dim=-1), lengths

    def loss(self, images: Tensor, widths: Tensor, labels: Tensor, label_lengths: Tensor) -> Tensor:
        """CTC loss in nats per label; ``labels (B, L)`` class indices (never the blank)."""
        log_probs, lengths = self(images, widths)
        return ctc_loss(log_probs, lengths, labels, label_lengths, blank=BLANK)

    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())


def _check_config(config: CRNNConfig, num_classes: int, input_height: int) -> None:
    config.__post_init__()  # again: fields may have been assigned since construction
    if input_height >> config.height_poolings < 1:
        raise ValueError(
            f"images of {input_height} rows cannot be halved {config.height_poolings} times "
            "(model.height_poolings)"
        )
    if num_classes < 2:
        raise ValueError(
            f"num_classes must count the blank and a label (2 or more), got {num_classes}"
        )
