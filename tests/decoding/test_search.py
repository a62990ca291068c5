"""Greedy decoding and beam search over step functions: toy tables and a small random
recurrent step, batched and one source at a time."""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import pytest
import torch
from torch import Tensor

from rnnkit.decoding.search import beam_search, greedy_search, select_rows

PAD, BOS, EOS, A, B = 0, 1, 2, 3, 4


class Pair(NamedTuple):
    first: Tensor
    second: Tensor


class RandomStep:
    """A small random recurrent decoder: a dict state holding a tensor and a NamedTuple."""

    def __init__(self, vocabulary: int = 6, hidden: int = 5, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.embedding = torch.randn(vocabulary, hidden, generator=generator, dtype=torch.float64)
        self.recurrent = torch.randn(hidden, hidden, generator=generator, dtype=torch.float64)
        self.output = 2 * torch.randn(hidden, vocabulary, generator=generator, dtype=torch.float64)

    def initial_state(self, batch_size: int, seed: int = 1) -> dict:
        generator = torch.Generator().manual_seed(seed)
        hidden = torch.randn(batch_size, self.recurrent.shape[0], generator=generator).double()
        return {"hidden": hidden, "pair": Pair(hidden.clone(), torch.arange(batch_size))}

    def __call__(self, tokens: Tensor, state: dict) -> tuple[Tensor, dict]:
        hidden = torch.tanh(self.embedding[tokens] + state["hidden"] @ self.recurrent)
        log_probs = torch.log_softmax(hidden @ self.output, dim=-1)
        return log_probs, {"hidden": hidden, "pair": state["pair"]}


def table_step(table: dict[int, dict[int, float]], vocabulary: int = 5):
    """A step whose next-token probabilities depend only on the previous token."""

    def step(tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        rows = []
        for token in tokens.tolist():
            probabilities = torch.full((vocabulary,), 1e-9, dtype=torch.float64)
            for next_token, probability in table.get(token, {EOS: 1.0}).items():
                probabilities[next_token] = probability
            rows.append(probabilities.log())
        return torch.stack(rows), state + 1

    return step


def test_select_rows_reorders_nested_states():
    state = {
        "pair": Pair(torch.arange(4.0), torch.arange(8).view(4, 2)),
        "list": [torch.arange(4), (torch.ones(4, 3), None)],
    }
    index = torch.tensor([2, 2, 0])
    selected = select_rows(state, index)
    assert isinstance(selected["pair"], Pair) and isinstance(selected["list"][1], tuple)
    assert selected["pair"].first.tolist() == [2.0, 2.0, 0.0]
    assert selected["pair"].second.tolist() == [[4, 5], [4, 5], [0, 1]]
    assert selected["list"][0].tolist() == [2, 2, 0] and selected["list"][1][1] is None
    with pytest.raises(TypeError, match="found a str"):
        select_rows({"name": "x"}, index)


def test_beam_width_one_is_greedy():
    step = RandomStep(seed=3)
    greedy = greedy_search(step, step.initial_state(4), 4, BOS, EOS, max_length=12)
    for alpha in (0.0, 0.7):
        beam = beam_search(step, step.initial_state(4), 4, BOS, EOS, 12, 1, alpha).best()
        assert torch.equal(beam.tokens, greedy.tokens), f"alpha {alpha}"
        assert torch.equal(beam.lengths, greedy.lengths)
        torch.testing.assert_close(beam.log_probs, greedy.log_probs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("width", [2, 3, 5])
def test_batched_beam_search_equals_one_source_at_a_time(width):
    step = RandomStep(seed=width)
    batched = beam_search(step, step.initial_state(5), 5, BOS, EOS, 10, width, 0.6)
    for source in range(5):
        state = select_rows(step.initial_state(5), torch.tensor([source]))
        alone = beam_search(step, state, 1, BOS, EOS, 10, width, 0.6)
        length = alone.tokens.shape[-1]
        assert torch.equal(batched.tokens[source, :, :length], alone.tokens[0])
        assert bool((batched.tokens[source, :, length:] == PAD).all())
        assert torch.equal(batched.lengths[source], alone.lengths[0])
        torch.testing.assert_close(batched.scores[source], alone.scores[0], rtol=0, atol=1e-12)


def test_first_step_does_not_fill_the_beam_with_copies():
    step = RandomStep(seed=1)
    result = beam_search(step, step.initial_state(2), 2, BOS, EOS, 6, 4)
    for source in range(2):
        rows = {tuple(row) for row in result.tokens[source].tolist()}
        assert len(rows) == 4, f"source {source} has duplicate hypotheses: {rows}"
    assert bool((result.scores[:, :-1] >= result.scores[:, 1:]).all()), "not sorted best first"


def test_beam_search_finds_the_exact_best_sequence_with_a_wide_beam():
    step = RandomStep(vocabulary=4, seed=7)
    result = beam_search(step, step.initial_state(1), 1, BOS, EOS, 3, beam_width=64).best()
    best_score, best_sequence = -math.inf, None
    for length in (1, 2, 3):
        for middle in itertools.product((0, 1, 3), repeat=length - 1):
            for last in (0, 1, 3, EOS) if length == 3 else (EOS,):
                sequence = [*middle, last]
                state, total, token = step.initial_state(1), 0.0, torch.tensor([BOS])
                for value in sequence:
                    log_probs, state = step(token, state)
                    total += float(log_probs[0, value])
                    token = torch.tensor([value])
                if total > best_score:
                    best_score, best_sequence = total, sequence
    assert result.tokens[0, : result.lengths[0]].tolist() == best_sequence
    assert math.isclose(float(result.log_probs[0]), best_score, abs_tol=1e-12)


def test_beam_is_at_least_as_likely_as_greedy():
    step = RandomStep(seed=11)
    greedy = greedy_search(step, step.initial_state(6), 6, BOS, EOS, 8)
    beam = beam_search(step, step.initial_state(6), 6, BOS, EOS, 8, beam_width=4).best()
    assert bool((beam.log_probs >= greedy.log_probs - 1e-12).all())


def test_finished_sequences_end_with_eos_then_pad():
    table = {BOS: {A: 0.6, EOS: 0.4}, A: {A: 0.2, EOS: 0.8}}
    state = torch.zeros(3)
    greedy = greedy_search(table_step(table), state, 3, BOS, EOS, 10)
    assert greedy.tokens.tolist() == [[A, EOS]] * 3 and greedy.lengths.tolist() == [2] * 3
    beam = beam_search(table_step(table), state, 3, BOS, EOS, 10, beam_width=3)
    # finished after 1, 2 and 3 tokens; the search stopped when all three were finished
    assert beam.tokens[0].tolist() == [[A, EOS, PAD], [EOS, PAD, PAD], [A, A, EOS]]
    assert beam.lengths[0].tolist() == [2, 1, 3]
    expected = [math.log(0.48), math.log(0.4), math.log(0.6 * 0.2 * 0.8)]
    torch.testing.assert_close(beam.log_probs[0], torch.tensor(expected, dtype=torch.float64))


def test_max_length_stops_sequences_without_eos():
    table = {BOS: {A: 1.0}, A: {A: 0.9, B: 0.1}, B: {A: 1.0}}
    greedy = greedy_search(table_step(table), torch.zeros(2), 2, BOS, EOS, max_length=4)
    assert greedy.tokens.tolist() == [[A] * 4] * 2 and greedy.lengths.tolist() == [4, 4]
    beam = beam_search(table_step(table), torch.zeros(2), 2, BOS, EOS, 4, beam_width=2)
    assert beam.tokens.shape == (2, 2, 4) and bool((beam.lengths == 4).all())
    assert bool((beam.tokens != EOS).all())


def test_length_normalization_changes_the_choice():
    # [eos] has p = 0.45; [a, eos] has p = 0.55 * 0.7 = 0.385 but a better average per token
    table = {BOS: {EOS: 0.45, A: 0.55}, A: {EOS: 0.7, B: 0.3}}
    step = table_step(table)
    raw = beam_search(step, torch.zeros(1), 1, BOS, EOS, 5, 2, length_penalty=0.0).best()
    average = beam_search(step, torch.zeros(1), 1, BOS, EOS, 5, 2, length_penalty=1.0)
    assert raw.tokens[0, : raw.lengths[0]].tolist() == [EOS]
    assert average.tokens[0, 0, : average.lengths[0, 0]].tolist() == [A, EOS]
    expected = (math.log(0.55) + math.log(0.7)) / 2
    assert math.isclose(float(average.scores[0, 0]), expected, rel_tol=1e-9)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"beam_width": 0}, "beam_width: expected a positive int, got 0"),
        ({"max_length": 0}, "max_length: expected a positive int"),
        ({"length_penalty": -1.0}, "length_penalty: expected alpha >= 0"),
    ],
)
def test_bad_arguments_raise(arguments, message):
    step = RandomStep()
    options = {"max_length": 5, "beam_width": 2, "length_penalty": 0.0, **arguments}
    with pytest.raises(ValueError, match=message):
        beam_search(step, step.initial_state(2), 2, BOS, EOS, **options)


def test_a_step_with_the_wrong_number_of_rows_is_named():
    def step(tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return torch.zeros(1, 5), state

    with pytest.raises(ValueError, match=r"expected log-probabilities of shape \(3, vocabulary\)"):
        greedy_search(step, torch.zeros(3), 3, BOS, EOS, 4)
