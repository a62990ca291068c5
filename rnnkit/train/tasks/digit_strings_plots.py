"""The plot of the digit-strings task: test string images titled with what CTC read and the truth.

``predictions.png`` shows a grid of test strings; each title gives the string read by greedy
decoding and the true one, misread strings in red (and first, up to half of the grid).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor
from torch.nn import functional

PLOT_FILE = "predictions.png"
COLUMNS = 4


def digits_text(digits: Sequence[int]) -> str:
    """``(4, 0, 7)`` -> ``"407"``; an empty reading -> ``"(empty)"``."""
    return "".join(str(digit) for digit in digits) or "(empty)"


def choose_examples(
    references: Sequence[Sequence[int]], hypotheses: Sequence[Sequence[int]], count: int
) -> list[int]:
    """Indices of up to ``count`` strings: misread ones first (at most half), then in order."""
    pairs = list(zip(references, hypotheses, strict=True))
    wrong = [index for index, (true, read) in enumerate(pairs) if list(true) != list(read)]
    chosen = wrong[: count // 2]
    chosen += [index for index in range(len(pairs)) if index not in chosen][: count - len(chosen)]
    return chosen


def plot_predictions(
    images: Sequence[Tensor],
    references: Sequence[Sequence[int]],
    hypotheses: Sequence[Sequence[int]],
    chosen: Sequence[int],
    path: Path,
) -> None:
    """Draw ``images[i]`` (each ``(H, width)``) for i in ``chosen`` into ``path``, titled
    "read R / true T" (red when R != T), padded on the right to one width so that every string
    is drawn at the same scale."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    widest = max((images[index].shape[1] for index in chosen), default=1)
    rows = max(1, -(-len(chosen) // COLUMNS))
    figure, _ = pyplot.subplots(rows, COLUMNS, figsize=(3.2 * COLUMNS, 1.4 * rows))
    for axes in figure.axes:
        axes.axis("off")
    for axes, index in zip(figure.axes, chosen, strict=False):
        true, read = digits_text(references[index]), digits_text(hypotheses[index])
        correct = true == read
        padded = functional.pad(images[index], (0, widest - images[index].shape[1]))
        axes.imshow(padded.numpy(), cmap="gray_r", vmin=0, vmax=1)  # one scale for all
        axes.set_title(
            f"read {read} / true {true}{'' if correct else '  MISREAD'}",
            fontsize=9,
            color="black" if correct else "red",
        )
    figure.suptitle("CTC greedy readings of test strings against the truth")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
