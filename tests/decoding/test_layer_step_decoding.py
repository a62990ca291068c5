"""Decoding through the layer step equals decoding through a whole forward per token (f64)."""

from __future__ import annotations

import torch
from conftest import assert_close

from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.nn import Recurrent

F64 = torch.float64


def forward_one_step(layer: Recurrent):
    """What decoding ran before ``step``: a whole forward over a sequence of one token."""

    def step(inputs, state=None):
        outputs, new_state = Recurrent.forward(layer, inputs.unsqueeze(1), state)
        return outputs[:, 0], new_state

    return step


def test_language_model_step_equals_forward():
    torch.manual_seed(0)
    model = LanguageModel(LanguageModelConfig(), vocabulary_size=11).to(F64).eval()
    tokens = torch.randint(0, 11, (3, 6))
    expected, expected_state = model(tokens)
    state = None
    for t in range(tokens.shape[1]):
        logits, state = model.step(tokens[:, t], state)
        assert_close(logits, expected[:, t], f"logits at step {t}", F64)
    for index, (got, want) in enumerate(zip(state, expected_state, strict=True)):
        for field, got_field, want_field in zip(want._fields, got, want, strict=True):
            assert_close(got_field, want_field, f"state[{index}].{field}", F64)


def test_seq2seq_beam_search_by_step_equals_by_forward():
    torch.manual_seed(0)
    encoder = RecurrentConfig(hidden_size=8, bidirectional=True)
    config = Seq2SeqConfig(encoder=encoder, decoder=RecurrentConfig(hidden_size=16), dropout=0.0)
    model = Seq2Seq(config, 9, 9).to(F64).eval()
    source = torch.randint(3, 9, (4, 7))
    lengths = torch.tensor([7, 5, 6, 3])
    by_step = model.beam_search(source, lengths, 1, 2, 9, beam_width=3)
    model.decoder.step = forward_one_step(model.decoder)
    try:
        by_forward = model.beam_search(source, lengths, 1, 2, 9, beam_width=3)
    finally:
        del model.decoder.step
    for field in by_step._fields:
        got, want = getattr(by_step, field), getattr(by_forward, field)
        if want.is_floating_point():
            assert_close(got, want, field, F64)
        else:
            assert torch.equal(got, want), f"{field} differs"
