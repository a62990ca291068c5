"""Sampling: temperature and top-k, the prompt read once, state carried step by step."""

from __future__ import annotations

import pytest
import torch

from rnnkit.decoding import generate, next_token
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.recurrent_config import RecurrentConfig


def small_model(cell: str = "lstm") -> LanguageModel:
    torch.manual_seed(0)
    recurrent = RecurrentConfig(cell=cell, hidden_size=10, num_layers=2)
    config = LanguageModelConfig(embedding_size=6, recurrent=recurrent)
    return LanguageModel(config, vocabulary_size=9).double()


def test_temperature_zero_is_greedy():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    assert next_token(logits, temperature=0).tolist() == [1, 0]


def test_top_k_draws_only_among_the_k_most_likely():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]]).repeat(500, 1)
    generator = torch.Generator().manual_seed(0)
    drawn = next_token(logits, temperature=5.0, top_k=2, generator=generator)
    assert set(drawn.tolist()) == {3, 4}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        next_token(torch.zeros(1, 3), temperature=-1)
    with pytest.raises(ValueError, match="top_k"):
        next_token(torch.zeros(1, 3), top_k=-2)
    with pytest.raises(ValueError, match="non-empty"):
        list(generate(small_model(), torch.tensor([], dtype=torch.long), 3))


def test_a_fixed_seed_repeats_the_sample():
    model, prompt = small_model(), torch.tensor([1, 2, 3])
    first = list(generate(model, prompt, 30, 1.0, 0, torch.Generator().manual_seed(5)))
    second = list(generate(model, prompt, 30, 1.0, 0, torch.Generator().manual_seed(5)))
    other = list(generate(model, prompt, 30, 1.0, 0, torch.Generator().manual_seed(6)))
    assert first == second
    assert first != other


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_steps_carry_the_state_like_a_full_forward(cell):
    """Greedy tokens generated one step at a time are the argmax of a full forward pass
    over the prompt plus those tokens: the carried state is the state of the whole text."""
    model, prompt = small_model(cell), torch.tensor([4, 0, 7, 7])
    tokens = list(generate(model, prompt, 12, temperature=0))
    text = torch.cat([prompt, torch.tensor(tokens)]).unsqueeze(0)
    logits, _ = model(text)
    expected = logits[0, len(prompt) - 1 : -1].argmax(-1)
    assert tokens == expected.tolist()


def test_the_prompt_is_read_once_then_one_layer_step_per_token():
    model, calls, steps = small_model(), [], []
    model.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[1]))
    original_step = model.recurrent.step
    model.recurrent.step = lambda *args: steps.append(args[0].shape) or original_step(*args)
    list(generate(model, torch.tensor([1, 2, 3, 4, 5]), 6, temperature=0.5, top_k=3))
    assert calls == [5]  # the prompt, one whole forward; then no forward per token
    assert len(steps) == 6  # one layer step per token yielded
