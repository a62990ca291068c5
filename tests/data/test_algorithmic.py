"""The reverse and add problems: targets, lengths, padding, determinism."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.algorithmic import (
    BOS,
    EOS,
    PAD,
    draw_examples,
    make_batch,
    vocabulary_for,
)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_reverse_targets_are_the_reversed_strings_within_the_lengths():
    examples = draw_examples("reverse", 300, 2, 6, generator(), alphabet="xyz")
    for source, target in examples:
        assert target == source[::-1] and 2 <= len(source) <= 6 and set(source) <= set("xyz")
    assert {len(source) for source, _ in examples} == {2, 3, 4, 5, 6}


def test_add_targets_are_the_sums_with_operands_of_the_given_digits():
    examples = draw_examples("add", 500, 1, 4, generator())
    digits = set()
    for source, target in examples:
        first, second = source.split("+")
        assert int(target) == int(first) + int(second)
        for operand in (first, second):
            assert operand == str(int(operand)), f"leading zero in {source}"
            digits.add(len(operand))
    assert digits == {1, 2, 3, 4}


def test_drawing_is_deterministic_given_the_generator():
    assert draw_examples("add", 20, 1, 5, generator(3)) == draw_examples(
        "add", 20, 1, 5, generator(3)
    )
    assert draw_examples("add", 20, 1, 5, generator(3)) != draw_examples(
        "add", 20, 1, 5, generator(4)
    )


def test_batches_pad_with_pad_and_frame_targets_with_bos_and_eos():
    vocabulary = vocabulary_for("reverse", "abc")
    assert vocabulary.symbols[:3] == ["<pad>", "<bos>", "<eos>"] and PAD == 0
    batch = make_batch([("abc", "cba"), ("b", "b")], vocabulary)
    a, b, c = vocabulary.encode("abc")
    assert batch.source.tolist() == [[a, b, c], [b, PAD, PAD]]
    assert batch.source_lengths.tolist() == [3, 1] and batch.source_lengths.dtype == torch.long
    assert batch.target_input.tolist() == [[BOS, c, b, a], [BOS, b, PAD, PAD]]
    assert batch.target_output.tolist() == [[c, b, a, EOS], [b, EOS, PAD, PAD]]
    assert batch.target_lengths.tolist() == [4, 2]
    assert vocabulary.decode(batch.target_output[0].tolist()) == "cba"
    assert vocabulary.decode([BOS, a, PAD, EOS, b]) == "a"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: draw_examples("sort", 3, 1, 2, generator()), "problem: expected one of"),
        (lambda: draw_examples("add", 0, 1, 2, generator()), "count: expected a positive int"),
        (lambda: draw_examples("add", 3, 3, 2, generator()), "min_length <= max_length"),
        (lambda: vocabulary_for("reverse", "aa"), "characters: expected distinct"),
        (lambda: vocabulary_for("reverse", "ab").encode("abc"), r"\['c'\] are not in"),
    ],
)
def test_bad_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
