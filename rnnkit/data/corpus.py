"""Text corpora for character-level language modelling.

A corpus is a UTF-8 text file read whole, its characters as the vocabulary, and a split of the
text: the first ``1 - validation_fraction`` for training, the rest for validation. Files that
cannot be a corpus (missing, empty, not UTF-8, binary, too short) are refused with a
``CorpusError`` that says why.

A text of packed documents names their ``document_separator``: every occurrence of it ends a
document, and the corpus carries ``resets`` flags, True at the first character after each
occurrence, where a model restarts from its zero state.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor

BUNDLED_CORPORA = ("tinyshakespeare",)
"""Corpora shipped inside the package (``rnnkit/data/corpora/NAME.txt``)."""

MINIMUM_CHARACTERS = 100
"""Shortest text accepted as a corpus."""

SEPARATOR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "\\": "\\"}
"""Backslash escapes of ``document_separator`` (``\\n`` is a newline, ``\\\\`` a backslash)."""

CONTROL_CHARACTER_LIMIT = 0.01
"""Largest fraction of control characters (other than tab, newline, carriage return, form
feed) before a text is refused as binary."""


class CorpusError(ValueError):
    """A file or text that cannot be used as a corpus; the message says why."""


@dataclass
class CorpusConfig:
    """Where the text comes from and how it is split."""

    path: str | None = None
    """A UTF-8 text file; None for the bundled Tiny Shakespeare."""
    validation_fraction: float = 0.1
    """The last fraction of the text, held out for validation."""
    document_separator: str = ""
    """Ends a document at each occurrence (occurrences may overlap): the state restarts from
    zero at the next character, in training and evaluation. Written with backslash escapes
    ``\\n \\t \\r \\f \\\\`` so the command line can express it
    (``--data.document_separator='\\n\\n'`` for blank lines); empty: one continuous text."""

    def __post_init__(self) -> None:
        fraction = self.validation_fraction
        if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
            raise ValueError(f"validation_fraction must be in (0, 1), got {fraction!r}")
        decode_separator(self.document_separator)

    @property
    def separator(self) -> str:
        """``document_separator`` with its escapes decoded ("" for one continuous text)."""
        return decode_separator(self.document_separator)


def decode_separator(text: str) -> str:
    """``text`` with the backslash escapes of ``SEPARATOR_ESCAPES`` decoded; others are errors."""

    def replace(match: re.Match[str]) -> str:
        escape = match.group(1)
        if escape not in SEPARATOR_ESCAPES:
            known = " ".join("\\" + name for name in SEPARATOR_ESCAPES)
            shown = "a lone backslash at the end" if not escape else f"\\{escape}"
            raise ValueError(
                f"document_separator {text!r}: unknown escape ({shown}); known: {known}"
            )
        return SEPARATOR_ESCAPES[escape]

    return re.sub(r"\\(.?)", replace, text, flags=re.DOTALL)


def document_starts(tokens: Tensor, separator: Tensor) -> Tensor:
    """Resets ``(N,)`` bool of ``tokens (N,)``: True right after each occurrence of
    ``separator (K,)`` (overlapping occurrences each count), False elsewhere."""
    resets = torch.zeros(tokens.shape, dtype=torch.bool)
    size = separator.numel()
    if size == 0 or tokens.numel() <= size:
        return resets
    # windows[i] = tokens[i : i + K]; only occurrences followed by a character can reset
    windows = tokens[:-1].unfold(0, size, 1)  # (N - K, K)
    resets[size:] = (windows == separator).all(dim=1)
    return resets


class Vocabulary:
    """The characters of a corpus, sorted, and their indices."""

    def __init__(self, characters: list[str]) -> None:
        if len(set(characters)) != len(characters):
            raise ValueError("vocabulary characters must be unique")
        self.characters = list(characters)
        self.index = {character: position for position, character in enumerate(characters)}

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.characters)

    def unknown(self, text: str) -> list[str]:
        """Characters of ``text`` outside the vocabulary, sorted."""
        return sorted(set(text) - self.index.keys())

    def encode(self, text: str) -> Tensor:
        """``text`` -> indices ``(len(text),)`` int64; unknown characters raise a CorpusError."""
        unknown = self.unknown(text)
        if unknown:
            shown = ", ".join(repr(character) for character in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise CorpusError(
                f"{len(unknown)} character(s) are not in the vocabulary of "
                f"{len(self)} characters: {shown}{more}"
            )
        return torch.tensor([self.index[character] for character in text], dtype=torch.long)

    def decode(self, indices: Tensor | list[int]) -> str:
        """Indices ``(N,)`` -> text."""
        values = indices.tolist() if isinstance(indices, Tensor) else indices
        return "".join(self.characters[value] for value in values)

    def to_json(self) -> str:
        return json.dumps(self.characters, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls(json.loads(text))


@dataclass
class Corpus:
    """A text split into training and validation indices."""

    name: str
    vocabulary: Vocabulary
    train: Tensor
    """Indices of the training text ``(N_train,)``."""
    validation: Tensor
    """Indices of the validation text ``(N_validation,)``."""
    train_resets: Tensor | None = None
    """Document starts of the training text ``(N_train,)`` bool, or None: one continuous text."""
    validation_resets: Tensor | None = None
    """Document starts of the validation text ``(N_validation,)`` bool, or None."""


def bundled_path(name: str = "tinyshakespeare") -> Path:
    """Path of a corpus shipped inside the package."""
    if name not in BUNDLED_CORPORA:
        raise CorpusError(f"unknown bundled corpus {name!r}; bundled: {', '.join(BUNDLED_CORPORA)}")
    return Path(str(resources.files("rnnkit.data") / "corpora" / f"{name}.txt"))


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, refusing files that cannot be a corpus."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{path}: no such file")
    if not path.is_file():
        raise CorpusError(f"{path}: not a regular file")
    data = path.read_bytes()
    if not data:
        raise CorpusError(f"{path}: the file is empty")
    if b"\x00" in data:
        raise CorpusError(f"{path}: looks like a binary file (it contains NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CorpusError(
            f"{path}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start} is "
            "invalid); convert it first, e.g. iconv -f latin1 -t utf-8"
        ) from None
    check_text(text, str(path))
    return text


def check_text(text: str, name: str) -> None:
    """Refuse a text that looks binary or is too short to train on."""
    control = sum(1 for character in text if _is_control(character))
    if control > CONTROL_CHARACTER_LIMIT * len(text):
        raise CorpusError(
            f"{name}: looks like a binary file ({control} of {len(text)} characters are control "
            "characters), not text"
        )
    if len(text.strip()) == 0:
        raise CorpusError(f"{name}: the file holds only whitespace")
    if len(set(text)) < 2:
        raise CorpusError(
            f"{name}: every character is {text[0]!r}; a model has nothing to learn from one "
            "distinct character"
        )
    if len(text) < MINIMUM_CHARACTERS:
        raise CorpusError(
            f"{name}: too short to train on: {len(text)} characters, at least "
            f"{MINIMUM_CHARACTERS} needed"
        )


def split_text(text: str, validation_fraction: float) -> tuple[str, str]:
    """The first ``1 - validation_fraction`` of ``text`` and the rest."""
    if not 0 < validation_fraction < 1:
        raise CorpusError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    boundary = int(len(text) * (1 - validation_fraction))
    return text[:boundary], text[boundary:]


def load_corpus(config: CorpusConfig, vocabulary: Vocabulary | None = None) -> Corpus:
    """Read, check and split the corpus of ``config``.

    The vocabulary is built from the whole text unless one is given (a trained model's), in
    which case characters outside it are refused.
    """
    path = bundled_path() if config.path is None else Path(config.path)
    text = read_text(path)
    name = "tinyshakespeare" if config.path is None else str(path)
    train_text, validation_text = split_text(text, config.validation_fraction)
    if vocabulary is None:
        vocabulary = Vocabulary.from_text(text)
    else:
        unknown = vocabulary.unknown(text)
        if unknown:
            shown = ", ".join(repr(character) for character in unknown[:10])
            raise CorpusError(
                f"{name}: {len(unknown)} character(s) are not in the model's vocabulary: {shown}"
            )
    tokens = vocabulary.encode(text)  # (N,), one per character
    boundary = len(train_text)
    corpus = Corpus(name, vocabulary, tokens[:boundary], tokens[boundary:])
    separator = config.separator
    if separator:
        if separator not in text:
            raise CorpusError(
                f"document_separator {config.document_separator!r} never occurs in {name}"
            )
        resets = document_starts(tokens, vocabulary.encode(separator))
        corpus.train_resets, corpus.validation_resets = resets[:boundary], resets[boundary:]
    return corpus


def _is_control(character: str) -> bool:
    code = ord(character)
    return (code < 32 and character not in "\t\n\r\f") or code == 127
