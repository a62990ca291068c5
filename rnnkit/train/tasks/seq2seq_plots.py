"""The attention heat map of a sequence-to-sequence prediction."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor


def plot_attention_weights(
    weights: Tensor, source: list[str], predicted: list[str], title: str, path: Path
) -> Path:
    """Draw ``weights (L, S)`` (one row per predicted symbol, one column per source symbol)
    with the symbols as tick labels, to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(1.5 + 0.4 * len(source), 1.5 + 0.4 * len(predicted)))
    axes.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(source)), source)
    axes.set_yticks(range(len(predicted)), predicted)
    axes.set_xlabel("source")
    axes.set_ylabel("prediction (greedy)")
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
