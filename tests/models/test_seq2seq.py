"""The encoder-decoder: teacher forcing equals stepping the decoder, masks, bridge, arguments."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close

from rnnkit.models.attention import ATTENTION_KINDS
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig

SOURCE_VOCABULARY, TARGET_VOCABULARY = 7, 9


def build(
    seed: int = 0,
    cell: str = "lstm",
    bidirectional: bool = True,
    encoder_layers: int = 1,
    decoder_layers: int = 1,
    **options,
) -> Seq2Seq:
    """Decoder hidden 8; the encoder 8 over its directions (4 each when bidirectional)."""
    torch.manual_seed(seed)
    encoder = RecurrentConfig(
        cell=cell, hidden_size=8 // (2 if bidirectional else 1), num_layers=encoder_layers,
        bidirectional=bidirectional,
    )  # fmt: skip
    decoder = RecurrentConfig(cell=cell, hidden_size=8, num_layers=decoder_layers)
    settings = {"embedding_size": 6, "dropout": 0.0, "encoder": encoder, "decoder": decoder}
    config = Seq2SeqConfig(**{**settings, **options})
    return Seq2Seq(config, SOURCE_VOCABULARY, TARGET_VOCABULARY).double().eval()


def padded_batch(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 2, 3, 1])
    source = torch.randint(3, SOURCE_VOCABULARY, (4, 5), generator=generator)
    source[torch.arange(5).unsqueeze(0) >= lengths.unsqueeze(1)] = 0
    target_input = torch.randint(0, TARGET_VOCABULARY, (4, 6), generator=generator)
    return source, lengths, target_input


def stepwise_log_probs(model: Seq2Seq, source, lengths, target_input) -> torch.Tensor:
    state = model.encode(source, lengths)
    steps = []
    for t in range(target_input.shape[1]):
        log_probs, state = model.decoder_step(target_input[:, t], state)
        steps.append(log_probs)
    return torch.stack(steps, dim=1)


KINDS = (*ATTENTION_KINDS, "none")
CASES = (
    [("lstm", kind, "luong", True, True) for kind in KINDS]
    + [("gru", kind, "bahdanau" if kind != "none" else "luong", True, False) for kind in KINDS]
    + [(cell, "general", "luong", False, bi) for cell in ("lstm", "gru") for bi in (True, False)]
)
"""(cell, attention kind, style, input feeding, bidirectional encoder)."""


def case_id(case: tuple) -> str:
    cell, kind, style, feeding, bidirectional = case
    feed = "" if feeding else "-nofeed"
    return f"{cell}-{kind}-{style}{feed}-{'bi' if bidirectional else 'uni'}-f64"


@pytest.mark.parametrize(
    ("cell", "attention", "style", "feeding", "bidirectional"), CASES, ids=map(case_id, CASES)
)
def test_teacher_forcing_equals_stepwise_decoding(cell, attention, style, feeding, bidirectional):
    model = build(
        cell=cell,
        attention=attention,
        attention_style=style,
        input_feeding=feeding,
        bidirectional=bidirectional,
        encoder_layers=2,
        decoder_layers=2,
    )
    source, lengths, target_input = padded_batch()
    output = model(source, lengths, target_input)
    assert output.logits.shape == (4, 6, TARGET_VOCABULARY)
    expected = stepwise_log_probs(model, source, lengths, target_input)
    assert_close(torch.log_softmax(output.logits, -1), expected, "log-probabilities", torch.float64)
    if attention == "none":
        assert output.attention is None
        return
    assert output.attention.shape == (4, 6, 5)
    torch.testing.assert_close(output.attention.sum(-1), torch.ones(4, 6, dtype=torch.float64))
    for row, length in enumerate(lengths.tolist()):
        padded = output.attention[row, :, length:]
        assert bool((padded == 0).all()), f"row {row}: padded positions get attention"


def test_padding_does_not_change_the_outputs():
    model = build(attention="additive")
    source, lengths, target_input = padded_batch()
    full = model(source, lengths, target_input).logits
    short = model(source[1:2, :2], lengths[1:2], target_input[1:2]).logits
    assert_close(full[1:2], short, "logits of the padded row", torch.float64)


@pytest.mark.parametrize("cell", ["lstm", "gru", "lru", "mlstm"])
def test_bridge_builds_every_field_of_every_decoder_layer(cell):
    model = build(cell=cell, decoder_layers=2, attention="general")
    source, lengths, _ = padded_batch()
    state = model.encode(source, lengths)
    assert len(state.recurrent) == 2
    for decoder_cell, layer_state in zip(model.decoder.cells, state.recurrent, strict=True):
        template = decoder_cell.initial_state(4)
        assert type(layer_state) is type(template)
        for field, value, expected in zip(template._fields, layer_state, template, strict=True):
            assert value.shape == expected.shape and value.dtype == expected.dtype, field
            assert bool((value != 0).any()), f"{field} was not bridged"
    assert state.feed.shape == (4, 8) and state.mask.shape == (4, 5)


def test_without_bridge_the_decoder_starts_from_zeros():
    model = build(bridge=False)
    source, lengths, _ = padded_batch()
    state = model.encode(source, lengths)
    assert all(bool((field == 0).all()) for layer in state.recurrent for field in layer)


def test_bahdanau_style_bridges_the_first_query():
    model = build(attention="additive", attention_style="bahdanau")
    source, lengths, _ = padded_batch()
    state = model.encode(source, lengths)
    assert state.feed.shape == (4, 8) and bool((state.feed != 0).any())


def test_greedy_and_beam_of_width_one_agree():
    model = build(attention="concat")
    source, lengths, _ = padded_batch()
    greedy = model.greedy(source, lengths, bos=1, eos=2, max_length=7)
    beam = model.beam_search(source, lengths, bos=1, eos=2, max_length=7, beam_width=1).best()
    assert torch.equal(greedy.tokens, beam.tokens) and torch.equal(greedy.lengths, beam.lengths)
    assert greedy.tokens.shape[0] == 4 and greedy.tokens.shape[1] <= 7


def test_training_mode_uses_dropout_and_gradients_reach_every_parameter():
    model = build(dropout=0.3).train()
    source, lengths, target_input = padded_batch()
    first = model(source, lengths, target_input).logits
    second = model(source, lengths, target_input).logits
    assert not torch.equal(first, second)
    first.sum().backward()
    missing = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert not missing, f"no gradient: {missing}"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"attention": "luong"}, "attention: expected one of"),
        ({"attention_style": "global"}, "attention_style: expected one of"),
        (
            {"decoder": RecurrentConfig(bidirectional=True)},
            "decoder.bidirectional: a decoder runs forwards only",
        ),
        ({"embedding_size": 0}, "embedding_size: expected a positive int"),
        ({"cell": "transformer"}, "transformer"),
    ],
)
def test_bad_configs_raise(options, message):
    with pytest.raises(ValueError, match=message):
        build(**options)


def test_bad_inputs_raise():
    model = build()
    source, lengths, target_input = padded_batch()
    with pytest.raises(ValueError, match="source: expected int64 tokens"):
        model(source.double(), lengths, target_input)
    bad_lengths = {
        "lengths must not exceed the 5 time steps of inputs, got a length of 6": [5, 2, 6, 1],
        "lengths must be at least 1, got a length of 0": [5, 2, 0, 1],
        r"lengths must have one entry per sequence, shape \(4,\), got shape \(3,\)": [5, 2, 1],
    }
    for message, bad in bad_lengths.items():
        with pytest.raises(ValueError, match=f"source_lengths: {message}"):
            model(source, torch.tensor(bad), target_input)
    with pytest.raises(ValueError, match=r"source_lengths must be int64, got torch.float32"):
        model(source, lengths.float(), target_input)
    with pytest.raises(ValueError, match="target_input: expected"):
        model(source, lengths, target_input[:2])


def test_encoder_and_decoder_may_differ_in_cell_size_and_options():
    encoder = RecurrentConfig(cell="gla", hidden_size=6, options={"num_heads": 2})
    decoder = RecurrentConfig(cell="gru", hidden_size=10)
    config = Seq2SeqConfig(embedding_size=6, encoder=encoder, decoder=decoder, dropout=0.0)
    model = Seq2Seq(config, SOURCE_VOCABULARY, TARGET_VOCABULARY).double()
    assert model.encoder.cells[0].num_heads == 2 and model.decoder.hidden_size == 10
    source, lengths, target_input = padded_batch()
    logits = model(source, lengths, target_input).logits
    assert logits.shape == (*target_input.shape, TARGET_VOCABULARY)
