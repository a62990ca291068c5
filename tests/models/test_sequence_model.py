"""The benchmark tasks' sequence model: shapes, every cell, causality, decoding, RoPE, configs."""

from __future__ import annotations

import math

import pytest
import torch
from oracle_table import ORACLE_TABLE
from torch.testing import assert_close

from rnnkit.cells import CELLS
from rnnkit.models.causal_attention import CausalSelfAttention, rotary_embedding
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.sequence_model import SequenceModelConfig, build_sequence_model, with_mixer

VOCABULARY = 11


def cell_options(cell: str) -> dict:
    """The options of the cell's first oracle entry (``num_heads``, ``state_size``, ...)."""
    return next(options for name, options in ORACLE_TABLE.values() if name == cell)


def config_for(mixer: str, **fields) -> SequenceModelConfig:
    """A tiny config whose blocks are ``mixer`` (``attention`` or a cell name)."""
    fields = {"model_size": 8, "num_blocks": 2, "num_heads": 2, **fields}
    if mixer == "attention":
        return SequenceModelConfig(mixer="attention", **fields)
    recurrent = RecurrentConfig(cell=mixer, hidden_size=8, options=cell_options(mixer))
    return SequenceModelConfig(recurrent=recurrent, **fields)


def test_shapes_for_token_and_real_inputs():
    torch.manual_seed(0)
    tokens = build_sequence_model(config_for("gru"), vocabulary_size=VOCABULARY)
    outputs, state = tokens(torch.randint(0, VOCABULARY, (3, 5)))
    assert outputs.shape == (3, 5, VOCABULARY)
    assert len(state) == 2
    real = build_sequence_model(config_for("attention"), input_size=4, output_size=2)
    outputs, _ = real(torch.randn(3, 5, 4))
    assert outputs.shape == (3, 5, 2)
    step_outputs, _ = real.step(torch.randn(3, 4))
    assert step_outputs.shape == (3, 2)


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_every_cell_runs_forward_and_backward(cell: str):
    torch.manual_seed(0)
    model = build_sequence_model(config_for(cell, num_blocks=1), vocabulary_size=VOCABULARY)
    outputs, _ = model(torch.randint(0, VOCABULARY, (2, 5)), lengths=torch.tensor([5, 3]))
    assert outputs.shape == (2, 5, VOCABULARY)
    outputs.square().sum().backward()
    gradients = [parameter.grad for parameter in model.parameters()]
    assert all(gradient is not None and gradient.isfinite().all() for gradient in gradients)
    assert model.block_mixers() == [cell]


@pytest.mark.parametrize("mixer", ["attention", "lstm", "selective_ssm"])
def test_changing_a_future_token_leaves_earlier_outputs(mixer: str):
    torch.manual_seed(0)
    model = build_sequence_model(config_for(mixer), vocabulary_size=VOCABULARY).double()
    tokens = torch.randint(0, VOCABULARY, (2, 9))
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 1) % VOCABULARY
    outputs, _ = model(tokens)
    changed_outputs, _ = model(changed)
    assert_close(changed_outputs[:, :6], outputs[:, :6], msg="outputs before the change")
    assert not torch.allclose(changed_outputs[:, 6], outputs[:, 6]), "the changed position"


def test_right_padding_leaves_real_positions():
    torch.manual_seed(0)
    config = config_for("gru", num_blocks=2, attention_every=2)
    model = build_sequence_model(config, vocabulary_size=VOCABULARY).double()
    tokens = torch.randint(0, VOCABULARY, (2, 7))
    full, _ = model(tokens)
    padded, _ = model(tokens, lengths=torch.tensor([7, 4]))
    assert_close(padded[1, :4], full[1, :4], msg="outputs of the padded row")
    assert_close(padded[0], full[0], msg="outputs of the full row")


@pytest.mark.parametrize(
    "config",
    [
        config_for("attention"),
        config_for("lstm"),
        config_for("gru", num_blocks=3, attention_every=2),
    ],
    ids=["attention", "lstm", "gru-attention-hybrid"],
)
def test_step_by_step_decoding_equals_forward(config: SequenceModelConfig):
    torch.manual_seed(0)
    model = build_sequence_model(config, vocabulary_size=VOCABULARY).double()
    tokens = torch.randint(0, VOCABULARY, (3, 8))
    outputs, _ = model(tokens)
    state = None
    stepped = []
    for position in range(tokens.shape[1]):
        step_outputs, state = model.step(tokens[:, position], state)
        stepped.append(step_outputs)
    assert_close(torch.stack(stepped, dim=1), outputs, msg="step outputs")
    # a prefix through forward, the rest by step: the forward's state continues the sequence
    _, state = model(tokens[:, :5])
    for position in range(5, tokens.shape[1]):
        step_outputs, state = model.step(tokens[:, position], state)
        assert_close(step_outputs, outputs[:, position], msg=f"step after prefix, t={position}")


