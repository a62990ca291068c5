"""An image classifier: pLSTM layers over the pixel grid, or any registered cell reading the
image row by row.

With ``cell="plstm"`` (``rnnkit.cells.plstm.PLSTM2D``), every pixel's channels are embedded to
``hidden_size`` by a small per-pixel MLP (no mixing across pixels) and ``num_layers`` pre-norm
residual pLSTM layers run over the grid,

    z_0 = W_2 gelu(W_1 x + b_1) + b_2,   z_{l+1} = z_l + PLSTM2D_l(LayerNorm(z_l)),
    logits = W_c LayerNorm(pool_{x,y} z_L) + b_c

with ``pool`` the maximum over the grid (``pooling="max"``, the default: at initialization the
mean of the residual stream hardly differs between images, and a mean-pooled model sat at
chance for a hundred steps where a max-pooled one was well on its way) or the mean.

With any cell of ``rnnkit.cells.CELLS`` (``"lstm"``, ``"gru"``, ...), the baseline reads one row
of pixels per time step (``T = height``, ``width * channels`` features) through an
``rnnkit.nn.Recurrent`` stack and classifies from the output at the last row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.cells.plstm import ALL_DIRECTIONS, FORMS, MODES, PLSTM2D
from rnnkit.models.recurrent_config import cell_option_types, parse_option
from rnnkit.nn import Recurrent
from rnnkit.strategies import get_registered

GRID_CELL = "plstm"
POOLINGS = ("max", "mean")


@dataclass
class ImageClassifierConfig:
    """The classifier: ``plstm`` over the grid, or a registered cell over the rows."""

    cell: str = GRID_CELL
    """``"plstm"`` (2-D pLSTM over the pixel grid) or a registered cell reading rows."""
    hidden_size: int = 32
    """Width of every layer (pLSTM: split into ``num_heads`` heads)."""
    num_layers: int = 1
    """Layers stacked."""
    num_heads: int = 4
    """pLSTM heads per layer."""
    mode: str = "P"
    """pLSTM mode: ``"P"`` (propagation) or ``"D"`` (diffusive distribution)."""
    num_directions: int = 4
    """pLSTM corner scans averaged per layer (the first of: top-left, x reversed, y reversed,
    both reversed)."""
    form: str = "auto"
    """How the pLSTM layers compute (``rnnkit.cells.plstm.FORMS``; the same function):
    ``"auto"``, ``"chunked"``, ``"parallel"``, ``"wavefront"`` or ``"reference"``."""
    pooling: str = "max"
    """How the pLSTM's grid is pooled for the head: ``"max"`` or ``"mean"``."""
    strategy: str = "auto"
    """The strategy of a row-reading cell (``rnnkit.strategies.STRATEGIES``)."""
    options: dict[str, Any] = field(default_factory=dict)
    """A row-reading cell's own constructor options (``num_heads``, ...)."""

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "num_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not 1 <= self.num_directions <= len(ALL_DIRECTIONS):
            raise ValueError(f"num_directions must be in 1..4, got {self.num_directions}")
        if self.form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {self.form!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.cell == GRID_CELL:
            if self.options:
                raise ValueError("options are for a row-reading cell; plstm takes none")
            return
        option_types = cell_option_types(self.cell)  # names the registered cells if unknown
        for name in self.options:
            if name not in option_types:
                raise ValueError(f"option {name!r} is not taken by the cell {self.cell!r}")
        self.options = {
            name: parse_option(name, value, option_types[name])
            for name, value in self.options.items()
        }
        get_registered(self.strategy)


class GridEncoder(nn.Module):
    """Pre-norm residual pLSTM layers: ``(B, X, Y, C) -> (B, hidden)`` pooled features."""

    def __init__(self, config: ImageClassifierConfig, channels: int) -> None:
        super().__init__()
        # a nonlinear per-pixel embedding: LayerNorm of a linear one would map every nonzero
        # intensity of a one-channel image to the same vector (it is scale-invariant)
        self.embed = nn.Sequential(
            nn.Linear(channels, config.hidden_size),
            nn.GELU(),
            nn.Linear(config.hidden_size, config.hidden_size),
        )
        directions = ALL_DIRECTIONS[: config.num_directions]
        self.norms = nn.ModuleList(
            nn.LayerNorm(config.hidden_size) for _ in range(config.num_layers)
        )
        self.layers = nn.ModuleList(
            PLSTM2D(
                config.hidden_size,
                config.hidden_size,
                num_heads=config.num_heads,
                mode=config.mode,
                directions=directions,
                form=config.form,
            )
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.hidden_size)
        self.pooling = config.pooling

    def forward(self, images: Tensor) -> Tensor:
        hidden = self.embed(images)  # (B, X, Y, hidden)
        for norm, layer in zip(self.norms, self.layers, strict=True):
            hidden = hidden + layer(norm(hidden))
        grid = hidden.flatten(1, 2)  # (B, X * Y, hidden)
        pooled = grid.amax(1) if self.pooling == "max" else grid.mean(1)
        return self.final_norm(pooled)


class RowEncoder(nn.Module):
    """A recurrent stack over the rows: ``(B, X, Y, C) -> (B, hidden)``, the last row's output."""

    def __init__(self, config: ImageClassifierConfig, width: int, channels: int) -> None:
        super().__init__()
        self.recurrent = Recurrent(
            config.cell,
            width * channels,
            config.hidden_size,
            num_layers=config.num_layers,
            strategy=config.strategy,
            **config.options,
        )

    def forward(self, images: Tensor) -> Tensor:
        outputs, _ = self.recurrent(images.flatten(2))  # (B, X rows, hidden)
        assert isinstance(outputs, Tensor)
        return outputs[:, -1]


class ImageClassifier(nn.Module):
    """``images (B, height, width, channels) -> logits (B, num_classes)``."""

    def __init__(
        self, config: ImageClassifierConfig, image_shape: tuple[int, int, int], num_classes: int
    ) -> None:
        super().__init__()
        self.config, self.image_shape = config, image_shape
        _, width, channels = image_shape
        self.encoder: nn.Module = (
            GridEncoder(config, channels)
            if config.cell == GRID_CELL
            else RowEncoder(config, width, channels)
        )
        self.classifier = nn.Linear(config.hidden_size, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(
                f"images must be (B, {', '.join(map(str, self.image_shape))}), "
                f"got {tuple(images.shape)}"
            )
        return self.classifier(self.encoder(images))

    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())

    def describe(self) -> str:
        if self.config.cell == GRID_CELL:
            return (
                f"pLSTM ({self.config.mode}-mode, {self.config.num_directions} corner scans, "
                f"{self.config.num_heads} heads, {self.config.form} form) x "
                f"{self.config.num_layers} over the grid"
            )
        return f"{self.config.cell} x {self.config.num_layers} reading one row per step"


@torch.no_grad()
def batched_logits(model: ImageClassifier, images: Tensor, batch_size: int) -> Tensor:
    """``model(images)`` in slices of ``batch_size`` images: ``(N, num_classes)``."""
    return torch.cat([model(part) for part in images.split(batch_size)])
