"""Mixture-of-Recursions: routing shapes and capacities, causality, the auxiliary losses, the
compute statistics, recursion-wise KV caching, against a token-by-token float64 reference."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.testing import assert_close

from rnnkit import cli
from rnnkit.models.causal_attention import rotary_embedding
from rnnkit.models.depth.config import DepthConfig
from rnnkit.models.depth.mixture_of_recursions import MixtureOfRecursionsConfig, capacities
from rnnkit.models.sequence_model import SequenceModelConfig, build_sequence_model

VOCABULARY = 7
ROUTINGS = [("expert", "aux_loss"), ("expert", "aux_router"), ("token", "aux_loss")]


def mor_model(routing: str, sampling: str = "aux_loss", recursions: int = 3, blocks: int = 1):
    torch.manual_seed(0)
    mixture = MixtureOfRecursionsConfig(routing=routing, expert_sampling=sampling)
    config = SequenceModelConfig(
        model_size=8,
        num_blocks=blocks,
        mixer="attention",
        num_heads=2,
        depth=DepthConfig(recursion="mor", max_steps=recursions, mixture=mixture),
    )
    model = build_sequence_model(config, vocabulary_size=VOCABULARY).double()
    with torch.no_grad():  # routers that keep some tokens and drop others at inference
        for router in [*model.depth.routers, *model.depth.auxiliary_routers]:
            router.weight.normal_(0.0, 3.0)
            router.bias.fill_(0.5)
    return model


def attention_reference(block, hidden, active):
    """One pre-norm block, attention written out per query over the active earlier keys."""
    attention = block.mixer
    batch, length, size = hidden.shape
    heads, head_size = attention.num_heads, attention.head_size
    normed = block.mixer_norm(hidden)
    query, key, value = attention.query_key_value(normed).split(size, dim=-1)
    positions = torch.arange(length)

    def heads_of(tensor, rotate):
        tensor = tensor.view(batch, length, heads, head_size).transpose(1, 2)
        return rotary_embedding(tensor, positions, attention.rotary_base) if rotate else tensor

    query, key, value = heads_of(query, True), heads_of(key, True), heads_of(value, False)
    mixed = torch.zeros(batch, heads, length, head_size, dtype=hidden.dtype)
    for row in range(batch):
        for t in range(length):
            keys = [s for s in range(t + 1) if active[row, s] or s == t]
            scores = torch.einsum("hd,hnd->hn", query[row, :, t], key[row, :, keys])
            weights = torch.softmax(scores / math.sqrt(head_size), dim=-1)
            mixed[row, :, t] = torch.einsum("hn,hnd->hd", weights, value[row, :, keys])
    hidden = hidden + attention.output(mixed.transpose(1, 2).reshape(batch, length, size))
    return hidden + block.mlp(block.mlp_norm(hidden))


def reference_hidden(model, tokens, depths, steps):
    """``H^steps`` of the module docstring's equations with the routing ``depths (B, T)``."""
    mor = model.depth
    hidden = model.embedding(tokens)
    if mor.depth_router is not None:
        token_gate = torch.softmax(mor.depth_router(hidden), dim=-1).max(dim=-1).values
    for step in range(steps):
        active = depths > step
        if mor.depth_router is None:
            gate = torch.sigmoid(mor.routers[step](hidden).squeeze(-1))
        else:
            gate = torch.where(depths == step + 1, token_gate, torch.ones_like(token_gate))
        updated = hidden
        for block in model.block_list():
            updated = attention_reference(block, updated, active)
        hidden = hidden + (gate * active)[..., None] * (updated - hidden)
    return hidden


def reference_forward(model, tokens, depths):
    hidden = reference_hidden(model, tokens, depths, model.depth.max_recursions)
    return model.head(model.final_norm(hidden))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("routing", "sampling"), ROUTINGS)
def test_forward_equals_the_token_by_token_reference(routing, sampling, training):
    model = mor_model(routing, sampling, blocks=2)
    model.train(training)
    tokens = torch.randint(0, VOCABULARY, (3, 6))
    outputs, state = model(tokens)
    depths = model.depth.last_depths
    assert depths.shape == (3, 6) and len(state) == 3 and len(state[0]) == 2
    assert set(depths.flatten().tolist()) <= {0, 1, 2, 3}
    assert_close(outputs, reference_forward(model, tokens, depths))


def test_expert_choice_capacity_schedule_and_hierarchy():
    assert capacities(3) == [1.0, 2 / 3, 1 / 3]
    model = mor_model("expert")
    model.train()
    model(torch.randint(0, VOCABULARY, (4, 9)))
    depths = model.depth.last_depths
    for step, capacity in enumerate(capacities(3)):
        # exactly k_r tokens per row go on, chosen among the previous step's (depth > r)
        assert ((depths > step).sum(1) == max(1, int(capacity * 9))).all()
    lengths = torch.tensor([9, 4, 2, 1])
    model(torch.randint(0, VOCABULARY, (4, 9)), lengths=lengths)
    depths = model.depth.last_depths
    for row, length in enumerate(lengths.tolist()):
        assert (depths[row, length:] == 0).all()
        for step, capacity in enumerate(capacities(3)):
            assert (depths[row] > step).sum() == min(length, max(1, int(capacity * 9)))


CAUSAL = [  # expert-choice top-k reads the whole sequence in training (the paper's point)
    (routing, sampling, training)
    for routing, sampling in ROUTINGS
    for training in (True, False)
    if routing == "token" or not training
]


