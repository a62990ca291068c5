"""Contiguous streams for truncated backpropagation through time.

A token sequence of length N is cut into B parallel streams of ``L = N // B`` tokens each (the
remainder is dropped), laid out as rows of a ``(B, L)`` tensor. Window ``w`` is the columns
``[w T, (w + 1) T]``: inputs are its first T columns and targets the same columns shifted by one,
so the state at the end of window ``w`` is the right state to start window ``w + 1``. Document
starts (``resets (N,)``, see ``rnnkit.data.corpus.document_starts``) are cut the same way, each
window carrying the flags of its inputs.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from rnnkit.data.corpus import CorpusError


class Window(NamedTuple):
    """One window of every stream."""

    inputs: Tensor  # (B, T) token indices
    targets: Tensor  # (B, T) the next token of each input
    starts_epoch: bool  # the first window of a pass: carried state must be reset
    resets: Tensor | None = None  # (B, T) True where an input starts a document; None: no documents


class StreamBatcher:
    """``B`` contiguous streams over ``tokens (N,)`` read in windows of ``window`` tokens.

    Args:
        tokens: token indices ``(N,)``.
        batch_size: streams B read in parallel.
        window: time steps T per window.
        name: what the tokens are, for error messages ("training text").
        resets: document starts ``(N,)`` bool, or None for one continuous text.
    """

    def __init__(
        self,
        tokens: Tensor,
        batch_size: int,
        window: int,
        name: str = "text",
        resets: Tensor | None = None,
    ) -> None:
        if batch_size <= 0 or window <= 0:
            raise ValueError(f"batch_size and window must be positive, got {batch_size}, {window}")
        length = tokens.numel() // batch_size
        if length < window + 1:
            raise CorpusError(
                f"the {name} is too short for batch_size={batch_size} streams of windows of "
                f"{window} characters: it has {tokens.numel()} characters, at least "
                f"{batch_size * (window + 1)} needed; use a longer text or lower "
                "--trainer.batch_size / --trainer.window"
            )
        if resets is not None and resets.shape != tokens.shape:
            raise ValueError(
                f"resets must have the shape of tokens {tuple(tokens.shape)}, "
                f"got {tuple(resets.shape)}"
            )
        self.batch_size = batch_size
        self.window = window
        self.streams = tokens[: length * batch_size].reshape(batch_size, length)  # (B, L)
        self.resets = (
            None if resets is None else resets[: length * batch_size].reshape(batch_size, length)
        )  # (B, L)
        self.windows_per_epoch = (length - 1) // window

    def __len__(self) -> int:
        return self.windows_per_epoch

    def window_at(self, step: int) -> Window:
        """The window read at training step ``step`` (epochs repeat the same windows)."""
        index = step % self.windows_per_epoch
        start = index * self.window
        return self._window(start, start + self.window + 1, index == 0)

    def __iter__(self):
        """Every window of one pass, in order."""
        for index in range(self.windows_per_epoch):
            yield self.window_at(index)

    def tail(self) -> Window | None:
        """The leftover columns after the last full window (fewer than T steps), or None."""
        start = self.windows_per_epoch * self.window
        if self.streams.shape[1] - start < 2:
            return None
        return self._window(start, self.streams.shape[1], False)

    def _window(self, start: int, stop: int, starts_epoch: bool) -> Window:
        """Inputs are columns ``[start, stop - 1)``, targets ``[start + 1, stop)``."""
        chunk = self.streams[:, start:stop]  # (B, T + 1)
        resets = None if self.resets is None else self.resets[:, start : stop - 1]  # (B, T)
        return Window(chunk[:, :-1], chunk[:, 1:], starts_epoch, resets)
