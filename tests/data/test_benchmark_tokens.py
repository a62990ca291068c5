"""MQAR and the group word problems: answers from the sequence, splits, tables, validation."""

from __future__ import annotations

import itertools

import pytest
import torch

from rnnkit.data.benchmarks import mqar, state_tracking
from rnnkit.data.benchmarks.batches import is_test_identity, split_generator
from rnnkit.data.benchmarks.mqar import MQARConfig
from rnnkit.data.benchmarks.state_tracking import StateTrackingConfig


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rows(tensor: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(row) for row in tensor.tolist()}


# --- MQAR -------------------------------------------------------------------------------------

SMALL_MQAR = MQARConfig(vocabulary_size=64, sequence_length=48, num_pairs=6)


def mqar_reference(inputs: list[int], num_pairs: int) -> dict[int, int]:
    """Query position -> answer: a key after the context, looked up in the pairs."""
    bound = {inputs[2 * index]: inputs[2 * index + 1] for index in range(num_pairs)}
    return {
        position: bound[token]
        for position, token in enumerate(inputs)
        if position >= 2 * num_pairs and token in bound
    }


@pytest.mark.parametrize("zipf_exponent", [0.0, 1.5])
@pytest.mark.parametrize("random_non_queries", [False, True])
def test_mqar_answers_are_the_values_bound_to_the_queried_keys(random_non_queries, zipf_exponent):
    config = MQARConfig(
        64, 48, 6, random_non_queries=random_non_queries, zipf_exponent=zipf_exponent
    )
    batch = mqar.draw_batch(config, 200, generator())
    assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (200, 48)
    assert batch.inputs.dtype == torch.long and batch.mask.dtype == torch.bool
    for inputs, targets, mask in zip(*(t.tolist() for t in batch), strict=True):
        keys, values = inputs[0:12:2], inputs[1:12:2]
        assert len(set(keys)) == 6 and len(set(values)) == 6
        assert all(1 <= key < 32 for key in keys) and all(32 <= value < 64 for value in values)
        scored = {position: targets[position] for position in range(48) if mask[position]}
        assert len(scored) == 6
        reference = mqar_reference(inputs, 6)
        assert scored.items() <= reference.items()
        if not random_non_queries:
            assert scored == reference
            assert all(
                token == 0
                for position, token in enumerate(inputs[12:], 12)
                if position not in scored
            )
        assert sorted(inputs[position] for position in scored) == sorted(keys)
        assert all((position - 12) % 2 == 0 for position in scored)


def test_mqar_power_a_pulls_queries_toward_the_context():
    def mean_gap(power_a: float) -> float:
        config = MQARConfig(256, 256, 4, power_a=power_a, random_non_queries=False)
        positions = mqar.draw_batch(config, 300, generator()).mask.nonzero()[:, 1]
        return float(positions.double().mean())

    assert mean_gap(0.01) < mean_gap(1.0) - 40  # uniform slots: mean near the middle, 132


def test_mqar_is_deterministic_and_its_splits_are_disjoint():
    first = mqar.draw_batch(SMALL_MQAR, 50, split_generator(3, "train"))
    again = mqar.draw_batch(SMALL_MQAR, 50, split_generator(3, "train"))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = mqar.draw_batch(SMALL_MQAR, 50, split_generator(4, "train"))
    assert not torch.equal(first.inputs, other.inputs)
    test = mqar.draw_batch(SMALL_MQAR, 50, split_generator(3, "test"), split="test")
    assert not is_test_identity(first.inputs).any() and is_test_identity(test.inputs).all()
    assert not rows(first.inputs) & rows(test.inputs)


# --- state tracking ---------------------------------------------------------------------------


def apply_by_hand(word: list[tuple[int, ...]], degree: int) -> tuple[int, ...]:
    """Move the points one permutation at a time: where each point ends after the whole word."""
    positions = list(range(degree))
    for permutation in word:
        positions = [permutation[point] for point in positions]
    return tuple(positions)


