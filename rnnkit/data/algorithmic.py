"""Two classic algorithmic sequence-to-sequence problems, drawn at random.

- ``reverse``: a random string over a small alphabet, of length ``min_length..max_length``
  (uniform); the target is the string reversed, ``"abcd" -> "dcba"``.
- ``add``: two non-negative integers of ``min_length..max_length`` digits each (the number of
  digits uniform, then the digits uniform, no leading zero), written ``"123+4567"``; the target
  is their sum, ``"4690"``.

Both were used to probe what recurrent encoder-decoders learn (Zaremba & Sutskever 2014,
"Learning to Execute", https://arxiv.org/abs/1410.4615; Graves et al. 2014, Neural Turing
Machines). Drawing is deterministic given a ``torch.Generator``.

Tokens: ``pad = 0``, ``bos = 1``, ``eos = 2``, then one per character. A batch pads sources
and targets with ``pad`` and keeps their lengths; the decoder reads ``bos + target`` and is
trained to predict ``target + eos``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

PAD, BOS, EOS = 0, 1, 2
SPECIAL_SYMBOLS = ("<pad>", "<bos>", "<eos>")
PROBLEMS = ("reverse", "add")
DIGITS = "0123456789"


class SymbolVocabulary:
    """Characters <-> tokens, after the special tokens pad, bos and eos."""

    def __init__(self, characters: str) -> None:
        if not characters or len(set(characters)) != len(characters):
            raise ValueError(f"characters: expected distinct characters, got {characters!r}")
        self.characters = characters
        self.symbols = list(SPECIAL_SYMBOLS) + list(characters)
        self.index = {character: 3 + position for position, character in enumerate(characters)}

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"text: characters {unknown} are not in {self.characters!r}")
        return [self.index[character] for character in text]

    def decode(self, tokens: Sequence[int]) -> str:
        """The characters before the first eos (pad and bos skipped)."""
        characters = []
        for token in tokens:
            if token == EOS:
                break
            if token >= len(SPECIAL_SYMBOLS):
                characters.append(self.symbols[token])
        return "".join(characters)


class Batch(NamedTuple):
    """Padded source and target tokens of a batch of examples."""

    source: Tensor  # (B, S) int64, padded with PAD
    source_lengths: Tensor  # (B,) int64, on the CPU
    target_input: Tensor  # (B, L) int64: bos + target, padded
    target_output: Tensor  # (B, L) int64: target + eos, padded
    target_lengths: Tensor  # (B,) int64: len(target) + 1
    examples: list[tuple[str, str]]  # (source text, target text)


def vocabulary_for(problem: str, alphabet: str = "abcdefghij") -> SymbolVocabulary:
    """The vocabulary of ``problem``: the alphabet for reverse, digits and ``+`` for add."""
    _check_problem(problem)
    return SymbolVocabulary(alphabet if problem == "reverse" else DIGITS + "+")


def draw_examples(
    problem: str,
    count: int,
    min_length: int,
    max_length: int,
    generator: torch.Generator,
    alphabet: str = "abcdefghij",
) -> list[tuple[str, str]]:
    """``count`` pairs ``(source, target)``; lengths count characters (reverse) or digits per
    operand (add)."""
    _check_problem(problem)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count: expected a positive int, got {count!r}")
    if not 1 <= min_length <= max_length:
        raise ValueError(
            f"min_length, max_length: expected 1 <= min_length <= max_length, got "
            f"{min_length} and {max_length}"
        )
    if problem == "reverse":
        strings = _random_strings(count, min_length, max_length, alphabet, generator)
        return [(text, text[::-1]) for text in strings]
    first = _random_numbers(count, min_length, max_length, generator)
    second = _random_numbers(count, min_length, max_length, generator)
    return [(f"{a}+{b}", str(a + b)) for a, b in zip(first, second, strict=True)]


def make_batch(examples: list[tuple[str, str]], vocabulary: SymbolVocabulary) -> Batch:
    """Encode and pad ``examples``."""
    sources = [vocabulary.encode(source) for source, _ in examples]
    targets = [vocabulary.encode(target) for _, target in examples]
    source, source_lengths = _pad(sources)
    target_input, _ = _pad([[BOS, *target] for target in targets])
    target_output, target_lengths = _pad([[*target, EOS] for target in targets])
    return Batch(source, source_lengths, target_input, target_output, target_lengths, examples)


def _random_strings(
    count: int, min_length: int, max_length: int, alphabet: str, generator: torch.Generator
) -> list[str]:
    lengths = torch.randint(min_length, max_length + 1, (count,), generator=generator)
    letters = torch.randint(len(alphabet), (count, max_length), generator=generator)
    return [
        "".join(alphabet[index] for index in row[:length])
        for row, length in zip(letters.tolist(), lengths.tolist(), strict=True)
    ]


def _random_numbers(
    count: int, min_digits: int, max_digits: int, generator: torch.Generator
) -> list[int]:
    """Integers whose number of digits is uniform in ``min_digits..max_digits``."""
    digits = torch.randint(min_digits, max_digits + 1, (count,), generator=generator).tolist()
    fractions = torch.rand(count, generator=generator, dtype=torch.float64).tolist()
    numbers = []
    for size, fraction in zip(digits, fractions, strict=True):
        low = 0 if size == 1 else 10 ** (size - 1)
        high = 10**size  # exclusive
        numbers.append(min(high - 1, low + int(fraction * (high - low))))
    return numbers


def _pad(sequences: list[list[int]]) -> tuple[Tensor, Tensor]:
    """``(B, longest)`` int64 padded with PAD, and the ``(B,)`` lengths."""
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.long)
    padded = torch.full((len(sequences), int(lengths.max())), PAD, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    return padded, lengths


def _check_problem(problem: str) -> None:
    if problem not in PROBLEMS:
        raise ValueError(f"problem: expected one of {PROBLEMS}, got {problem!r}")
