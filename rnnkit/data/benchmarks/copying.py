"""Copying and selective copying.

- ``copy``: a random string ``s_1 .. s_n`` over ``num_symbols`` symbols, ``delay`` blanks (the
  copy-memory task of Arjovsky et al. 2016, https://arxiv.org/abs/1511.06464, when
  ``delay > 0``), then the ``n`` answer positions ``DELIMITER BLANK .. BLANK`` whose targets
  are ``s_1 .. s_n``; with ``teacher_forcing`` they read ``DELIMITER s_1 .. s_{n-1}`` (the
  language-model form). ``T = 2n + delay``.
- ``selective-copy`` as in Gu & Dao 2023, "Mamba" (https://arxiv.org/abs/2312.00752, section
  3.1 and appendix E.1): ``n`` symbols at random distinct positions of a region of
  ``sequence_length`` tokens, every other position ``BLANK`` (noise), then ``n`` ``DELIMITER``
  tokens whose targets are the symbols in order of position.

Only answer positions are scored. Tokens: ``BLANK = 0``, ``DELIMITER = 1``, symbols from 2.
Splits: by the hash of the inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rnnkit.data.benchmarks.batches import Split, TokenBatch, check_choice, check_int, draw_split

BLANK, DELIMITER, FIRST_SYMBOL = 0, 1, 2
VARIANTS = ("copy", "selective-copy")


@dataclass(frozen=True)
class CopyingConfig:
    """Options of the copying generators."""

    variant: str = "copy"
    """``"copy"`` or ``"selective-copy"``."""
    num_symbols: int = 8
    """Distinct symbols to copy."""
    string_length: int = 16
    """Symbols to copy ``n``."""
    delay: int = 0
    """``copy``: blanks between the string and the delimiter."""
    teacher_forcing: bool = False
    """``copy``: answer positions read the previous symbol instead of a blank."""
    sequence_length: int = 256
    """``selective-copy``: tokens of the region the symbols are scattered in (>= n)."""

    def __post_init__(self) -> None:
        check_choice("variant", self.variant, VARIANTS)
        check_int("num_symbols", self.num_symbols, 2)
        check_int("string_length", self.string_length, 1)
        check_int("delay", self.delay, 0)
        if not isinstance(self.teacher_forcing, bool):
            raise ValueError(f"teacher_forcing: expected a bool, got {self.teacher_forcing!r}")
        check_int("sequence_length", self.sequence_length, self.string_length)

    @property
    def vocabulary_size(self) -> int:
        return FIRST_SYMBOL + self.num_symbols

    @property
    def total_length(self) -> int:
        """``T`` of every batch."""
        if self.variant == "copy":
            return 2 * self.string_length + self.delay
        return self.sequence_length + self.string_length


def draw_batch(
    config: CopyingConfig, batch_size: int, generator: torch.Generator, split: Split = "train"
) -> TokenBatch:
    """``batch_size`` sequences ``(B, config.total_length)``."""
    draw = _draw_copy if config.variant == "copy" else _draw_selective_copy
    return draw_split(
        lambda count: draw(config, count, generator),
        lambda batch: batch.inputs,
        batch_size,
        split,
    )


def _draw_copy(config: CopyingConfig, count: int, generator: torch.Generator) -> TokenBatch:
    n, total = config.string_length, config.total_length
    symbols = torch.randint(FIRST_SYMBOL, config.vocabulary_size, (count, n), generator=generator)
    inputs = torch.full((count, total), BLANK, dtype=torch.long)
    inputs[:, :n] = symbols
    answer = total - n
    inputs[:, answer] = DELIMITER
    if config.teacher_forcing:
        inputs[:, answer + 1 :] = symbols[:, :-1]
    return _with_answer(inputs, symbols)


def _draw_selective_copy(
    config: CopyingConfig, count: int, generator: torch.Generator
) -> TokenBatch:
    n, region = config.string_length, config.sequence_length
    symbols = torch.randint(FIRST_SYMBOL, config.vocabulary_size, (count, n), generator=generator)
    positions = torch.rand(count, region, generator=generator).argsort(1)[:, :n].sort(1).values
    inputs = torch.full((count, region + n), BLANK, dtype=torch.long)
    inputs.scatter_(1, positions, symbols)
    inputs[:, region:] = DELIMITER
    return _with_answer(inputs, symbols)


def _with_answer(inputs: torch.Tensor, answer: torch.Tensor) -> TokenBatch:
    """Targets ``answer`` ``(B, n)`` at the last ``n`` positions, the only ones scored."""
    count, total = inputs.shape
    n = answer.shape[1]
    targets = torch.zeros(count, total, dtype=torch.long)
    targets[:, total - n :] = answer
    mask = torch.zeros(count, total, dtype=torch.bool)
    mask[:, total - n :] = True
    return TokenBatch(inputs, targets, mask)