def test_s3_composition_by_hand():
    swap01, swap12 = (1, 0, 2), (0, 2, 1)
    # 0 -> 1 -> 2, 1 -> 0 -> 0, 2 -> 2 -> 1: first swap 0 and 1, then swap 1 and 2.
    assert state_tracking.compose(swap01, swap12) == (2, 0, 1)
    assert state_tracking.compose(swap12, swap01) == (1, 2, 0)
    elements = state_tracking.group_elements("s3")
    table = state_tracking.multiplication_table("s3")
    assert elements[0] == (0, 1, 2)
    assert elements[int(table[elements.index(swap01), elements.index(swap12)])] == (2, 0, 1)


@pytest.mark.parametrize(
    ("group", "order"),
    [("parity", 2), ("cyclic", 7), ("s3", 6), ("s4", 24), ("s5", 120), ("a5", 60)],
)
def test_tables_are_groups_matching_composition(group, order):
    elements = state_tracking.group_elements(group, 7)
    table = state_tracking.multiplication_table(group, 7)
    assert len(elements) == len(set(elements)) == order and table.shape == (order, order)
    for a, b in itertools.islice(itertools.product(range(order), repeat=2), 0, None, 7):
        assert elements[int(table[a, b])] == apply_by_hand(
            [elements[a], elements[b]], len(elements[0])
        )
    for row in table.tolist():  # Latin square: every product exists once per row
        assert sorted(row) == list(range(order))
    parities = {
        sum(p[i] > p[j] for i, j in itertools.combinations(range(len(p)), 2)) % 2 for p in elements
    }
    if group in ("s3", "s4", "s5", "a5"):  # A5 is the even half of S5
        assert parities == ({0} if group == "a5" else {0, 1})


@pytest.mark.parametrize(
    ("group", "order", "abelian"),
    [
        ("parity", 2, True),
        ("cyclic", 7, True),
        ("s3", 6, False),
        ("s4", 24, False),
        ("s5", 120, False),
    ],
)
def test_tables_satisfy_the_group_axioms(group, order, abelian):
    """Closure, identity (token 0), inverses and associativity, checked on the table alone;
    S3, S4 and S5 are not commutative (a commutative table would make the task much easier)."""
    table = state_tracking.multiplication_table(group, 7).tolist()
    assert all(0 <= product < order for row in table for product in row)  # closure
    assert table[0] == list(range(order)) and [row[0] for row in table] == list(range(order))
    for a, row in enumerate(table):  # a right inverse of a that is also its left inverse
        column = [other[a] for other in table]
        assert 0 in row and row.index(0) == column.index(0)
    triples = itertools.product(range(order), repeat=3)
    for a, b, c in itertools.islice(triples, 0, None, 1 if order <= 24 else 997):
        assert table[table[a][b]][c] == table[a][table[b][c]]
    commutes = all(table[a][b] == table[b][a] for a in range(order) for b in range(order))
    assert commutes == abelian


@pytest.mark.parametrize("group", state_tracking.GROUPS)
def test_targets_are_the_running_products_by_hand(group):
    config = StateTrackingConfig(group=group, cyclic_order=6, train_length=10)
    elements = state_tracking.group_elements(group, 6)
    for split, length in (("train", 10), ("test", 3), ("test", 40)):
        batch = state_tracking.draw_batch(config, 20, length, generator(), split)
        assert batch.inputs.shape == (20, length) and bool(batch.mask.all())
        for inputs, targets in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
            word = [elements[token] for token in inputs]
            expected = [apply_by_hand(word[: t + 1], len(word[0])) for t in range(length)]
            assert [elements[token] for token in targets] == expected


def test_parity_targets_count_ones():
    batch = state_tracking.draw_batch(StateTrackingConfig(train_length=30), 50, 30, generator())
    assert torch.equal(batch.targets, batch.inputs.cumsum(1) % 2)


