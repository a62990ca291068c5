"""Titans' memory as a gate (the ``titans_mag`` mixer): the gate against its equation from the
two branches run on their own, shapes, causality, right padding, step-by-step decoding and the
config (float64)."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.sequence_model import SequenceModelConfig, build_sequence_model, with_mixer
from rnnkit.models.titans_mag import MagState, TitansGatedAttention

VOCABULARY = 11
EXACT = {"rtol": 1e-10, "atol": 1e-10}
MEMORY = {"num_heads": 2, "chunk_size": 3, "max_gradient_norm": 1.0}


def memory_config(strategy: str = "auto", hidden_size: int = 8) -> RecurrentConfig:
    return RecurrentConfig(
        cell="titans", hidden_size=hidden_size, strategy=strategy, options=dict(MEMORY)
    )


def make_mixer(window: int = 3, strategy: str = "auto", hidden_size: int = 8):
    torch.manual_seed(0)
    mixer = TitansGatedAttention(memory_config(strategy, hidden_size), 8, 2, window=window)
    with torch.no_grad():  # gains away from 1, so that they are tested
        mixer.attention_norm.weight.uniform_(0.5, 1.5)
        mixer.memory_norm.weight.uniform_(0.5, 1.5)
    return mixer.double()


def rms_norm(values: torch.Tensor, gain: torch.Tensor, eps: float) -> torch.Tensor:
    return values / torch.sqrt(values.pow(2).mean(-1, keepdim=True) + eps) * gain


@pytest.mark.parametrize("hidden_size", [8, 6])
@pytest.mark.parametrize("strategy", ["sequential", "scan"])
def test_the_gate_of_the_two_branches_values_and_gradients(strategy, hidden_size):
    """``o = RMSNorm_y(SWA(x)) * sigmoid(RMSNorm_m(W_m M(x)))`` from the branches on their own."""
    mixer = make_mixer(strategy=strategy, hidden_size=hidden_size)
    inputs = torch.randn(3, 7, 8, dtype=torch.float64, requires_grad=True)
    outputs, state = mixer(inputs, None, None)
    attended, _ = mixer.attention(inputs)
    remembered, memory_state = mixer.memory(inputs)
    remembered = mixer.memory_projection(remembered)
    eps = torch.finfo(torch.float64).eps  # nn.RMSNorm's default
    gate = torch.sigmoid(rms_norm(remembered, mixer.memory_norm.weight, eps))
    expected = rms_norm(attended, mixer.attention_norm.weight, eps) * gate
    assert outputs.shape == (3, 7, 8)
    assert_close(outputs, expected, **EXACT)
    assert isinstance(state, MagState) and state.cache.keys.shape == (3, 2, 7, 4)
    for got, want in zip(state.memory[0], memory_state[0], strict=True):
        assert_close(got, want, **EXACT)
    weights = torch.randn_like(outputs)
    wrt = [inputs, *mixer.parameters()]
    for got, want in zip(
        torch.autograd.grad((outputs * weights).sum(), wrt),
        torch.autograd.grad((expected * weights).sum(), wrt),
        strict=True,
    ):
        assert_close(got, want, **EXACT)


def model_config(**fields) -> SequenceModelConfig:
    fields = {"model_size": 8, "num_blocks": 2, "num_heads": 2, "attention_window": 3, **fields}
    fields.setdefault("recurrent", memory_config())
    return SequenceModelConfig(mixer="titans_mag", **fields)


def test_config_names_the_mixer_and_its_memory_cell():
    config = model_config()
    assert config.recurrent.cell == "titans" and config.block_mixers() == ["titans_mag"] * 2
    # a config read from text: the memory's options are checked against titans, not the default
    data = {"mixer": "titans_mag", "recurrent": {"options": {"chunk_size": 4}}}
    prepared = SequenceModelConfig.prepare_data(data)
    assert prepared["recurrent"]["cell"] == "titans" and prepared["mixer"] == "titans_mag"
    hybrid = with_mixer(model_config(num_blocks=2, attention_every=2), "attention")
    assert hybrid.block_mixers() == ["attention", "attention"]
    assert model_config(attention_every=2).block_mixers() == ["titans_mag", "attention"]
    model = build_sequence_model(model_config(num_blocks=1), vocabulary_size=VOCABULARY)
    memory = sum(model.blocks[0].mixer.memory.layer_cells()[0].state_sizes())
    assert model.state_size_per_token() == [2 * 8 + memory]


def test_shapes_and_backward():
    torch.manual_seed(0)
    model = build_sequence_model(model_config(), vocabulary_size=VOCABULARY)
    outputs, state = model(torch.randint(0, VOCABULARY, (2, 5)), lengths=torch.tensor([5, 3]))
    assert outputs.shape == (2, 5, VOCABULARY) and len(state) == 2
    outputs.square().sum().backward()
    gradients = [parameter.grad for parameter in model.parameters()]
    assert all(gradient is not None and gradient.isfinite().all() for gradient in gradients)
    assert model.block_mixers() == ["titans_mag", "titans_mag"]


@pytest.mark.parametrize("strategy", ["sequential", "scan"])
def test_changing_a_later_token_leaves_earlier_outputs(strategy):
    torch.manual_seed(0)
    config = model_config(recurrent=memory_config(strategy))
    model = build_sequence_model(config, vocabulary_size=VOCABULARY).double()
    tokens = torch.randint(0, VOCABULARY, (2, 10))
    outputs, _ = model(tokens)
    for position in (0, 4, 9):
        changed = tokens.clone()
        changed[:, position:] = (changed[:, position:] + 1) % VOCABULARY
        changed_outputs, _ = model(changed)
        assert_close(changed_outputs[:, :position], outputs[:, :position], **EXACT)
        assert not torch.allclose(changed_outputs[:, position], outputs[:, position])


def test_right_padding_leaves_each_rows_real_positions_and_final_memory():
    torch.manual_seed(0)
    model = build_sequence_model(model_config(), vocabulary_size=VOCABULARY).double()
    tokens = torch.randint(0, VOCABULARY, (3, 9))
    lengths = [9, 4, 7]
    padded, state = model(tokens, lengths=torch.tensor(lengths))
    for row, length in enumerate(lengths):
        alone, alone_state = model(tokens[row : row + 1, :length])
        assert_close(padded[row, :length], alone[0], **EXACT)
        for block, alone_block in zip(state, alone_state, strict=True):
            for got, want in zip(block.memory[0], alone_block.memory[0], strict=True):
                assert_close(got[row], want[0], **EXACT)


def test_step_by_step_decoding_equals_forward():
    torch.manual_seed(0)
    model = build_sequence_model(model_config(), vocabulary_size=VOCABULARY).double()
    tokens = torch.randint(0, VOCABULARY, (3, 8))
    outputs, _ = model(tokens)
    state = None
    stepped = []
    for position in range(tokens.shape[1]):
        step_outputs, state = model.step(tokens[:, position], state)
        stepped.append(step_outputs)
    assert_close(torch.stack(stepped, dim=1), outputs, **EXACT)
    _, state = model(tokens[:, :5])  # a prefix's state continues the sequence
    for position in range(5, tokens.shape[1]):
        step_outputs, state = model.step(tokens[:, position], state)
        assert_close(step_outputs, outputs[:, position], **EXACT)


def test_errors_name_the_memory_cell_and_the_state():
    with pytest.raises(ValueError, match="'titans' cell, got 'lstm'"):
        TitansGatedAttention(RecurrentConfig(cell="lstm", hidden_size=8), 8, 2)
    with pytest.raises(ValueError, match="MagState"):
        make_mixer()(torch.randn(1, 2, 8, dtype=torch.float64), ((), ()), None)