def reference_rotary(features: torch.Tensor, base: float) -> torch.Tensor:
    """RoFormer's rotation as matrices: block-diagonal 2x2 rotations, one per pair of features."""
    length, size = features.shape
    rotated = torch.empty_like(features)
    for position in range(length):
        matrix = torch.zeros(size, size, dtype=features.dtype)
        for pair in range(size // 2):
            angle = position * base ** (-2 * pair / size)
            cosine, sine = math.cos(angle), math.sin(angle)
            matrix[2 * pair : 2 * pair + 2, 2 * pair : 2 * pair + 2] = torch.tensor(
                [[cosine, -sine], [sine, cosine]], dtype=features.dtype
            )
        rotated[position] = matrix @ features[position]
    return rotated


def test_rotary_embedding_matches_the_rotation_matrices():
    torch.manual_seed(0)
    features = torch.randn(7, 6, dtype=torch.float64)
    expected = reference_rotary(features, base=100.0)
    assert_close(rotary_embedding(features, torch.arange(7), base=100.0), expected, msg="RoPE")


def test_rotary_scores_depend_on_the_offset_only():
    torch.manual_seed(0)
    query, key = torch.randn(2, 1, 8, dtype=torch.float64)
    scores = [
        (rotary_embedding(query, torch.tensor([t + 3])) * rotary_embedding(key, torch.tensor([t])))
        .sum()
        .item()
        for t in (0, 5, 11)
    ]
    assert scores == pytest.approx([scores[0]] * 3)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"mixer": "transformer"},
            r"mixer: expected recurrent, attention, titans_mag or a registered cell \(.*\), "
            r"got .transformer.",
        ),
        ({"model_size": 0}, "model_size: expected a positive integer, got 0"),
        ({"attention_every": -1}, "attention_every: expected 0 or more, got -1"),
        ({"attention_window": -2}, "attention_window: expected 0 or more, got -2"),
        ({"mixer": "attention", "attention_every": 2}, "attention_every: expected 0 with"),
        ({"mixer": "attention", "model_size": 12, "num_heads": 4}, "num_heads: expected a div"),
        ({"dropout": 1.0}, r"dropout: expected \[0, 1\), got 1.0"),
        ({"recurrent": RecurrentConfig(bidirectional=True)}, "recurrent.bidirectional"),
    ],
    ids=[
        "mixer",
        "model_size",
        "attention_every",
        "attention_window",
        "every-with-attention",
        "heads",
        "dropout",
        "bidirectional",
    ],
)
def test_config_errors_name_the_option(fields: dict, message: str):
    with pytest.raises(ValueError, match=message):
        SequenceModelConfig(**fields)


def test_build_errors_name_the_argument():
    with pytest.raises(ValueError, match="exactly one of vocabulary_size"):
        build_sequence_model(SequenceModelConfig(), vocabulary_size=5, input_size=3)
    with pytest.raises(ValueError, match="output_size: expected a positive integer"):
        build_sequence_model(SequenceModelConfig(), input_size=3)


@pytest.mark.parametrize("mixer", ["attention", "lstm", "mlstm"])
def test_parameter_count_and_state_sizes(mixer: str):
    config = config_for(mixer, num_blocks=3, attention_every=0 if mixer == "attention" else 3)
    model = build_sequence_model(config, vocabulary_size=VOCABULARY)
    assert model.parameter_count() == sum(parameter.numel() for parameter in model.parameters())
    sizes = model.state_size_per_token()
    assert sizes[2] == 2 * config.model_size  # attention (the 3rd block) keeps keys and values
    if mixer != "attention":
        cells = model.block_list()[0].mixer.recurrent.layer_cells()
        assert sizes[:2] == [sum(sum(cell.state_sizes()) for cell in cells)] * 2
        assert model.block_mixers() == [mixer, mixer, "attention"]


def test_attention_rejects_a_bad_head_split():
    with pytest.raises(ValueError, match="model_size must be num_heads times an even head size"):
        CausalSelfAttention(10, 2)


@pytest.mark.parametrize(
    ("cell", "strategy"), [("mingru", "scan"), ("paragru", "newton"), ("gru", "native")]
)
def test_a_strategy_gives_the_sequential_outputs(cell: str, strategy: str):
    outputs = {}
    for name in ("sequential", strategy):
        torch.manual_seed(0)
        recurrent = RecurrentConfig(cell=cell, hidden_size=8, strategy=name)
        model = build_sequence_model(
            SequenceModelConfig(model_size=8, num_blocks=2, recurrent=recurrent),
            vocabulary_size=VOCABULARY,
        ).double()
        outputs[name], _ = model(torch.randint(0, VOCABULARY, (2, 6)))
    assert_close(outputs[strategy], outputs["sequential"], msg=f"{strategy} outputs")


def test_a_recurrent_output_of_another_size_is_projected_to_the_model_size():
    torch.manual_seed(0)
    recurrent = RecurrentConfig(cell="lstm", hidden_size=12, num_layers=2)
    model = build_sequence_model(
        SequenceModelConfig(model_size=8, num_blocks=1, recurrent=recurrent),
        vocabulary_size=VOCABULARY,
    )
    outputs, state = model(torch.randint(0, VOCABULARY, (2, 4)))
    assert outputs.shape == (2, 4, VOCABULARY)
    assert len(state[0]) == 2  # one LSTMState per layer of the block's Recurrent
    assert model.state_size_per_token() == [2 * (12 + 12)]


def test_with_mixer_names_attention_or_any_cell():
    base = SequenceModelConfig(model_size=8, num_heads=2)
    assert with_mixer(base, "attention").block_mixers() == ["attention", "attention"]
    gla = with_mixer(base, "gla", {"num_heads": 2})
    assert gla.block_mixers() == ["gla", "gla"] and gla.recurrent.options == {"num_heads": 2}
    with pytest.raises(ValueError, match="unknown cell 'transformer'"):
        with_mixer(base, "transformer")
