"""The pairs (TSV) and CTC (.npz) loaders on small files, every malformed case included."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from rnnkit.data.files import DataFileError
from rnnkit.data.files.ctc_npz import load_ctc_npz, required_frames
from rnnkit.data.files.pairs_tsv import (
    UNK,
    TokenVocabulary,
    read_pairs,
    read_sources,
    split_indices,
    split_pairs,
)


def write(tmp_path, text, name="pairs.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---- pairs -------------------------------------------------------------------------------


def test_pairs_are_tokenized_per_side_and_blank_lines_are_counted(tmp_path):
    path = write(tmp_path, "cat\tK AE T\n\n  dog \t D AO G\n   \n")
    pairs, report = read_pairs(path, "chars", "words")
    assert pairs == [(("c", "a", "t"), ("K", "AE", "T")), (("d", "o", "g"), ("D", "AO", "G"))]
    assert report.read == 2 and report.skipped == {"blank lines": 2}
    assert "skipped 2 (blank lines)" in report.summary()
    pairs, _ = read_pairs(path, "words", "chars")
    assert pairs[0] == (("cat",), tuple("K AE T"))  # chars keep inner spaces as tokens


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("a\tb\nno tab here\n", 2, "found no TAB"),
        ("a\tb\tc\n", 1, "found 2 TABs"),
        ("a\tb\n\tb\n", 2, "expected a non-empty source"),
        ("a\t  \n", 1, "expected a non-empty target"),
    ],
)
def test_malformed_pair_lines_name_the_file_and_line(tmp_path, text, line, problem):
    path = write(tmp_path, text)
    with pytest.raises(DataFileError, match=problem) as caught:
        read_pairs(path)
    assert caught.value.line == line and str(path) in str(caught.value)
    assert f"line {line}" in str(caught.value)


@pytest.mark.parametrize("text", ["", "\n  \n"])
def test_a_file_without_pairs_is_refused(tmp_path, text):
    with pytest.raises(DataFileError, match="at least one source<TAB>target"):
        read_pairs(write(tmp_path, text))


def test_a_file_that_is_not_utf8_or_missing_is_refused(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes("caf\xe9\tK\n".encode("latin-1"))
    with pytest.raises(DataFileError, match="expected UTF-8"):
        read_pairs(path)
    with pytest.raises(DataFileError, match="cannot be read"):
        read_pairs(tmp_path / "missing.tsv")


def test_sources_take_one_column_or_ignore_a_target(tmp_path):
    sources, report = read_sources(write(tmp_path, "ab\ncd\tX Y\n\n"), "chars")
    assert sources == [("a", "b"), ("c", "d")] and report.skipped == {"blank lines": 1}
    with pytest.raises(DataFileError, match="found 2 TABs") as caught:
        read_sources(write(tmp_path, "ab\na\tb\tc\n"))
    assert caught.value.line == 2
    with pytest.raises(DataFileError, match="non-empty source"):
        read_sources(write(tmp_path, "ab\n\tX\n"))


def test_splits_are_disjoint_cover_everything_and_depend_only_on_the_seed():
    train, validation, test = split_indices(100, 0.1, 0.2, seed=3)
    assert (len(train), len(validation), len(test)) == (70, 10, 20)
    assert sorted(train + validation + test) == list(range(100))
    assert split_indices(100, 0.1, 0.2, seed=3) == (train, validation, test)
    assert split_indices(100, 0.1, 0.2, seed=4) != (train, validation, test)
    assert split_indices(5, 0.01, 0.0, seed=0)[1:] != ([], [])  # a positive fraction holds one
    with pytest.raises(ValueError, match="keep one for training"):
        split_indices(2, 0.5, 0.5, seed=0)
    pairs = [((str(index),), ("x",)) for index in range(10)]
    train_pairs, validation_pairs, _ = split_pairs(pairs, 0.2, 0.0, seed=1)
    assert len(train_pairs) == 8 and {pair[0] for pair in validation_pairs}.isdisjoint(
        pair[0] for pair in train_pairs
    )


def test_the_vocabulary_maps_unseen_tokens_to_unk_and_counts_them():
    vocabulary = TokenVocabulary.build([("b", "a", "b"), ("c",)])
    assert vocabulary.symbols == ["<pad>", "<bos>", "<eos>", "<unk>", "b", "a", "c"]
    unknown: Counter[str] = Counter()
    assert vocabulary.encode(("a", "z", "b", "z", "y"), unknown) == [5, UNK, 4, UNK, UNK]
    assert unknown == Counter({"z": 2, "y": 1})
    assert vocabulary.decode([1, 4, UNK, 5, 2, 6]) == ("b", "<unk>", "a")


# ---- CTC .npz ------------------------------------------------------------------------------


def save(tmp_path, name="data.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def frames(count=3, steps=6, features=2):
    return np.arange(count * steps * features, dtype=np.float64).reshape(count, steps, features)


def test_string_labels_with_an_inferred_or_given_alphabet(tmp_path):
    path = save(tmp_path, X=frames(), lengths=np.array([6, 4, 5]), labels=np.array(["ba", "c", ""]))
    examples, report = load_ctc_npz(path)
    assert examples.alphabet == ["a", "b", "c"] and examples.labels == [(1, 0), (2,), ()]
    assert examples.features.dtype == torch.float32 and examples.features.shape == (3, 6, 2)
    assert examples.lengths.tolist() == [6, 4, 5] and report.read == 3
    given, _ = load_ctc_npz(path, alphabet=["c", "b", "a"])
    assert given.labels == [(1, 2), (0,), ()]
    alphabet = np.array(["x", "a", "b", "c"])
    stored = save(
        tmp_path,
        "with.npz",
        X=frames(),
        lengths=np.array([6, 4, 5]),
        labels=np.array(["ba", "c", "x"]),
        alphabet=alphabet,
    )
    assert load_ctc_npz(stored)[0].labels == [(2, 1), (3,), (0,)]
    subset = examples.subset([2, 0])
    assert subset.labels == [(), (1, 0)] and subset.lengths.tolist() == [5, 6]


def test_label_ids_as_lists_or_padded_with_lengths(tmp_path):
    ids = np.empty(3, dtype=object)
    ids[:] = [[0, 2], [4], []]
    path = save(tmp_path, X=frames(), lengths=np.array([6, 6, 6]), label_ids=ids)
    examples, _ = load_ctc_npz(path)
    assert examples.labels == [(0, 2), (4,), ()] and examples.alphabet == ["0", "1", "2", "3", "4"]
    padded = save(
        tmp_path,
        "padded.npz",
        X=frames(),
        lengths=np.array([6, 6, 6]),
        label_ids=np.array([[0, 2], [4, 9], [9, 9]]),
        label_lengths=np.array([2, 1, 0]),
    )
    assert load_ctc_npz(padded)[0].labels == [(0, 2), (4,), ()]


def test_frames_alone_are_read_when_labels_are_not_required(tmp_path):
    path = save(tmp_path, X=frames(), lengths=np.array([1, 2, 3]))
    examples, _ = load_ctc_npz(path, alphabet=["a"], require_labels=False)
    assert examples.labels is None and examples.alphabet == ["a"]
    with pytest.raises(DataFileError, match="exactly one of the arrays 'labels'"):
        load_ctc_npz(path)


def object_ids(*rows):
    ids = np.empty(len(rows), dtype=object)
    ids[:] = list(rows)
    return ids


GOOD = {"X": frames(), "lengths": np.array([6, 4, 5]), "labels": np.array(["ab", "b", "a"])}


@pytest.mark.parametrize(
    ("changes", "alphabet", "problem"),
    [
        ({"X": None}, None, "missing array 'X'"),
        ({"lengths": None}, None, "missing array 'lengths'"),
        ({"labels": None}, None, "exactly one of the arrays"),
        ({"label_ids": object_ids([0], [1], [0])}, None, "exactly one of the arrays"),
        ({"X": frames()[:, :, 0]}, None, r"array 'X': expected \(N, T, D\), found shape \(3, 6\)"),
        ({"X": np.array([[["a"]]] * 3)}, None, "expected real numbers"),
        (
            {"X": np.where(np.arange(36).reshape(3, 6, 2) == 20, np.nan, 1.0)},
            None,
            "example 1 holds NaN",
        ),
        (
            {"lengths": np.array([6, 7, 5])},
            None,
            r"example 1: expected a length in \[1, T=6\], found 7",
        ),
        (
            {"lengths": np.array([6, 0, 5])},
            None,
            r"example 1: expected a length in \[1, T=6\], found 0",
        ),
        ({"lengths": np.array([6, 4])}, None, "expected 3 integers"),
        ({"lengths": np.array([6.0, 4.0, 5.0])}, None, "expected 3 integers"),
        ({"labels": np.array(["a", "b"])}, None, r"one entry per example \(3\)"),
        ({}, ["a"], r"example 0: symbols \['b'\] are not in the alphabet 'a'"),
        (
            {"labels": None, "label_ids": object_ids([0], [5], [1])},
            ["a", "b"],
            r"example 1: ids \[5\]",
        ),
        ({"labels": None, "label_ids": object_ids([0], [-1], [1])}, None, r"example 1: ids \[-1\]"),
        (
            {"labels": None, "label_ids": object_ids([0], [0.5], [1])},
            None,
            "example 1: expected a list of integers",
        ),
        (
            {"labels": None, "label_ids": np.zeros((3, 2), dtype=int)},
            None,
            "missing array 'label_lengths'",
        ),
        (
            {
                "labels": None,
                "label_ids": np.zeros((3, 2), dtype=int),
                "label_lengths": np.array([1, 3, 0]),
            },
            None,
            r"lengths in \[0, L=2\]",
        ),
        (
            {"labels": np.array(["ab", "aabb", "a"])},
            None,
            "example 1: 4 labels need at least 6 frames",
        ),
    ],
)
def test_malformed_ctc_files_name_the_array_or_example(tmp_path, changes, alphabet, problem):
    arrays = {**GOOD, **changes}
    path = save(tmp_path, **{name: value for name, value in arrays.items() if value is not None})
    with pytest.raises(DataFileError, match=problem) as caught:
        load_ctc_npz(path, alphabet)
    assert str(path) in str(caught.value)


def test_a_file_that_is_not_an_npz_is_refused(tmp_path):
    path = write(tmp_path, "X,lengths\n", "data.npz")
    with pytest.raises(DataFileError, match="expected a NumPy .npz archive"):
        load_ctc_npz(path)


@pytest.mark.parametrize(
    ("labels", "frames_needed"),
    [((), 0), ((1,), 1), ((1, 2, 3), 3), ((1, 1), 3), ((1, 1, 1), 5), ((1, 2, 2, 1, 1), 7)],
)
def test_required_frames_count_a_blank_between_repeats(labels, frames_needed):
    assert required_frames(labels) == frames_needed