@pytest.mark.parametrize(("group", "length"), [("parity", 1), ("parity", 5), ("s3", 4), ("s5", 4)])
def test_word_problem_splits_are_disjoint_and_cover_small_spaces(group, length):
    config = StateTrackingConfig(group=group, train_length=8)
    train = state_tracking.draw_batch(config, 400, length, split_generator(0, "train"))
    test = state_tracking.draw_batch(config, 400, length, split_generator(0, "test"), "test")
    assert rows(train.inputs) and rows(test.inputs) and not rows(train.inputs) & rows(test.inputs)
    if group == "parity":  # every word of the tiny space lies in exactly one split
        assert len(rows(train.inputs) | rows(test.inputs)) == 2**length


def test_word_problem_lengths_follow_train_and_test_limits():
    config = StateTrackingConfig(group="a5", train_length=5)
    assert config.max_test_length == 20
    assert list(state_tracking.evaluation_lengths(config)) == list(range(1, 21))
    state_tracking.draw_batch(config, 2, 20, generator(), "test")
    with pytest.raises(ValueError, match=r"length: expected an int in 1..5, got 6"):
        state_tracking.draw_batch(config, 2, 6, generator(), "train")
    with pytest.raises(ValueError, match=r"length: expected an int in 1..20, got 21"):
        state_tracking.draw_batch(config, 2, 21, generator(), "test")
    first = state_tracking.draw_batch(config, 8, 5, generator(1))
    assert torch.equal(first.inputs, state_tracking.draw_batch(config, 8, 5, generator(1)).inputs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: MQARConfig(sequence_length=31), "sequence_length: expected an even int, got 31"),
        (
            lambda: MQARConfig(sequence_length=64, num_pairs=17),
            r"num_pairs: expected an int in 1..16",
        ),
        (
            lambda: MQARConfig(vocabulary_size=20, num_pairs=16),
            r"vocabulary_size: expected an int >= 34",
        ),
        (lambda: MQARConfig(power_a=0.0), r"power_a: expected a number in \(0.0, 1.0\]"),
        (lambda: MQARConfig(random_non_queries=1), "random_non_queries: expected a bool"),
        (lambda: StateTrackingConfig(group="s6"), r"group: expected one of \('parity'"),
        (lambda: StateTrackingConfig(cyclic_order=1), "cyclic_order: expected an int >= 2"),
        (lambda: StateTrackingConfig(train_length=0), "train_length: expected an int >= 1"),
        (lambda: StateTrackingConfig(test_length_factor=True), "test_length_factor"),
        (lambda: mqar.draw_batch(MQARConfig(), 0, generator()), "batch_size: expected an int >= 1"),
        (lambda: mqar.draw_batch(MQARConfig(), 2, generator(), "valid"), "split: expected one of"),
    ],
)
def test_bad_options_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_mqar_zipf_vocabulary_draws_low_ids_often_and_the_tail_rarely():
    counts = {}
    for exponent in (0.0, 1.0):
        config = MQARConfig(64, 48, 6, random_non_queries=False, zipf_exponent=exponent)
        batch = mqar.draw_batch(config, 2000, generator())
        values = batch.targets[batch.mask]
        counts[exponent] = torch.bincount(values - 32, minlength=32).double()
        tail_share = float(config.tail_value(values).double().mean())
        if exponent == 0.0:
            assert tail_share == pytest.approx(0.5, abs=0.03)
        else:
            assert tail_share < 0.3
    uniform, zipf = counts[0.0], counts[1.0]
    assert uniform.max() / uniform.min() < 1.3
    assert bool((zipf[:-1] >= 0.8 * zipf[1:]).all())  # falling with the rank, up to noise
    assert zipf[0] > 5 * zipf[-1]
    # drawn one by one among those left: weight 1 against 1/2 for the first of two
    first = mqar._distinct(20000, 2, 1, generator(), 1.0)
    assert float((first == 0).double().mean()) == pytest.approx(2 / 3, abs=0.02)


def test_mqar_zipf_exponent_is_checked():
    with pytest.raises(ValueError, match=r"zipf_exponent: expected a number in \[0.0, 10.0\]"):
        MQARConfig(64, 48, 6, zipf_exponent=-1.0)
