"""Recurrent regularization of the classic cells: variational dropout, DropConnect, zoneout."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close, assert_states_close, build_cell, random_state

from rnnkit.cells import ElmanCell, HiddenState
from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError, choose

F64 = torch.float64
DROPOUT = {"input_dropout": 0.5, "hidden_dropout": 0.5, "weight_dropout": 0.5}
CONFIGS = ["elman", "jordan_out5", "lstm", "lstm_proj", "lstm_peephole", "gru"]


def twin_cells(config: str, **options):
    """A plain cell and a regularized one with the same parameters."""
    plain = build_cell(config, 3, 4, F64)
    regularized = build_cell(config, 3, 4, F64, **options)
    regularized.load_state_dict(plain.state_dict())
    return plain, regularized


def sequence(batch_size: int = 3, steps: int = 6, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, steps, 3, dtype=F64, generator=generator)


@pytest.mark.parametrize("config", CONFIGS)
def test_eval_mode_applies_no_dropout(config):
    plain, regularized = twin_cells(config, **DROPOUT)
    regularized.eval()
    inputs = sequence()
    expected_outputs, expected_state = STRATEGIES["sequential"](plain, inputs)
    outputs, state = STRATEGIES["sequential"](regularized, inputs)
    assert_close(outputs, expected_outputs, "outputs", F64)
    assert_states_close(state, expected_state, "final state", F64)
    # in evaluation a cell steps without begin_sequence
    output, _ = regularized.step(inputs[:, 0], regularized.initial_state(3))
    assert_close(output, expected_outputs[:, 0], "step output", F64)


@pytest.mark.parametrize("config", CONFIGS)
def test_training_dropout_changes_outputs_and_draws_fresh_masks_per_run(config):
    plain, regularized = twin_cells(config, **DROPOUT)
    inputs = sequence()
    expected, _ = STRATEGIES["sequential"](plain, inputs)
    first, _ = STRATEGIES["sequential"](regularized, inputs)
    second, _ = STRATEGIES["sequential"](regularized, inputs)
    assert not torch.allclose(first, expected), "dropout in training left the outputs unchanged"
    assert not torch.allclose(first, second), "two runs in training used the same masks"


@pytest.mark.parametrize("config", CONFIGS)
def test_masks_drawn_by_begin_sequence_serve_every_step(config):
    """A training run equals a hand loop of ``cell.step`` after one ``begin_sequence`` with the
    same seed: the run draws its masks once and uses them at every step."""
    _, cell = twin_cells(config, **DROPOUT)
    inputs = sequence()
    torch.manual_seed(7)
    outputs, final_state = STRATEGIES["sequential"](cell, inputs)

    torch.manual_seed(7)
    cell.begin_sequence(3, device=inputs.device, dtype=F64)
    state = cell.initial_state(3)
    for step in range(inputs.shape[1]):
        output, state = cell.step(inputs[:, step], state)
        assert_close(outputs[:, step], output, f"outputs[:, {step}]", F64)
    assert_states_close(final_state, state, "final state", F64)


def identity_elman(size: int, dropout: str) -> ElmanCell:
    """A relu Elman cell that copies its input (input dropout) or its state (hidden dropout)."""
    cell = ElmanCell(size, size, nonlinearity="relu", **{dropout: 0.5}).double()
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.zero_()
        weight = cell.weight_ih if dropout == "input_dropout" else cell.weight_hh
        weight.copy_(torch.eye(size))
    return cell


def test_input_mask_is_constant_over_time_and_differs_between_sequences():
    cell = identity_elman(6, "input_dropout")
    torch.manual_seed(0)
    outputs, _ = STRATEGIES["sequential"](cell, torch.ones(40, 5, 6, dtype=F64))
    mask = outputs[:, 0]  # h_t = relu(m * 1) = m
    assert set(mask.unique().tolist()) == {0.0, 2.0}, "mask values must be 0 or 1 / (1 - p)"
    for step in range(1, 5):
        assert torch.equal(outputs[:, step], mask), f"input mask changed at step {step}"
    assert mask.unique(dim=0).shape[0] > 1, "every sequence of the batch had the same mask"


def test_hidden_mask_is_constant_over_time():
    cell = identity_elman(6, "hidden_dropout")
    torch.manual_seed(0)
    state = HiddenState(torch.ones(40, 6, dtype=F64))
    outputs, _ = STRATEGIES["sequential"](cell, torch.zeros(40, 5, 6, dtype=F64), state)
    mask = outputs[:, 0]  # h_t = relu(m * h_{t-1}) = m ** t
    assert set(mask.unique().tolist()) == {0.0, 2.0}
    for step in range(1, 5):
        assert torch.equal(outputs[:, step], mask ** (step + 1)), f"mask changed at step {step}"


def test_dropped_recurrent_weight_is_constant_over_time():
    """With h_0 = I (one basis vector per sequence), h_1 = relu(W' I) reveals the dropped W';
    every later step must use the same one: h_{t+1} = h_t W'^T."""
    size = 6
    cell = ElmanCell(size, size, nonlinearity="relu", weight_dropout=0.5).double()
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.zero_()
        cell.weight_hh.fill_(1.0)
    torch.manual_seed(0)
    state = HiddenState(torch.eye(size, dtype=F64))
    outputs, _ = STRATEGIES["sequential"](cell, torch.zeros(size, 4, size, dtype=F64), state)
    dropped_transposed = outputs[:, 0]
    assert set(dropped_transposed.unique().tolist()) == {0.0, 2.0}
    for step in range(1, 4):
        expected = outputs[:, step - 1] @ dropped_transposed
        assert torch.equal(outputs[:, step], expected), f"W_hh changed at step {step}"


@pytest.mark.parametrize("config", ["elman", "jordan_out5", "lstm", "lstm_proj"])
def test_dropout_masks_the_input_and_the_recurrent_input_only(config):
    """One training step equals the plain cell's step on the masked input and the masked
    recurrent input (h_{t-1}, or y_{t-1} for Jordan) with the dropped W_hh; the LSTM's c_{t-1}
    is not masked."""
    plain, cell = twin_cells(config, **DROPOUT)
    cell.begin_sequence(4, device=torch.device("cpu"), dtype=F64)
    noise = cell.noise
    state = random_state(cell, 4, torch.Generator().manual_seed(5))
    inputs = torch.randn(4, 3, dtype=F64)
    output, new_state = cell.step(inputs, state)

    with torch.no_grad():
        plain.weight_hh.copy_(noise.recurrent_weight)
    masked_state = type(state)(state[0] * noise.hidden_mask, *state[1:])
    expected_output, expected_state = plain.step(inputs * noise.input_mask, masked_state)
    assert_close(output, expected_output, "output", F64)
    assert_states_close(new_state, expected_state, "new state", F64)


def test_gru_dropout_masks_what_enters_w_hh_and_interpolates_the_undropped_state():
    plain, cell = twin_cells("gru", **DROPOUT)
    cell.begin_sequence(4, device=torch.device("cpu"), dtype=F64)
    noise = cell.noise
    (h,) = random_state(cell, 4, torch.Generator().manual_seed(6))
    inputs = torch.randn(4, 3, dtype=F64)
    output, _ = cell.step(inputs, HiddenState(h))

    size = cell.hidden_size
    input_part = (inputs * noise.input_mask) @ cell.weight_ih.T + cell.bias_ih
    hidden_part = (h * noise.hidden_mask) @ noise.recurrent_weight.T + cell.bias_hh
    reset = torch.sigmoid(input_part[:, :size] + hidden_part[:, :size])
    update = torch.sigmoid(input_part[:, size : 2 * size] + hidden_part[:, size : 2 * size])
    candidate = torch.tanh(input_part[:, 2 * size :] + reset * hidden_part[:, 2 * size :])
    assert_close(output, (1 - update) * candidate + update * h, "h_t", F64)


@pytest.mark.parametrize("config", CONFIGS)
def test_weight_dropout_changes_outputs_in_training_and_is_identity_in_eval(config):
    plain, regularized = twin_cells(config, weight_dropout=0.5)
    inputs = sequence()
    expected, _ = STRATEGIES["sequential"](plain, inputs)
    torch.manual_seed(0)
    training_outputs, _ = STRATEGIES["sequential"](regularized, inputs)
    assert not torch.allclose(training_outputs, expected)
    # the recurrent weight's gradient flows through DropConnect
    (gradient,) = torch.autograd.grad(training_outputs.sum(), [regularized.weight_hh])
    assert gradient.abs().sum() > 0
    regularized.eval()
    eval_outputs, _ = STRATEGIES["sequential"](regularized, inputs)
    assert_close(eval_outputs, expected, "eval outputs", F64)


@pytest.mark.parametrize("config", CONFIGS)
def test_zoneout_in_eval_is_the_expectation(config):
    probability = 0.3
    plain, zoned = twin_cells(config, zoneout=probability)
    zoned.eval()
    inputs = sequence()
    state = random_state(zoned, 3, torch.Generator().manual_seed(1))
    outputs, final_state = STRATEGIES["sequential"](zoned, inputs, state)
    for step in range(inputs.shape[1]):
        _, candidate = plain.step(inputs[:, step], state)
        state = type(state)(
            *(
                probability * old + (1 - probability) * new
                for old, new in zip(state, candidate, strict=True)
            )
        )
        assert_close(outputs[:, step], state[0], f"outputs[:, {step}]", F64)
    assert_states_close(final_state, state, "final state", F64)


@pytest.mark.parametrize("config", ["elman", "lstm", "gru", "jordan_out5"])
def test_zoneout_in_training_keeps_each_unit_old_or_new_with_fresh_masks(config):
    plain, zoned = twin_cells(config, zoneout=0.5)
    inputs = sequence(batch_size=20)
    state = random_state(zoned, 20, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    kept_patterns = []
    for step in range(inputs.shape[1]):
        _, candidate = plain.step(inputs[:, step], state)
        _, new_state = zoned.step(inputs[:, step], state)
        for field, old, new, got in zip(state._fields, state, candidate, new_state, strict=True):
            kept, replaced = got == old, got == new
            assert bool((kept | replaced).all()), f"{field} at step {step} is neither old nor new"
            assert kept.any() and replaced.any(), f"{field} at step {step}: one-sided zoneout"
            kept_patterns.append(kept)
        state = new_state
    assert any(not torch.equal(kept_patterns[0], other) for other in kept_patterns[1:])


@pytest.mark.parametrize("config", ["elman", "jordan", "lstm", "gru"])
@pytest.mark.parametrize("dropout", list(DROPOUT))
def test_stepping_in_training_without_begin_sequence_raises(config, dropout):
    cell = build_cell(config, 3, 4, F64, **{dropout: 0.2})
    with pytest.raises(RuntimeError, match=r"begin_sequence\(batch_size=2, \.\.\.\).*drawn: none"):
        cell.step(torch.randn(2, 3, dtype=F64), cell.initial_state(2))


def test_stepping_with_noise_drawn_for_another_batch_size_raises():
    cell = build_cell("gru", 3, 4, F64, hidden_dropout=0.2)
    cell.begin_sequence(5, device=torch.device("cpu"), dtype=F64)
    with pytest.raises(RuntimeError, match=r"begin_sequence\(batch_size=2.*drawn: batch_size=5"):
        cell.step(torch.randn(2, 3, dtype=F64), cell.initial_state(2))


def test_zoneout_alone_needs_no_begin_sequence():
    cell = build_cell("lstm", 3, 4, F64, zoneout=0.2)
    output, _ = cell.step(torch.randn(2, 3, dtype=F64), cell.initial_state(2))
    assert output.shape == (2, 4)


@pytest.mark.parametrize("config", ["elman", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_native_refuses_zoneout_and_auto_runs_fused(config, training):
    _, cell = twin_cells(config, zoneout=0.3)
    cell.train(training)
    inputs = sequence()
    with pytest.raises(StrategyUnsupportedError, match=r"strategy 'native' cannot run.*zoneout"):
        STRATEGIES["native"](cell, inputs)
    name, reason = choose(cell)
    assert name == "fused"
    assert "zoneout" in reason
    torch.manual_seed(3)
    expected_outputs, expected_state = STRATEGIES["sequential"](cell, inputs)
    torch.manual_seed(3)
    outputs, state = STRATEGIES["auto"](cell, inputs)
    assert_close(outputs, expected_outputs, "auto outputs", F64)
    assert_states_close(state, expected_state, "auto final state", F64)


@pytest.mark.parametrize("config", ["elman", "lstm", "lstm_proj", "gru"])
@pytest.mark.parametrize("dropout", list(DROPOUT))
def test_native_refuses_dropout_in_training_only(config, dropout):
    plain, cell = twin_cells(config, **{dropout: 0.3})
    inputs = sequence()
    with pytest.raises(StrategyUnsupportedError, match=r"recurrent dropout in training"):
        STRATEGIES["native"](cell, inputs)
    assert choose(cell)[0] == "fused"
    torch.manual_seed(4)
    expected, _ = STRATEGIES["sequential"](cell, inputs)
    torch.manual_seed(4)
    outputs, _ = STRATEGIES["auto"](cell, inputs)
    assert_close(outputs, expected, "auto outputs in training", F64)

    cell.eval()
    assert choose(cell)[0] == "native"
    outputs, _ = STRATEGIES["native"](cell, inputs)
    expected, _ = STRATEGIES["sequential"](plain, inputs)
    assert_close(outputs, expected, "native outputs in eval", F64)
