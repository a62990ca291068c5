"""Corpora: the bundled text, the split, the vocabulary, and the files that are refused."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data import (
    CorpusConfig,
    CorpusError,
    Vocabulary,
    bundled_path,
    load_corpus,
    read_text,
    split_text,
)

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 4


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_bundled_corpus_is_tiny_shakespeare_split_90_10():
    corpus = load_corpus(CorpusConfig())
    total = corpus.train.numel() + corpus.validation.numel()
    assert total == len(read_text(bundled_path()))
    assert corpus.train.numel() == int(total * 0.9)
    assert len(corpus.vocabulary) == 65
    assert corpus.vocabulary.decode(corpus.train[:14]) == "First Citizen:"


def test_split_keeps_order_and_every_character():
    train, validation = split_text("abcdefghij", 0.2)
    assert (train, validation) == ("abcdefgh", "ij")


def test_user_file_vocabulary_comes_from_the_file(tmp_path):
    path = write(tmp_path, "text.txt", "héllo wörld, ünïcode\n".encode() * 10)
    corpus = load_corpus(CorpusConfig(path=str(path)))
    assert "ö" in corpus.vocabulary.characters
    assert corpus.vocabulary.decode(corpus.train[:5]) == "héllo"


def test_vocabulary_round_trip_and_unknown_characters():
    vocabulary = Vocabulary.from_text("hello")
    assert vocabulary.characters == ["e", "h", "l", "o"]
    assert vocabulary.decode(vocabulary.encode("hole")) == "hole"
    assert Vocabulary.from_json(vocabulary.to_json()).characters == vocabulary.characters
    assert vocabulary.encode("hello").dtype == torch.long
    with pytest.raises(CorpusError, match="not in the vocabulary.*'x'"):
        vocabulary.encode("box")


def test_a_trained_vocabulary_refuses_new_characters(tmp_path):
    path = write(tmp_path, "other.txt", ("~~~ " + TEXT).encode())
    with pytest.raises(CorpusError, match="not in the model's vocabulary: '~'"):
        load_corpus(CorpusConfig(path=str(path)), Vocabulary.from_text(TEXT))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "the file is empty"),
        (b"hello\x00world" * 20, "binary file.*NUL"),
        (("caf\u00e9 " * 40).encode("latin-1"), "not UTF-8 text.*0xe9"),
        (b"\x01\x02\x03\x04 text" * 30, "binary file.*control characters"),
        (b"too short\n", "too short to train on: 10 characters"),
        (b" \n\t " * 40, "only whitespace"),
    ],
    ids=["empty", "nul-bytes", "latin1", "control-characters", "too-short", "whitespace"],
)
def test_refused_files_say_why(tmp_path, data, message):
    path = write(tmp_path, "bad.txt", data)
    with pytest.raises(CorpusError, match=message):
        load_corpus(CorpusConfig(path=str(path)))


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    with pytest.raises(CorpusError, match="not a regular file"):
        read_text(tmp_path)


def test_byte_order_mark_is_dropped(tmp_path):
    path = write(tmp_path, "bom.txt", b"\xef\xbb\xbf" + TEXT.encode())
    assert read_text(path) == TEXT