@pytest.mark.parametrize(("routing", "sampling", "training"), CAUSAL)
def test_outputs_are_causal(routing, sampling, training):
    model = mor_model(routing, sampling)
    model.train(training)
    tokens = torch.randint(0, VOCABULARY, (2, 8))
    changed = tokens.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % VOCABULARY
    assert_close(model(tokens)[0][:, :5], model(changed)[0][:, :5])
    assert not torch.allclose(model(tokens)[0][:, 5:], model(changed)[0][:, 5:])


@pytest.mark.parametrize(("routing", "sampling"), ROUTINGS)
def test_decoding_with_recursion_wise_caches_equals_the_forward(routing, sampling):
    model = mor_model(routing, sampling, blocks=2)
    model.eval()
    tokens = torch.randint(0, VOCABULARY, (3, 7))
    expected, _ = model(tokens)
    depths = model.depth.last_depths
    assert len(set(depths.flatten().tolist())) > 1  # the routing differs between tokens
    outputs, state = model(tokens[:, :3])  # a prefix, then one token at a time
    stepped = [outputs]
    for position in range(3, 7):
        output, state = model.step(tokens[:, position], state)
        stepped.append(output[:, None])
    assert_close(torch.cat(stepped, 1), expected)
    for step, caches in enumerate(state):  # a depth's cache marks the tokens that reached it
        assert torch.equal(caches[0].active, depths > step)


def test_auxiliary_losses_follow_the_paper():
    model = mor_model("token")
    model.train()
    tokens = torch.randint(0, VOCABULARY, (3, 6))
    model(tokens)
    probabilities = torch.softmax(model.depth.depth_router(model.embedding(tokens)), dim=-1)
    fractions = torch.stack([(model.depth.last_depths == j + 1).double().mean() for j in range(3)])
    balance = 3 * (fractions * probabilities.mean((0, 1))).sum()
    assert_close(model.auxiliary_loss(), 0.01 * balance)
    for sampling in ("aux_loss", "aux_router"):
        model = mor_model("expert", sampling, recursions=2)
        model.train()
        model(tokens)
        depths = model.depth.last_depths
        deciders = model.depth.auxiliary_routers or model.depth.routers
        losses = []
        for step in range(2):  # BCE of the router's logits against the top-k choice
            hidden = reference_hidden(model, tokens, depths, step)
            logits = deciders[step](hidden).squeeze(-1)
            targets = (depths > step).double()
            losses.append(torch.nn.functional.binary_cross_entropy_with_logits(logits, targets))
        assert_close(model.auxiliary_loss(), 0.01 * torch.stack(losses).mean())
    model.eval()
    model(tokens)
    assert model.auxiliary_loss() is None


def test_gradients_reach_the_routers():
    for routing, sampling in ROUTINGS:
        model = mor_model(routing, sampling)
        model.train()
        outputs, _ = model(torch.randint(0, VOCABULARY, (2, 6)))
        (outputs.square().mean() + model.auxiliary_loss()).backward()
        routers = [*model.depth.routers, *model.depth.auxiliary_routers]
        routers += [model.depth.depth_router] if model.depth.depth_router is not None else []
        for router in routers:
            assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0


def test_compute_statistics():
    model = mor_model("token", blocks=2)
    model.eval()
    model.reset_depth_statistics()
    tokens = torch.randint(0, VOCABULARY, (2, 5))
    lengths = torch.tensor([5, 3])
    model(tokens, lengths=lengths)
    depths = model.depth.last_depths
    real = torch.arange(5)[None, :] < lengths[:, None]
    matrices = sum(p.numel() for b in model.block_list() for p in b.parameters() if p.dim() == 2)
    pairs = 0
    for step in range(3):
        active = (depths > step) & real
        for row in range(2):
            for t in range(5):
                if active[row, t]:
                    pairs += int(active[row, : t + 1].sum())
    steps = int(depths[real].sum())
    statistics = model.depth_statistics()
    assert statistics["mean_recursions"] == pytest.approx(steps / 8)
    expected_flops = (2 * matrices * steps + 4 * 8 * 2 * pairs) / 8
    assert statistics["flops_per_token"] == pytest.approx(expected_flops)


def test_recurrent_blocks_are_refused():
    config = SequenceModelConfig(
        model_size=8, num_blocks=1, depth=DepthConfig(recursion="mor", max_steps=2)
    )
    model = build_sequence_model(config, vocabulary_size=VOCABULARY)
    with pytest.raises(ValueError, match="'mor' expects attention blocks .* got a lstm block"):
        model(torch.randint(0, VOCABULARY, (1, 3)))
    with pytest.raises(ValueError, match="routing: expected one of expert, token, got 'random'"):
        MixtureOfRecursionsConfig(routing="random")


@pytest.mark.parametrize("routing", ["expert", "token"])
def test_trains_through_the_command_line_and_reports_compute(routing, tmp_path, capsys):
    run = tmp_path / routing
    arguments = [
        "train", "copy", "--trainer.max_steps=3", "--run-dir", str(run),
        "--model.cell=attention", "--model.model_size=16", "--model.num_blocks=1",
        "--model.num_heads=2", "--trainer.batch_size=4", "--evaluation.sequences=8",
        "--evaluation.batch_size=4", "--data.delay=4", "--data.string_length=4",
        "--model.depth.recursion=mor", "--model.depth.max_steps=3",
        f"--model.depth.mixture.routing={routing}",
    ]  # fmt: skip
    assert cli.main(arguments) == 0
    output = capsys.readouterr().out
    assert "final validation after 3 steps" in output and "mean_recursions" in output
    assert cli.main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert 0 <= metrics["mean_recursions"] <= 3 and metrics["flops_per_token"] > 0
