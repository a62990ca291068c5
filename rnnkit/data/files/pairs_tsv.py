"""Sequence pairs in a tab-separated text file: ``source<TAB>target`` per line.

Format (UTF-8): one pair per line, exactly one TAB; each side is split into tokens either as
characters (``chars``: ``"cat"`` -> ``c a t``, spaces inside a side are tokens too) or as
whitespace-separated symbols (``words``: ``"K AE1 T"`` -> ``K AE1 T``), chosen per side.
Each side is stripped of surrounding whitespace first.

Refused with a ``DataFileError`` naming the file and the line: a line without a TAB, a line
with more than one TAB, a side with no token, a file that is not UTF-8 or holds no pair.
Skipped by policy and counted in the ``LoadReport``: blank lines (whitespace only).

A file of sources to predict (``read_sources``) holds one source per line; a line may also
carry a target after a TAB (so a pairs file serves too), which is ignored.

Tokens never seen in training map to ``<unk>`` (``TokenVocabulary.encode`` counts them): the
task reports how many source and target tokens were unknown. An unknown target token can
never be predicted, so it always counts as an error in the scores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from rnnkit.data.files.errors import DataFileError, LoadReport

TOKENIZATIONS = ("chars", "words")
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
UNK = 3

Pair = tuple[tuple[str, ...], tuple[str, ...]]


def tokenize(text: str, tokens: str) -> tuple[str, ...]:
    """``text`` as ``chars`` (each character) or ``words`` (split on whitespace)."""
    if tokens not in TOKENIZATIONS:
        raise ValueError(f"tokens: expected one of {TOKENIZATIONS}, got {tokens!r}")
    return tuple(text) if tokens == "chars" else tuple(text.split())


def join_tokens(tokens: Sequence[str], tokenization: str) -> str:
    """The inverse of ``tokenize``: characters joined, words joined by spaces."""
    return "".join(tokens) if tokenization == "chars" else " ".join(tokens)


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DataFileError(path, f"expected UTF-8 text, found byte {error.start}") from None
    except OSError as error:
        raise DataFileError(path, f"cannot be read ({error.strerror})") from None
    return text.splitlines()


def read_pairs(
    path: str | Path, source_tokens: str = "chars", target_tokens: str = "chars"
) -> tuple[list[Pair], LoadReport]:
    """The ``(source tokens, target tokens)`` pairs of a ``source<TAB>target`` file."""
    path = Path(path)
    pairs, report = [], LoadReport(path)
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            report.skip("blank lines")
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            found = "no TAB" if len(fields) == 1 else f"{len(fields) - 1} TABs"
            raise DataFileError(
                path, f"expected source<TAB>target (one TAB), found {found}", line=number
            )
        source = _side(path, number, "source", fields[0], source_tokens)
        target = _side(path, number, "target", fields[1], target_tokens)
        pairs.append((source, target))
    if not pairs:
        raise DataFileError(path, "expected at least one source<TAB>target line, found none")
    report.read = len(pairs)
    return pairs, report


def read_sources(
    path: str | Path, source_tokens: str = "chars"
) -> tuple[list[tuple[str, ...]], LoadReport]:
    """The sources of a file of one source per line (anything after a TAB is ignored)."""
    path = Path(path)
    sources, report = [], LoadReport(path)
    for number, line in enumerate(_lines(path), start=1):
        if not line.strip():
            report.skip("blank lines")
            continue
        fields = line.split("\t")
        if len(fields) > 2:
            raise DataFileError(
                path, f"expected a source, optionally <TAB>target, found {len(fields) - 1} TABs",
                line=number,
            )  # fmt: skip
        sources.append(_side(path, number, "source", fields[0], source_tokens))
    if not sources:
        raise DataFileError(path, "expected at least one source line, found none")
    report.read = len(sources)
    return sources, report


def _side(path: Path, number: int, name: str, text: str, tokenization: str) -> tuple[str, ...]:
    tokens = tokenize(text.strip(), tokenization)
    if not tokens:
        raise DataFileError(path, f"expected a non-empty {name}, found {text!r}", line=number)
    return tokens


@dataclass
class PairsDataConfig:
    """Where the pairs are, how they are tokenized and split."""

    path: str = ""
    """The ``source<TAB>target`` file (``--data FILE``)."""
    source_tokens: str = "chars"
    """chars (every character a token) or words (whitespace-separated symbols)."""
    target_tokens: str = "chars"
    """chars or words, for the targets."""
    validation_fraction: float = 0.05
    """Share of the pairs held out for validation during training."""
    test_fraction: float = 0.1
    """Share held out for the test (0 when ``test`` names a file)."""
    test: str = ""
    """A separate test file of pairs (else the test split of ``path``)."""
    split_seed: int = 0
    """Seed of the shuffle that holds the splits out."""
    max_output_length: int = 0
    """Tokens a decoder may emit (0: the longest training target + 10)."""

    def __post_init__(self) -> None:
        for name in ("source_tokens", "target_tokens"):
            if getattr(self, name) not in TOKENIZATIONS:
                raise ValueError(
                    f"{name}: expected one of {TOKENIZATIONS}, got {getattr(self, name)!r}"
                )
        for name in ("validation_fraction", "test_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1), got {getattr(self, name)}")


def load_splits(data: PairsDataConfig) -> tuple[dict[str, list[Pair]], list[str]]:
    """``{"train", "validation", "test"}`` pairs and the loaders' summaries."""
    if not data.path:
        raise ValueError("seq2seq needs a file of pairs: --data PAIRS.tsv (source<TAB>target)")
    pairs, report = read_pairs(data.path, data.source_tokens, data.target_tokens)
    test_fraction = 0.0 if data.test else data.test_fraction
    train, validation, test = split_pairs(
        pairs, data.validation_fraction, test_fraction, data.split_seed
    )
    summaries = [report.summary()]
    if data.test:
        test, test_report = read_pairs(data.test, data.source_tokens, data.target_tokens)
        summaries.append(test_report.summary())
    return {"train": train, "validation": validation, "test": test}, summaries


