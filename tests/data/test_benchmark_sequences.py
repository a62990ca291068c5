"""Passkey, copying, adding and sequential digits: answers from the sequence, splits, options."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits

from rnnkit.data.benchmarks import adding, copying, passkey, sequential_digits
from rnnkit.data.benchmarks.adding import AddingConfig
from rnnkit.data.benchmarks.batches import split_generator
from rnnkit.data.benchmarks.copying import CopyingConfig
from rnnkit.data.benchmarks.passkey import PasskeyConfig
from rnnkit.data.benchmarks.sequential_digits import SequentialDigitsConfig


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rows(tensor: torch.Tensor) -> set[tuple[int, ...]]:
    return {tuple(row) for row in tensor.tolist()}


# --- passkey ----------------------------------------------------------------------------------


def passkey_reference(inputs: list[int], digits: int) -> list[int]:
    """The digits after the KEY token."""
    start = inputs.index(passkey.KEY) + 1
    return inputs[start : start + digits]


@pytest.mark.parametrize("filler", passkey.FILLERS)
@pytest.mark.parametrize("length", [16, 40, 640])
def test_passkey_answer_is_the_hidden_key(filler, length):
    config = PasskeyConfig(key_digits=3, filler=filler, train_length=40)
    batch = passkey.draw_batch(config, 64, length, generator(), split="test")
    assert batch.inputs.shape == (64, length) and batch.inputs.dtype == torch.long
    depths = set()
    for inputs, targets, mask in zip(*(t.tolist() for t in batch), strict=True):
        assert inputs.count(passkey.KEY) == 1 and inputs.count(passkey.QUERY) == 1
        key = passkey_reference(inputs, 3)
        assert all(0 <= digit <= 9 for digit in key)
        assert mask == [False] * (length - 3) + [True] * 3 and targets[-3:] == key
        assert inputs[-3:] == [passkey.QUERY, *key[:2]]
        position = inputs.index(passkey.KEY)
        depths.add(position)
        others = inputs[:position] + inputs[position + 4 : length - 3]
        assert all(token >= passkey.FIRST_FILLER for token in others)
    assert len(depths) > 5  # the depth varies


def test_passkey_depth_puts_the_key_first_or_last():
    config = PasskeyConfig(key_digits=2, train_length=20)
    first = passkey.draw_batch(config, 4, 20, generator(), depth=0.0).inputs
    last = passkey.draw_batch(config, 4, 20, generator(), depth=1.0).inputs
    assert (first[:, 0] == passkey.KEY).all()
    assert (last[:, 20 - 2 - 3] == passkey.KEY).all()  # the key block ends before QUERY


def test_passkey_test_keys_never_appear_in_training():
    config = PasskeyConfig(key_digits=2, train_length=16)
    train = passkey.draw_batch(config, 300, 16, split_generator(0, "train"))
    test = passkey.draw_batch(config, 300, 16, split_generator(0, "test"), "test")
    train_keys, test_keys = rows(train.targets[:, -2:]), rows(test.targets[:, -2:])
    assert len(train_keys) > 50 and len(test_keys) > 10 and not train_keys & test_keys
    again = passkey.draw_batch(config, 300, 16, split_generator(0, "train"))
    assert torch.equal(train.inputs, again.inputs)


# --- copying ----------------------------------------------------------------------------------


@pytest.mark.parametrize("teacher_forcing", [False, True])
def test_copy_targets_are_the_string(teacher_forcing):
    config = CopyingConfig(string_length=5, delay=3, teacher_forcing=teacher_forcing)
    batch = copying.draw_batch(config, 50, generator())
    assert batch.inputs.shape == (50, 13) == (50, config.total_length)
    for inputs, targets, mask in zip(*(t.tolist() for t in batch), strict=True):
        string = inputs[:5]
        assert all(token >= copying.FIRST_SYMBOL for token in string)
        assert inputs[5:8] == [copying.BLANK] * 3 and inputs[8] == copying.DELIMITER
        assert targets[8:] == string and mask == [False] * 8 + [True] * 5
        assert inputs[9:] == (string[:4] if teacher_forcing else [copying.BLANK] * 4)


def test_selective_copy_targets_are_the_scattered_symbols_in_order():
    config = CopyingConfig(variant="selective-copy", string_length=4, sequence_length=30)
    batch = copying.draw_batch(config, 100, generator())
    assert batch.inputs.shape == (100, 34)
    spreads = set()
    for inputs, targets, mask in zip(*(t.tolist() for t in batch), strict=True):
        symbols = [token for token in inputs[:30] if token != copying.BLANK]
        assert len(symbols) == 4 and targets[30:] == symbols
        assert inputs[30:] == [copying.DELIMITER] * 4 and mask == [False] * 30 + [True] * 4
        spreads.add(tuple(p for p, token in enumerate(inputs[:30]) if token != copying.BLANK))
    assert len(spreads) > 50  # the positions are random


def test_copy_splits_are_disjoint_and_deterministic():
    config = CopyingConfig(num_symbols=2, string_length=6)  # 64 strings: overlap is likely
    train = copying.draw_batch(config, 200, split_generator(1, "train"))
    test = copying.draw_batch(config, 200, split_generator(1, "test"), "test")
    assert not rows(train.inputs) & rows(test.inputs) and len(rows(test.inputs)) > 3
    again = copying.draw_batch(config, 200, split_generator(1, "train"))
    assert torch.equal(train.inputs, again.inputs)


# --- adding -----------------------------------------------------------------------------------


@pytest.mark.parametrize("placement", adding.PLACEMENTS)
def test_adding_target_is_the_sum_of_the_marked_values(placement):
    config = AddingConfig(sequence_length=1000, marker_placement=placement)
    batch = adding.draw_batch(config, 32, generator())
    assert batch.inputs.shape == (32, 1000, 2) and batch.inputs.dtype == torch.float32
    assert batch.targets.shape == (32,)
    for inputs, target in zip(batch.inputs.tolist(), batch.targets.tolist(), strict=True):
        marked = [step for step, (_, marker) in enumerate(inputs) if marker == 1.0]
        assert len(marked) == 2 and all(marker in (0.0, 1.0) for _, marker in inputs)
        assert all(0.0 <= value <= 1.0 for value, _ in inputs)
        if placement == "halves":
            assert marked[0] < 500 <= marked[1]
        assert target == pytest.approx(sum(inputs[step][0] for step in marked), abs=1e-5)


def test_adding_splits_come_from_different_streams():
    config = AddingConfig(sequence_length=50)
    train = adding.draw_batch(config, 8, split_generator(0, "train"))
    test = adding.draw_batch(config, 8, split_generator(0, "test"))
    assert torch.equal(
        train.inputs, adding.draw_batch(config, 8, split_generator(0, "train")).inputs
    )
    assert not torch.equal(train.inputs, test.inputs)


# --- sequential digits ------------------------------------------------------------------------


def test_sequential_digits_read_the_images_pixel_by_pixel():
    config = SequentialDigitsConfig()
    data = load_digits()
    test = sequential_digits.load_split(config, "test")
    indices = sequential_digits.split_indices(config, "test")
    assert test.inputs.shape == (359, 64, 1) and test.inputs.dtype == torch.float32
    first = int(indices[0])
    expected = torch.tensor(data.images[first], dtype=torch.float32).flatten() / 16
    assert (
        torch.equal(test.inputs[0, :, 0], expected) and int(test.targets[0]) == data.target[first]
    )


def test_permuted_digits_use_one_fixed_order():
    plain = sequential_digits.load_split(SequentialDigitsConfig(), "train")
    permuted_config = SequentialDigitsConfig(permuted=True, permutation_seed=5)
    permuted = sequential_digits.load_split(permuted_config, "train")
    order = sequential_digits.pixel_order(permuted_config)
    assert sorted(order.tolist()) == list(range(64)) and order.tolist() != list(range(64))
    assert torch.equal(permuted.inputs, plain.inputs[:, order])
    assert torch.equal(order, sequential_digits.pixel_order(permuted_config))
    other = sequential_digits.pixel_order(SequentialDigitsConfig(permuted=True, permutation_seed=6))
    assert not torch.equal(order, other)


def test_digit_splits_are_disjoint_and_cover_the_images():
    config = SequentialDigitsConfig(split_seed=3)
    train = set(sequential_digits.split_indices(config, "train").tolist())
    test = set(sequential_digits.split_indices(config, "test").tolist())
    assert not train & test and len(train | test) == 1797 and len(test) == 359
    assert test == set(sequential_digits.split_indices(config, "test").tolist())
    assert test != set(sequential_digits.split_indices(SequentialDigitsConfig(), "test").tolist())
    batch = sequential_digits.draw_batch(config, 16, generator(), "test")
    assert batch.inputs.shape == (16, 64, 1) and batch.targets.dtype == torch.long


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: PasskeyConfig(filler="lorem"), r"filler: expected one of \('repeat', 'random'\)"),
        (lambda: PasskeyConfig(key_digits=0), r"key_digits: expected an int in 1..18, got 0"),
        (
            lambda: PasskeyConfig(key_digits=5, train_length=11),
            "train_length: expected an int >= 12",
        ),
        (
            lambda: passkey.draw_batch(PasskeyConfig(train_length=20), 2, 321, generator()),
            r"length: expected an int in 12..320, got 321",
        ),
        (lambda: passkey.draw_batch(PasskeyConfig(), 2, 64, generator(), depth=1.5), "depth"),
        (lambda: CopyingConfig(variant="reverse"), r"variant: expected one of \('copy'"),
        (lambda: CopyingConfig(num_symbols=1), "num_symbols: expected an int >= 2, got 1"),
        (lambda: CopyingConfig(delay=-1), "delay: expected an int >= 0"),
        (lambda: CopyingConfig(teacher_forcing="yes"), "teacher_forcing: expected a bool"),
        (lambda: CopyingConfig(string_length=20, sequence_length=10), "sequence_length"),
        (lambda: AddingConfig(sequence_length=1), r"sequence_length: expected an int in 2..10000"),
        (lambda: AddingConfig(marker_placement="ends"), "marker_placement: expected one of"),
        (lambda: SequentialDigitsConfig(test_fraction=1.0), "test_fraction: expected a number"),
        (lambda: SequentialDigitsConfig(permuted=1), "permuted: expected a bool"),
        (lambda: sequential_digits.split_indices(SequentialDigitsConfig(), "dev"), "split"),
    ],
)
def test_bad_options_raise(make, message):
    with pytest.raises(ValueError, match=message):
        make()
