"""The language model: shapes, carried state, weight tying, every registered cell."""

from __future__ import annotations

import pytest
import torch

from rnnkit.cells import CELLS, LSTMState
from rnnkit.models import LanguageModel, LanguageModelConfig, detach_state
from rnnkit.models.recurrent_config import RecurrentConfig


def small_config(tie_weights: bool = False, **recurrent) -> LanguageModelConfig:
    """Embedding 8, two layers of 12; ``recurrent`` sets RecurrentConfig fields."""
    settings = {"hidden_size": 12, "num_layers": 2, **recurrent}
    return LanguageModelConfig(
        embedding_size=8, recurrent=RecurrentConfig(**settings), tie_weights=tie_weights
    )


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_every_cell_gives_logits_and_a_state_per_layer(cell):
    torch.manual_seed(0)
    model = LanguageModel(small_config(cell=cell), vocabulary_size=11)
    logits, state = model(torch.randint(11, (3, 5)))
    assert logits.shape == (3, 5, 11)
    assert len(state) == 2
    assert all(field.shape[0] == 3 for layer in state for field in layer)


@pytest.mark.parametrize("cell", ["lstm", "gru", "elman"])
def test_two_windows_with_carried_state_equal_one_long_window(cell):
    torch.manual_seed(0)
    model = LanguageModel(small_config(cell=cell), vocabulary_size=7).double().eval()
    tokens = torch.randint(7, (2, 10))
    whole, whole_state = model(tokens)
    first, state = model(tokens[:, :6])
    second, final_state = model(tokens[:, 6:], detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    for carried, expected in zip(final_state, whole_state, strict=True):
        for field_carried, field_expected in zip(carried, expected, strict=True):
            torch.testing.assert_close(field_carried, field_expected)


def test_detach_state_keeps_the_named_tuples_and_cuts_the_graph():
    state = (LSTMState(torch.ones(2, 3, requires_grad=True) * 2, torch.zeros(2, 3)),)
    detached = detach_state(state)
    assert isinstance(detached[0], LSTMState)
    assert not detached[0].h.requires_grad
    assert torch.equal(detached[0].h, state[0].h)


def test_tied_weights_are_one_parameter():
    model = LanguageModel(small_config(hidden_size=8, tie_weights=True), vocabulary_size=9)
    assert model.head.weight is model.embedding.weight
    untied = LanguageModel(small_config(hidden_size=8), vocabulary_size=9)
    assert model.num_parameters() == untied.num_parameters() - 9 * 8


def test_tied_weights_with_an_lstm_projection():
    config = small_config(hidden_size=16, options={"proj_size": 8}, tie_weights=True)
    model = LanguageModel(config, vocabulary_size=9)
    assert model(torch.zeros(1, 3, dtype=torch.long))[0].shape == (1, 3, 9)


def test_tied_weights_with_mismatched_sizes_say_what_to_set():
    with pytest.raises(ValueError, match="tie_weights needs.*12.*embedding_size.*8"):
        LanguageModel(small_config(tie_weights=True), vocabulary_size=9)


def test_cell_options_reach_the_cell():
    model = LanguageModel(small_config(options={"layer_norm": True}), vocabulary_size=5)
    assert all(cell.layer_norm for cell in model.recurrent.cells)
    assert "fused" in model.recurrent.describe_strategy()
