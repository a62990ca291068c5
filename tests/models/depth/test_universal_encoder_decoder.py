"""The encoder-decoder Universal Transformer: attention against a readable masked softmax,
source padding, causality of the decoder, token-by-token decoding, the ponder losses."""

from __future__ import annotations

import math

import torch

from rnnkit.models.depth import DepthConfig
from rnnkit.models.depth.universal_encoder_decoder import (
    MultiHeadAttention,
    UniversalEncoderDecoder,
)


def model(act: bool = True) -> UniversalEncoderDecoder:
    torch.manual_seed(0)
    depth = DepthConfig(recursion="universal", max_steps=3, act=act, halting_bias=0.0)
    return UniversalEncoderDecoder(7, 9, depth, model_size=8, num_heads=2).double()


def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    source = torch.randint(0, 7, (3, 6), generator=generator)
    targets = torch.randint(0, 9, (3, 5), generator=generator)
    return source, targets, torch.tensor([6, 2, 4])


def test_attention_is_a_masked_softmax_per_head():
    torch.manual_seed(2)
    attention = MultiHeadAttention(8, 2).double()
    queries, memory = torch.randn(2, 3, 8).double(), torch.randn(2, 4, 8).double()
    mask = torch.tensor([[True, True, True, True], [True, False, True, False]])
    got = attention(queries, memory, mask)
    key_value = attention.key_value(memory)
    keys, values = key_value[..., :8], key_value[..., 8:]
    projected = attention.query(queries)
    rows = []
    for b in range(2):
        heads = []
        for head in range(2):
            part = slice(4 * head, 4 * head + 4)
            scores = projected[b, :, part] @ keys[b, :, part].T / math.sqrt(4)  # (3, 4)
            scores = scores.masked_fill(~mask[b], float("-inf"))
            heads.append(torch.softmax(scores, -1) @ values[b, :, part])
        rows.append(torch.cat(heads, -1))
    torch.testing.assert_close(got, attention.output(torch.stack(rows)))


def test_padded_sources_give_the_outputs_of_the_sources_alone():
    network = model()
    source, targets, lengths = batch()
    with torch.no_grad():
        padded = network(source, targets, lengths)
        for row, length in enumerate(lengths.tolist()):
            alone = network(source[row : row + 1, :length], targets[row : row + 1])
            torch.testing.assert_close(padded[row], alone[0], msg=f"row {row}")
        network.encode(source, lengths)
        steps = network.encoder_depth.latest_steps
        assert steps is not None
        assert float(steps[1, 2:].sum()) == 0.0 and bool((steps[1, :2] >= 1).all())


def test_the_decoder_is_causal_and_decodes_token_by_token():
    network = model()
    source, targets, lengths = batch()
    with torch.no_grad():
        logits = network(source, targets, lengths)
        changed = targets.clone()
        changed[:, 3:] = (changed[:, 3:] + 1) % 9
        torch.testing.assert_close(network(source, changed, lengths)[:, :3], logits[:, :3])
        memory = network.encode(source, lengths)
        state, stepped = None, []
        for position in range(targets.shape[1]):
            output, state = network.decoder_step(targets[:, position], memory, state)
            stepped.append(output)
    torch.testing.assert_close(torch.stack(stepped, 1), logits, msg="step vs teacher forcing")


def test_the_ponder_losses_of_both_sides_train_both_halting_units():
    network = model()
    source, targets, lengths = batch()
    logits = network(source, targets, lengths)
    auxiliary = network.auxiliary_loss()
    assert auxiliary is not None
    encoder_cost = network.encoder_depth.latest_ponder_cost
    decoder_cost = network.decoder_depth.latest_ponder_cost
    assert encoder_cost is not None and decoder_cost is not None
    real = torch.arange(6)[None, :] < lengths[:, None]
    expected = 0.01 * (encoder_cost[real].mean() + decoder_cost.mean())
    torch.testing.assert_close(auxiliary.detach(), expected)
    (logits.logsumexp(-1).mean() + auxiliary).backward()
    for name in ("encoder_depth.act.halting.weight", "decoder_depth.act.halting.weight"):
        gradient = dict(network.named_parameters())[name].grad
        assert gradient is not None and float(gradient.abs().sum()) > 0, name


def test_without_act_there_is_no_ponder_loss_and_every_step_runs():
    network = model(act=False)
    source, targets, lengths = batch()
    network(source, targets, lengths)
    assert network.auxiliary_loss() is None
    assert network.decoder_depth.statistics()["ponder_steps"] == 3.0
