"""The char-LM's transformer with recurrence in depth: command line, window-local training,
generation with KV caches, and a relaxed recursive model initialized from a deep run."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional

from rnnkit import cli
from rnnkit.data import bundled_path
from rnnkit.models.transformer_lm import TransformerLanguageModel
from rnnkit.train.config import from_dict
from rnnkit.train.tasks import charlm
from rnnkit.train.tasks.charlm import CharLMConfig

TINY = [
    "--trainer.batch_size=4",
    "--bptt.window=16",
    "--bptt.evaluation_streams=4",
    "--sample.length=12",
    "--trainer.threads=1",
    "--model.mixer=attention",
    "--model.transformer.model_size=16",
]


@pytest.fixture(scope="module")
def text_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "shakespeare.txt"
    path.write_text(bundled_path().read_text(encoding="utf-8")[:4000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def deep_run(text_path, tmp_path_factory):
    """A 4-block transformer trained 3 steps."""
    run_dir = tmp_path_factory.mktemp("deep") / "run"
    command = ["train", "charlm", "--data", str(text_path), "--steps", "3", "--run-dir"]
    assert cli.main([*command, str(run_dir), *TINY, "--model.transformer.num_blocks=4"]) == 0
    return run_dir


def config_for(text_path, **transformer) -> CharLMConfig:
    """A tiny transformer char-LM config; ``transformer`` sets ``model.transformer`` options."""
    model = {"mixer": "attention", "transformer": {"model_size": 16, **transformer}}
    data = {"data": {"path": str(text_path)}, "trainer": {"batch_size": 4}}
    return from_dict(CharLMConfig, {**data, "bptt": {"window": 16}, "model": model})


@pytest.mark.parametrize("recursion", ["none", "relaxed", "mor"])
def test_cli_trains_evaluates_and_samples(recursion, text_path, tmp_path, capsys):
    run_dir = tmp_path / "run"
    depth = [f"--model.transformer.depth.recursion={recursion}", "--model.transformer.num_blocks=2"]
    depth += [
        "--model.transformer.depth.max_steps=2",
        "--model.transformer.depth.recursive.lora_rank=2",
    ]
    command = ["train", "charlm", "--data", str(text_path), "--steps", "2", "--run-dir"]
    assert cli.main([*command, str(run_dir), *TINY, *depth]) == 0
    assert "final validation loss" in capsys.readouterr().out
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    validation = [record for record in records if record["kind"] == "validation"][-1]
    assert validation["flops_per_token"] > 0
    if recursion == "mor":
        assert 0 < validation["mean_recursions"] <= 2
    assert (
        cli.main(["sample", str(run_dir), "--prompt", "RO", "--length", "15", "--seed", "0"]) == 0
    )
    sample = capsys.readouterr().out
    assert sample.startswith("RO") and len(sample) >= 2 + 15  # and a newline


@pytest.mark.parametrize("recursion", ["none", "relaxed", "mor"])
def test_stepping_with_caches_equals_the_forward(recursion):
    torch.manual_seed(0)
    config = from_dict(CharLMConfig, {}).model.transformer
    config = type(config)(model_size=16, num_blocks=2, mixer="attention", num_heads=2)
    config.depth.recursion, config.depth.max_steps = recursion, 3
    config.depth.recursive.lora_rank = 2
    model = TransformerLanguageModel(config, 11).double().eval()
    if recursion == "relaxed":  # nonzero LoRA, so each effective layer differs
        for parameter in model.network.depth.parameters():
            torch.nn.init.normal_(parameter, std=0.1)
    tokens = torch.randint(0, 11, (3, 9))
    full, _ = model(tokens)  # (3, 9, 11)
    logits, state = model(tokens[:, :4])
    torch.testing.assert_close(logits, full[:, :4])
    for position in range(4, 9):
        stepped, state = model.step(tokens[:, position], state)
        torch.testing.assert_close(stepped, full[:, position], msg=f"position {position}")
    if recursion == "mor":  # the causal routing left some tokens short of full depth
        assert int((model.network.depth.last_depths < 3).sum()) > 0


def test_training_windows_start_empty_and_add_the_router_loss(text_path):
    task = charlm.build(config_for(text_path, num_blocks=1, depth={"recursion": "mor"}), None)
    for step in (0, 1):  # window 1 sees nothing of window 0
        loss, count = task.train_loss(step)
        window = task.bptt.batcher.window_at(step)
        logits, _ = task.model(window.inputs)
        auxiliary = task.model.auxiliary_loss()
        assert auxiliary is not None and float(auxiliary.detach()) > 0
        expected = functional.cross_entropy(logits.flatten(0, 1), window.targets.flatten())
        torch.testing.assert_close(loss, expected + auxiliary)
        assert count == window.targets.numel() == 4 * 16


def relaxed_task(text_path, deep_run, method: str, rank: int, vectors: bool):
    config = config_for(
        text_path,
        num_blocks=2,
        depth={
            "recursion": "relaxed",
            "max_steps": 2,
            "recursive": {"lora_rank": rank, "layer_vectors": vectors},
        },
    )
    config.model.initialize_from, config.model.initialization = str(deep_run), method
    return charlm.build(config, None)


@pytest.mark.parametrize("method", ["stepwise", "average"])
def test_full_rank_initialization_ties_blocks_and_reproduces_the_teacher(
    method, text_path, deep_run
):
    task = relaxed_task(text_path, deep_run, method, rank=16, vectors=True)
    _, deep, _, _ = charlm.load_trained(deep_run)
    deep_blocks = [dict(block.named_parameters()) for block in deep.network.block_list()]
    for index, block in enumerate(task.model.network.block_list()):  # cycle: layers b, b + 2
        for name, parameter in block.named_parameters():
            tied = [deep_blocks[index][name], deep_blocks[index + 2][name]]
            # stepwise: deep layer b K (K = 2 loops); average: the mean of the tied layers
            expected = deep_blocks[2 * index][name] if method == "stepwise" else sum(tied) / 2
            torch.testing.assert_close(parameter, expected, msg=f"block {index} {name}")
    loss, _ = task.train_loss(0)  # full-rank LoRA and vector offsets: the deep model again
    window = task.bptt.batcher.window_at(0)
    logits, _ = deep(window.inputs)
    expected = functional.cross_entropy(logits.flatten(0, 1), window.targets.flatten())
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def test_low_rank_initialization_is_the_truncated_svd_of_each_residual(text_path, deep_run):
    task = relaxed_task(text_path, deep_run, "stepwise", rank=2, vectors=False)
    _, deep, _, _ = charlm.load_trained(deep_run)
    blocks, recursion = task.model.network.block_list(), task.model.network.depth
    for layer, deep_block in enumerate(deep.network.block_list()):
        changed = recursion.layer_parameters(blocks, layer)
        shared = dict(blocks[recursion.order[layer]].named_parameters())
        for name, weight in deep_block.named_parameters():
            if weight.dim() != 2:
                continue
            singular = torch.linalg.svdvals(weight - shared[name])
            error = torch.linalg.matrix_norm(weight - changed[name])
            torch.testing.assert_close(error, singular[2:].square().sum().sqrt(), msg=name)


def test_initialization_errors_name_what_differs(text_path, deep_run, tmp_path, capsys):
    command = ["train", "charlm", "--data", str(text_path), "--steps", "1", "--run-dir"]
    relaxed = ["--model.transformer.depth.recursion=relaxed", f"--model.initialize_from={deep_run}"]
    arguments = [*command, str(tmp_path / "a"), *TINY, *relaxed, "--model.transformer.num_blocks=3"]
    assert cli.main(arguments) == 1
    assert "expected num_blocks x depth.max_steps = 3 x 4 = 12" in capsys.readouterr().err
    other = tmp_path / "other.txt"
    other.write_text("abcdefgh " * 400, encoding="utf-8")
    arguments = ["train", "charlm", "--data", str(other), "--run-dir", str(tmp_path / "b")]
    assert cli.main([*arguments, *TINY, *relaxed, "--model.transformer.num_blocks=2"]) == 1
    assert "another vocabulary" in capsys.readouterr().err
    arguments = [*command, str(tmp_path / "c"), *TINY, f"--model.initialize_from={deep_run}"]
    assert cli.main(arguments) == 1
    assert "transformer.depth.recursion='relaxed'" in capsys.readouterr().err