def split_indices(
    count: int, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[list[int], list[int], list[int]]:
    """``(train, validation, test)`` indices of ``count`` examples: a permutation by ``seed``
    cut by the fractions (a held-out set gets at least one example when its fraction is
    positive; train keeps at least one)."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    validation, test = _count(count, validation_fraction), _count(count, test_fraction)
    if validation + test >= count:
        raise ValueError(
            f"{count} examples cannot give {validation} validation and {test} test examples "
            "and keep one for training; lower the fractions or bring more examples"
        )
    held = validation + test
    return order[held:], order[:validation], order[validation:held]


def split_pairs(
    pairs: Sequence[Pair], validation_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """``(train, validation, test)`` pairs, held out by ``split_indices``."""
    splits = split_indices(len(pairs), validation_fraction, test_fraction, seed)
    train, validation, test = ([pairs[index] for index in split] for split in splits)
    return train, validation, test


def _count(total: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, round(total * fraction))


class TokenVocabulary:
    """Tokens <-> ids, after the special tokens pad, bos, eos and unk (ids 0-3)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.symbols = list(SPECIAL_TOKENS) + list(tokens)
        self.index = {symbol: position for position, symbol in enumerate(self.symbols)}
        if len(self.index) != len(self.symbols):
            raise ValueError(f"tokens: expected distinct tokens, got {self.symbols}")

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]]) -> TokenVocabulary:
        """Every token of ``sequences``, most frequent first (ties in sorted order)."""
        counts = Counter(token for sequence in sequences for token in sequence)
        ordered = sorted(counts, key=lambda token: (-counts[token], token))
        return cls(token for token in ordered if token not in SPECIAL_TOKENS)

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, tokens: Sequence[str], unknown: Counter[str] | None = None) -> list[int]:
        """Ids of ``tokens``; unknown tokens become ``UNK`` and are counted in ``unknown``."""
        ids = [self.index.get(token, UNK) for token in tokens]
        if unknown is not None:
            unknown.update(token for token in tokens if token not in self.index)
        return ids

    def decode(self, ids: Sequence[int]) -> tuple[str, ...]:
        """The tokens before the first eos (pad and bos skipped, unk kept as ``<unk>``)."""
        tokens = []
        for token in ids:
            if token == SPECIAL_TOKENS.index("<eos>"):
                break
            if token == UNK or token >= len(SPECIAL_TOKENS):
                tokens.append(self.symbols[token])
        return tuple(tokens)
