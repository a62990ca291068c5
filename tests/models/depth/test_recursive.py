"""Looped and relaxed recursive transformers: sharing patterns, LoRA, initialization from a deep
model (float64 references written out block by block)."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace

import pytest
import torch
from torch.testing import assert_close

from rnnkit import cli
from rnnkit.models.depth.config import DepthConfig
from rnnkit.models.depth.recursive import (
    RecursiveConfig,
    RelaxedRecursion,
    block_order,
    initialize_from_deep,
    initialize_model_from_deep,
    shared_initial_weights,
)
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.models.sequence_model import Block, SequenceModelConfig, build_sequence_model

MIXERS = ["attention", "gru"]


def model_config(mixer: str) -> SequenceModelConfig:
    if mixer == "attention":
        return SequenceModelConfig(model_size=8, num_blocks=4, mixer="attention", num_heads=2)
    recurrent = RecurrentConfig(cell=mixer, hidden_size=6)
    return SequenceModelConfig(model_size=8, num_blocks=4, recurrent=recurrent)


def blocks(mixer: str, count: int, seed: int) -> list[Block]:
    torch.manual_seed(seed)
    config = model_config(mixer)
    return [Block(config, config.block_mixers()[0]).double() for _ in range(count)]


def run_blocks(layers: list[Block], inputs: torch.Tensor) -> torch.Tensor:
    hidden = inputs
    for layer in layers:
        hidden, _ = layer(hidden, None, None)
    return hidden


def test_block_orders_of_the_two_patterns():
    assert block_order(6, 3, "cycle") == [0, 1, 2, 0, 1, 2]
    assert block_order(6, 3, "sequence") == [0, 0, 1, 1, 2, 2]
    assert block_order(4, 1, "cycle") == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="num_layers: expected a multiple of shared_blocks"):
        block_order(5, 2, "cycle")
    with pytest.raises(ValueError, match="pattern: expected one of cycle, sequence, got 'zigzag'"):
        RecursiveConfig(pattern="zigzag")


@pytest.mark.parametrize("pattern", ["cycle", "sequence"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_rank_zero_is_plain_layer_tying(mixer, pattern):
    shared = blocks(mixer, 2, seed=1)
    stack = RelaxedRecursion(shared, RecursiveConfig(pattern=pattern), loops=2).double()
    inputs = torch.randn(3, 5, 8, dtype=torch.float64)
    order = [0, 1, 0, 1] if pattern == "cycle" else [0, 0, 1, 1]
    expected = run_blocks([shared[index] for index in order], inputs)
    outputs, state = stack(shared, inputs)
    assert_close(outputs, expected, msg="outputs")
    assert len(state) == 4
    # decoding one position at a time equals the full forward
    state, stepped = None, []
    for position in range(5):
        output, state = stack.step(shared, inputs[:, position], state)
        stepped.append(output)
    assert_close(torch.stack(stepped, 1), expected, msg="step outputs")


@pytest.mark.parametrize("mixer", MIXERS)
def test_new_lora_starts_at_the_looped_model_and_then_relaxes_it(mixer):
    config = RecursiveConfig(lora_rank=2, layer_vectors=True)
    shared = blocks(mixer, 1, seed=2)
    stack = RelaxedRecursion(shared, config, loops=3).double()
    inputs = torch.randn(2, 4, 8, dtype=torch.float64)
    assert_close(stack(shared, inputs)[0], run_blocks(shared * 3, inputs), msg="B_l = 0 at start")
    # the second layer's matrices become W + B_1 A_1; the reference applies that by hand
    name = next(n for n, p in shared[0].named_parameters() if p.dim() == 2)
    key = name.replace(".", "__")
    with torch.no_grad():
        stack.lora_up[1][key].normal_()
    relaxed = copy.deepcopy(shared[0])
    with torch.no_grad():
        dict(relaxed.named_parameters())[name].add_(stack.lora_up[1][key] @ stack.lora_down[1][key])
    assert_close(
        stack(shared, inputs)[0], run_blocks([shared[0], relaxed, shared[0]], inputs), msg="lora"
    )


def test_gradients_reach_the_shared_block_and_every_layer_lora():
    shared = blocks("attention", 1, seed=3)
    stack = RelaxedRecursion(shared, RecursiveConfig(lora_rank=1), loops=2).double()
    with torch.no_grad():
        for up in stack.lora_up:
            for parameter in up.values():
                parameter.normal_()
    stack(shared, torch.randn(2, 3, 8, dtype=torch.float64))[0].square().sum().backward()
    for name, parameter in [*stack.named_parameters(), *shared[0].named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mixer", MIXERS)
def test_parameter_count(mixer):
    shared = blocks(mixer, 2, seed=4)
    block_parameters = sum(p.numel() for p in shared[0].parameters())
    matrices = [p.shape for p in shared[0].parameters() if p.dim() == 2]
    vectors = sum(p.numel() for p in shared[0].parameters() if p.dim() == 1)
    rank = 3
    config = RecursiveConfig(lora_rank=rank, layer_vectors=True)
    stack = RelaxedRecursion(shared, config, loops=3)
    lora = sum(rank * (rows + columns) for rows, columns in matrices)
    assert sum(p.numel() for p in stack.parameters()) == 6 * (lora + vectors)
    assert sum(p.numel() for p in RelaxedRecursion(shared, RecursiveConfig(), 3).parameters()) == 0
    assert block_parameters > 0


def test_shared_initial_weights_of_each_method():
    deep = blocks("attention", 4, seed=5)
    name = "mlp.0.weight"
    weights = [dict(block.named_parameters())[name] for block in deep]
    cycle = block_order(4, 2, "cycle")
    sequence = block_order(4, 2, "sequence")
    stepwise = shared_initial_weights(deep, cycle, "stepwise")
    assert_close(stepwise[0][name], weights[0])
    assert_close(stepwise[1][name], weights[2])
    average = shared_initial_weights(deep, cycle, "average")
    assert_close(average[1][name], (weights[1] + weights[3]) / 2)
    average = shared_initial_weights(deep, sequence, "average")
    assert_close(average[1][name], (weights[2] + weights[3]) / 2)
    lower = shared_initial_weights(deep, sequence, "lower")
    assert_close(lower[1][name], weights[1])
    with pytest.raises(ValueError, match="method: expected one of stepwise, average, lower"):
        shared_initial_weights(deep, cycle, "upper")


@pytest.mark.parametrize("method", ["stepwise", "average", "lower"])
@pytest.mark.parametrize("pattern", ["cycle", "sequence"])
@pytest.mark.parametrize("mixer", MIXERS)
def test_full_rank_svd_initialization_reproduces_the_deep_teacher(mixer, pattern, method):
    deep = blocks(mixer, 4, seed=6)
    inputs = torch.randn(2, 5, 8, dtype=torch.float64)
    config = RecursiveConfig(pattern=pattern, lora_rank=32, layer_vectors=True)
    shared = blocks(mixer, 2, seed=7)
    stack = RelaxedRecursion(shared, config, loops=2).double()
    initialize_from_deep(stack, shared, deep, method)
    assert_close(stack(shared, inputs)[0], run_blocks(deep, inputs), rtol=1e-10, atol=1e-10)


def test_truncated_svd_lora_is_the_best_low_rank_residual():
    deep = blocks("attention", 2, seed=8)
    shared = blocks("attention", 1, seed=9)
    stack = RelaxedRecursion(shared, RecursiveConfig(lora_rank=2), loops=2).double()
    initialize_from_deep(stack, shared, deep, "stepwise")
    name = "mlp.2.weight"
    residual = dict(deep[1].named_parameters())[name] - dict(shared[0].named_parameters())[name]
    left, singular, right = torch.linalg.svd(residual.detach(), full_matrices=False)
    best = left[:, :2] @ torch.diag(singular[:2]) @ right[:2]
    key = name.replace(".", "__")
    assert_close(stack.lora_up[1][key] @ stack.lora_down[1][key], best)
    # layer 0 is the stepwise source itself: a zero residual
    assert stack.lora_up[0][key].abs().max() < 1e-12


def relaxed_config(mixer: str, **recursive) -> SequenceModelConfig:
    depth = DepthConfig(recursion="relaxed", max_steps=2, recursive=RecursiveConfig(**recursive))
    return replace(model_config(mixer), num_blocks=2, depth=depth)


@pytest.mark.parametrize("mixer", MIXERS)
def test_relaxed_sequence_model_from_its_deep_teacher(mixer):
    torch.manual_seed(10)
    teacher = build_sequence_model(model_config(mixer), vocabulary_size=9).double()
    config = relaxed_config(mixer, pattern="sequence", lora_rank=32, layer_vectors=True)
    student = build_sequence_model(config, vocabulary_size=9).double()
    tokens = torch.randint(0, 9, (2, 6))
    assert not torch.allclose(student(tokens)[0], teacher(tokens)[0])
    initialize_model_from_deep(student, teacher, "average")
    expected = teacher(tokens)[0]
    assert_close(student(tokens)[0], expected, rtol=1e-10, atol=1e-10)
    state, stepped = None, []
    for position in range(6):
        output, state = student.step(tokens[:, position], state)
        stepped.append(output)
    assert_close(torch.stack(stepped, 1), expected, rtol=1e-10, atol=1e-10)
    block = sum(p.numel() for p in teacher.block_list()[0].parameters())
    tied = build_sequence_model(relaxed_config(mixer), vocabulary_size=9)
    assert tied.parameter_count() == teacher.parameter_count() - 2 * block
    with pytest.raises(ValueError, match="model: expected depth.recursion='relaxed', got 'none'"):
        initialize_model_from_deep(teacher, teacher)


def test_relaxed_model_trains_through_the_command_line(tmp_path, capsys):
    run = tmp_path / "relaxed"
    arguments = [
        "train", "copy", "--trainer.max_steps=3", "--run-dir", str(run),
        "--model.cell=attention", "--model.model_size=16", "--model.num_blocks=2",
        "--model.num_heads=2", "--trainer.batch_size=4", "--evaluation.sequences=8",
        "--evaluation.batch_size=4", "--data.delay=4", "--data.string_length=4",
        "--model.depth.recursion=relaxed", "--model.depth.max_steps=3",
        "--model.depth.recursive.lora_rank=2", "--model.depth.recursive.pattern=sequence",
    ]  # fmt: skip
    assert cli.main(arguments) == 0
    output = capsys.readouterr().out
    assert "final validation after 3 steps" in output and "effective_layers 6" in output
    assert cli.main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["effective_layers"] == 6 and math.isfinite(metrics["loss"])
    assert cli.main(["eval", str(run), "--depth-schedule", "0,1"]) == 1
    assert "--depth-schedule: expected a model without depth recursion" in capsys.readouterr().err
