"""ICLL: the automata, their languages, the allowed sets, the splits and the n-gram baseline."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data.benchmarks import icll
from rnnkit.data.benchmarks.batches import is_test_identity, split_generator
from rnnkit.data.benchmarks.icll import SEPARATOR, ICLLConfig

SMALL = ICLLConfig(sequence_length=96)


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch() -> icll.ICLLBatch:
    return icll.draw_batch(SMALL, 24, generator())


def walk(transitions: list[list[int]], tokens: list[int]) -> list[int]:
    """The state after each token (a separator restarts at 0); fails off the automaton."""
    state, states = 0, []
    for token in tokens:
        state = 0 if token == SEPARATOR else transitions[state][token]
        assert state >= 0, f"token {token} has no edge"
        states.append(state)
    return states


def test_shapes_and_dtypes(batch):
    vocabulary = SMALL.vocabulary_size
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (24, 96)
    assert batch.allowed.shape == batch.distribution.shape == (24, 96, vocabulary)
    assert batch.transitions.shape == batch.probabilities.shape == (24, 13, vocabulary)
    assert batch.inputs.dtype == torch.long and batch.mask.dtype == torch.bool
    assert batch.allowed.dtype == torch.bool and batch.distribution.dtype == torch.float32


def test_automata_follow_regbench(batch):
    for transitions, probabilities in zip(batch.transitions, batch.probabilities, strict=True):
        assert (transitions[:, SEPARATOR] == -1).all()
        used_states = [s for s in range(13) if (transitions[s] >= 0).any()]
        num_states = len(used_states) - 1
        assert used_states == list(range(num_states + 1)) and 4 <= num_states <= 12
        letters = set((transitions >= 0).nonzero()[:, 1].tolist())
        assert len(letters) <= 18
        for state in used_states:
            next_states = transitions[state][transitions[state] >= 0].tolist()
            assert 1 <= len(next_states) <= 4 and len(set(next_states)) == len(next_states)
            assert all(1 <= target <= num_states for target in next_states)
            edge = transitions[state] >= 0
            assert float(probabilities[state].sum()) == pytest.approx(1.0, abs=1e-6)
            assert (probabilities[state][edge] > 0).all() and (
                probabilities[state][~edge] == 0
            ).all()


def test_sampled_strings_are_in_the_language_and_separated(batch):
    for row in range(24):
        tokens = [int(batch.inputs[row, 0]), *batch.targets[row].tolist()]
        assert tokens[0] == SEPARATOR and batch.inputs[row, 1:].tolist() == tokens[1:-1]
        walk(batch.transitions[row].tolist(), tokens)  # fails on a string off the automaton
        separators = [t for t, token in enumerate(tokens) if token == SEPARATOR] + [len(tokens)]
        lengths = [
            end - start - 1 for start, end in zip(separators[:-1], separators[1:], strict=True)
        ]
        assert all(1 <= length <= 20 for length in lengths[:-1]) and lengths[-1] <= 20
        assert len(lengths) >= 97 // 21


def test_allowed_sets_and_distributions_follow_the_state(batch):
    for row in range(24):
        transitions = batch.transitions[row]
        states = walk(transitions.tolist(), batch.inputs[row].tolist())
        assert torch.equal(batch.allowed[row], transitions[states] >= 0)
        assert torch.equal(batch.distribution[row], batch.probabilities[row][states])
    scored = batch.allowed.gather(2, batch.targets.unsqueeze(2)).squeeze(2)
    assert scored[batch.mask].all() and torch.equal(batch.mask, batch.targets != SEPARATOR)


def test_uniform_probabilities_are_uniform_over_edges():
    config = ICLLConfig(transition_probabilities="uniform", sequence_length=8)
    batch = icll.draw_batch(config, 4, generator())
    edges = batch.transitions >= 0
    counts = edges.sum(-1, keepdim=True).clamp_min(1)
    assert torch.allclose(batch.probabilities, edges / counts)


def test_splits_use_disjoint_automata_and_are_deterministic():
    config = ICLLConfig(sequence_length=8)
    train = icll.draw_batch(config, 40, split_generator(0, "train"))
    test = icll.draw_batch(config, 40, split_generator(0, "test"), "test")
    assert not is_test_identity(train.transitions.flatten(1)).any()
    assert is_test_identity(test.transitions.flatten(1)).all()
    again = icll.draw_batch(config, 40, split_generator(0, "train"))
    assert all(torch.equal(a, b) for a, b in zip(train, again, strict=True))


def test_ngram_counts_in_context_with_backoff():
    inputs = torch.tensor([[0, 1, 2, 1, 2, 1]])
    bigram = icll.ngram_distribution(inputs, 2, 3)[0]
    assert bigram.tolist() == [
        pytest.approx([1 / 3] * 3),  # nothing seen: uniform
        [0.0, 1.0, 0.0],  # 1 never followed anything yet: unigram of x[1..1]
        [0.0, 0.5, 0.5],  # 2 unseen as a context: unigram of x[1..2]
        [0.0, 0.0, 1.0],  # 1 was followed by 2
        [0.0, 1.0, 0.0],  # 2 was followed by 1
        [0.0, 0.0, 1.0],
    ]
    trigram = icll.ngram_distribution(torch.tensor([[3, 1, 2, 0, 1, 2, 3, 1, 2]]), 3, 4)[0]
    assert trigram[4].tolist() == [0.0, 0.0, 1.0, 0.0]  # (0, 1) unseen: back off to 1 -> 2
    assert trigram[8].tolist() == [0.5, 0.0, 0.0, 0.5]  # (1, 2) was followed by 0 and by 3


def test_metrics_score_the_true_distribution_perfectly(batch):
    assert icll.allowed_accuracy(batch.distribution.argmax(-1), batch) == 1.0
    assert icll.total_variation(batch.distribution, batch) == pytest.approx(0.0, abs=1e-6)
    separators = torch.zeros_like(batch.inputs)
    assert icll.allowed_accuracy(separators, batch) == 0.0
    far = (~batch.allowed).float()
    assert icll.total_variation(far, batch) == pytest.approx(1.0)
    results = [icll.ngram_baseline(batch, order, SMALL.vocabulary_size) for order in (1, 2, 3)]
    assert all(0.0 < r["allowed_accuracy"] < 1.0 and 0 < r["total_variation"] < 1 for r in results)
    assert results[2]["allowed_accuracy"] > results[0]["allowed_accuracy"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ICLLConfig(max_states=3), "max_states: expected an int >= 4, got 3"),
        (lambda: ICLLConfig(max_alphabet_size=21), r"max_alphabet_size: expected an int in 4..20"),
        (lambda: ICLLConfig(max_transitions=5), r"max_transitions: expected an int in 1..4, got 5"),
        (lambda: ICLLConfig(transition_probabilities="zipf"), "transition_probabilities"),
        (lambda: ICLLConfig(min_string_length=0), "min_string_length: expected an int >= 1"),
        (lambda: ICLLConfig(sequence_length=1), "sequence_length: expected an int >= 2"),
        (lambda: icll.ngram_distribution(torch.zeros(1, 3, dtype=torch.long), 4, 3), "order"),
    ],
)
def test_bad_options_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()
