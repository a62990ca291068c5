"""Edit distance and the error rates of decoded sequences."""

from __future__ import annotations

import itertools

import pytest

from rnnkit.decoding.metrics import (
    edit_distance,
    exact_sequence_accuracy,
    label_error_rate,
    sequence_error_rate,
)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "distance"),
    [
        ("", "", 0),
        ("abc", "", 3),
        ("", "ab", 2),
        ("kitten", "sitting", 3),
        ("flaw", "lawn", 2),
        ("123", "123", 0),
        ("1234", "1324", 2),
        ((1, 2, 3), [1, 3], 1),
    ],
)
def test_edit_distance_known_values(reference, hypothesis, distance):
    assert edit_distance(reference, hypothesis) == distance
    assert edit_distance(hypothesis, reference) == distance


def test_edit_distance_is_a_metric_on_short_strings():
    words = [
        "".join(letters) for size in range(4) for letters in itertools.product("ab", repeat=size)
    ]
    for first, second, third in itertools.product(words[:10], repeat=3):
        assert edit_distance(first, third) <= edit_distance(first, second) + edit_distance(
            second, third
        )
        assert (edit_distance(first, second) == 0) == (first == second)
        assert edit_distance(first, second) >= abs(len(first) - len(second))


def test_error_rates_of_a_small_set():
    references = [[1, 2, 3], [4, 5], [6]]
    hypotheses = [[1, 2, 3], [4], [7, 8]]
    # edits: 0 + 1 + 2 over 6 labels; one of three exactly right
    assert label_error_rate(references, hypotheses) == pytest.approx(3 / 6)
    assert sequence_error_rate(references, hypotheses) == pytest.approx(2 / 3)
    assert exact_sequence_accuracy(references, hypotheses) == pytest.approx(1 / 3)
    assert sequence_error_rate(["12", "3"], [(1, 2), "3"]) == pytest.approx(1 / 2)
    assert sequence_error_rate([(1, 2)], [[1, 2]]) == 0.0


def test_label_error_rate_can_exceed_one():
    assert label_error_rate([[1]], [[2, 3, 4]]) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("references", "hypotheses", "message"),
    [
        ([[1]], [], "pair up"),
        ([], [], "at least one sequence"),
        ([[]], [[1]], "at least one label"),
    ],
)
def test_bad_sets_are_refused(references, hypotheses, message):
    with pytest.raises(ValueError, match=message):
        label_error_rate(references, hypotheses)
