"""CTC decoders against brute-force enumeration of every path on tiny inputs.

With T <= 5 frames and C <= 3 classes every path pi in C^T can be listed: p(l | x) is the sum
of prod_t y_t[pi_t] over the paths that collapse to l. Prefix beam search with a beam wide
enough for every prefix must give each labelling exactly that probability; greedy decoding
must give the collapse of the single best path; torch's ctc_loss must give -log p(l | x).
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rnnkit.decoding.ctc import (
    CharacterNgramScorer,
    collapse,
    ctc_loss,
    greedy_decode,
    prefix_beam_search,
)

SHAPES = [(1, 2), (3, 2), (4, 3), (5, 3), (5, 2)]  # (T, C)
WIDE_BEAM = 400  # more than every prefix of 5 frames over 2 labels (1 + 2 + ... + 32)


def random_log_probs(batch_size: int, steps: int, classes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(batch_size, steps, classes, generator=generator, dtype=torch.float64)
    return logits.log_softmax(dim=-1)


def brute_force(log_probs: torch.Tensor, blank: int = 0) -> dict[tuple[int, ...], float]:
    """Labelling -> p(l | x) by enumerating every path of ``log_probs (T, C)``."""
    steps, classes = log_probs.shape
    probabilities: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(classes), repeat=steps):
        probability = math.exp(sum(float(log_probs[t, label]) for t, label in enumerate(path)))
        labelling = collapse(path, blank)
        probabilities[labelling] = probabilities.get(labelling, 0.0) + probability
    return probabilities


def best_path(log_probs: torch.Tensor) -> tuple[int, ...]:
    steps, classes = log_probs.shape
    return max(
        itertools.product(range(classes), repeat=steps),
        key=lambda path: sum(float(log_probs[t, label]) for t, label in enumerate(path)),
    )


def test_collapse_merges_repeats_then_drops_blanks():
    assert collapse([1, 1, 0, 1, 2, 2, 0, 0]) == (1, 1, 2)
    assert collapse([0, 0]) == ()
    assert collapse([2, 2, 1], blank=2) == (1,)


@pytest.mark.parametrize("blank", [0, 1])
@pytest.mark.parametrize(("steps", "classes"), SHAPES, ids=[f"T{t}-C{c}" for t, c in SHAPES])
def test_wide_prefix_beam_search_is_exact(steps, classes, blank):
    log_probs = random_log_probs(3, steps, classes, seed=steps * 10 + classes)
    beams = prefix_beam_search(log_probs, beam_width=WIDE_BEAM, blank=blank)
    for sequence, beam in zip(log_probs, beams, strict=True):
        exact = brute_force(sequence, blank)
        found = {hypothesis.labels: math.exp(hypothesis.log_probability) for hypothesis in beam}
        assert set(found) == set(exact), "the wide beam must hold every reachable labelling"
        for labelling, probability in exact.items():
            assert found[labelling] == pytest.approx(probability, rel=1e-9, abs=1e-12), labelling
        best = max(exact, key=exact.get)
        assert beam[0].labels == best
        assert beam[0].score == pytest.approx(math.log(exact[best]), rel=1e-9)
        assert sum(exact.values()) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("beam_width", [1, 2, 3])
@pytest.mark.parametrize(("steps", "classes"), SHAPES, ids=[f"T{t}-C{c}" for t, c in SHAPES])
def test_narrow_beam_scores_are_probabilities_at_most_exact(steps, classes, beam_width):
    log_probs = random_log_probs(4, steps, classes, seed=7 + steps)
    beams = prefix_beam_search(log_probs, beam_width=beam_width)
    for sequence, beam in zip(log_probs, beams, strict=True):
        exact = brute_force(sequence)
        assert len(beam) <= beam_width
        assert sum(math.exp(hypothesis.score) for hypothesis in beam) <= 1.0 + 1e-12
        assert len({hypothesis.labels for hypothesis in beam}) == len(beam)
        for hypothesis in beam:
            assert math.exp(hypothesis.log_probability) <= exact[hypothesis.labels] + 1e-12


@pytest.mark.parametrize(("steps", "classes"), SHAPES, ids=[f"T{t}-C{c}" for t, c in SHAPES])
def test_greedy_is_the_collapse_of_the_best_path(steps, classes):
    log_probs = random_log_probs(4, steps, classes, seed=100 + steps)
    decoded = greedy_decode(log_probs)
    for sequence, labels in zip(log_probs, decoded, strict=True):
        assert labels == collapse(best_path(sequence))


@pytest.mark.parametrize(("steps", "classes"), SHAPES, ids=[f"T{t}-C{c}" for t, c in SHAPES])
def test_torch_ctc_loss_is_minus_log_of_the_enumerated_probability(steps, classes):
    log_probs = random_log_probs(1, steps, classes, seed=200 + steps)
    exact = brute_force(log_probs[0])
    for labelling, probability in exact.items():
        if not labelling:
            continue  # torch's targets need at least one label in a (B, L) tensor
        targets = torch.tensor([labelling])
        loss = ctc_loss(log_probs, torch.tensor([steps]), targets, torch.tensor([len(labelling)]))
        assert float(loss) * len(labelling) == pytest.approx(-math.log(probability), rel=1e-9)


def test_ctc_loss_averages_over_labels_and_has_gradients():
    log_probs = random_log_probs(2, 5, 3, seed=3).requires_grad_()
    targets = torch.tensor([[1, 2], [2, 0]])
    target_lengths = torch.tensor([2, 1])
    loss = ctc_loss(log_probs, torch.tensor([5, 4]), targets, target_lengths)
    first = brute_force(log_probs[0].detach())[(1, 2)]
    second = brute_force(log_probs[1, :4].detach())[(2,)]
    expected = -(math.log(first) + math.log(second)) / 3
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-9)
    loss.backward()
    assert torch.isfinite(log_probs.grad).all() and log_probs.grad.abs().sum() > 0


def test_lengths_are_respected():
    log_probs = random_log_probs(2, 5, 3, seed=11)
    lengths = torch.tensor([5, 3])
    greedy = greedy_decode(log_probs, lengths)
    beams = prefix_beam_search(log_probs, lengths, beam_width=WIDE_BEAM)
    for index in range(2):
        sequence = log_probs[index, : lengths[index]]
        assert greedy[index] == collapse(best_path(sequence))
        exact = brute_force(sequence)
        assert beams[index][0].labels == max(exact, key=exact.get)
        assert len(beams[index]) == len(exact)
    empty = prefix_beam_search(log_probs, torch.tensor([0, 0]))
    assert [beam[0].labels for beam in empty] == [(), ()]
    assert empty[0][0].log_probability == 0.0


def test_scorer_hook_changes_the_result():
    # frames that clearly read "1 2"
    probabilities = torch.tensor([[[0.05, 0.9, 0.05], [0.6, 0.2, 0.2], [0.1, 0.1, 0.8]]])
    log_probs = probabilities.log().double()
    assert prefix_beam_search(log_probs)[0][0].labels == (1, 2)

    def forbid_two(prefix: tuple[int, ...], next_label: int) -> float:
        return float("-inf") if next_label == 2 else 0.0

    beam = prefix_beam_search(log_probs, scorer=forbid_two)[0]
    assert beam[0].labels == (1,)
    assert all(2 not in hypothesis.labels for hypothesis in beam if hypothesis.score > -math.inf)
    calls = []

    def recording(prefix: tuple[int, ...], next_label: int) -> float:
        calls.append((prefix, next_label))
        return -1.0

    beam = prefix_beam_search(log_probs, scorer=recording, scorer_weight=0.5, insertion_bonus=0.2)[
        0
    ]
    assert ((), 1) in calls and ((1,), 2) in calls
    top = beam[0]
    assert top.score == pytest.approx(top.log_probability + len(top.labels) * (0.5 * -1.0 + 0.2))


def test_label_threshold_skips_unlikely_labels():
    log_probs = random_log_probs(2, 5, 3, seed=5)
    exact = prefix_beam_search(log_probs, beam_width=WIDE_BEAM)
    pruned = prefix_beam_search(log_probs, beam_width=WIDE_BEAM, label_threshold=-1.0)
    for full, kept in zip(exact, pruned, strict=True):
        assert len(kept) < len(full)
        assert kept[0].log_probability <= full[0].log_probability + 1e-12


def test_character_ngram_scorer_is_add_k_smoothed():
    scorer = CharacterNgramScorer(order=2, labels=[1, 2, 3], smoothing=1.0)
    scorer.fit([[1, 2], [1, 2], [1, 3]])
    # after "1": counts 2 -> 2, 3 -> 1, of 3; add-one over 3 labels: (2+1)/(3+3)
    assert scorer((1,), 2) == pytest.approx(math.log(3 / 6))
    assert scorer((2, 1), 3) == pytest.approx(math.log(2 / 6))
    # at the start: "1" three times of 3
    assert scorer((), 1) == pytest.approx(math.log(4 / 6))
    total = sum(math.exp(scorer((1,), label)) for label in (1, 2, 3))
    assert total == pytest.approx(1.0)
    unigram = CharacterNgramScorer(order=1, labels=[1, 2]).fit([[1, 1, 2]])
    assert unigram((2, 2), 1) == pytest.approx(math.log(3 / 5))


def test_ngram_scorer_steers_the_beam():
    # "1 1" is a little more likely than "1 2"; a bigram model that has only seen "1 2" wins
    probabilities = torch.tensor([[[0.1, 0.9, 0.0], [1.0, 0.0, 0.0], [0.1, 0.5, 0.4]]])
    log_probs = probabilities.clamp_min(1e-6).log()
    assert prefix_beam_search(log_probs, beam_width=4)[0][0].labels == (1, 1)
    scorer = CharacterNgramScorer(order=2, labels=[1, 2]).fit([[1, 2]] * 20)
    beam = prefix_beam_search(log_probs, beam_width=4, scorer=scorer, scorer_weight=1.0)[0]
    assert beam[0].labels == (1, 2)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: greedy_decode(torch.zeros(2, 3)), "log_probs must be"),
        (lambda: greedy_decode(torch.zeros(1, 3, 2), blank=2), "blank must be"),
        (lambda: greedy_decode(torch.zeros(1, 3, 2), torch.tensor([4])), "lengths must lie"),
        (lambda: greedy_decode(torch.zeros(1, 3, 2), torch.tensor([1, 2])), "lengths must be"),
        (lambda: prefix_beam_search(torch.zeros(1, 3, 2), beam_width=0), "beam_width"),
        (lambda: CharacterNgramScorer(0, [1]), "order"),
        (lambda: CharacterNgramScorer(2, [1], smoothing=0), "smoothing"),
        (lambda: CharacterNgramScorer(2, [1]).fit([[2]]), "label 2"),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()
