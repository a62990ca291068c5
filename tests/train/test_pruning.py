"""Gradual magnitude pruning: the schedules against their formulas, the sparsity reached,
masks that hold under further optimizer steps, whole blocks and whole units, exact resume, and
``--prune.*`` on the command line of a char-LM and a benchmark task."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from rnnkit import cli
from rnnkit.data import bundled_path
from rnnkit.nn import Recurrent
from rnnkit.train.metrics import read_metrics
from rnnkit.train.pruning import (
    PruneConfig,
    Pruner,
    cubic_sparsity,
    heuristic_start_slope,
    narang_threshold,
)
from rnnkit.train.tasks import TASKS
from rnnkit.train.trainer import Trainer


def test_narang_threshold_follows_the_paper_at_chosen_steps():
    # start 10, ramp 30, end 50, freq 5, theta 0.02, phi 0.03
    def eps(step):
        return narang_threshold(step, (10, 30, 50), 5, 0.02, 0.03)

    assert eps(9) == 0.0
    assert eps(10) == pytest.approx(0.02 * 1 / 5)
    assert eps(25) == pytest.approx(0.02 * 16 / 5)
    assert eps(29) == pytest.approx(0.02 * 20 / 5)
    assert eps(30) == pytest.approx((0.02 * 21 + 0.03 * 1) / 5)
    assert eps(50) == pytest.approx((0.02 * 21 + 0.03 * 21) / 5)
    assert eps(80) == eps(50)  # fixed after end_itr


def test_heuristic_slopes_end_at_the_quantile():
    q, start, ramp, end, freq = 0.7, 100, 400, 1000, 50
    theta = heuristic_start_slope(q, (start, ramp, end), freq)
    assert theta == pytest.approx(2 * q * freq / (2 * 300 + 3 * 600))
    at_end = narang_threshold(end, (start, ramp, end), freq, theta, 1.5 * theta)
    # eps(end) = q (2 (R + 1) + 3 (E + 1)) / (2 R + 3 E): q up to the paper's "+ 1" terms
    assert at_end == pytest.approx(q * (2 * 301 + 3 * 601) / (2 * 300 + 3 * 600))


def test_cubic_sparsity_follows_zhu_and_gupta():
    for step, progress in [(20, 0.0), (30, 0.25), (45, 0.625), (60, 1.0), (90, 1.0)]:
        expected = 0.8 * (1 - (1 - progress) ** 3)
        assert cubic_sparsity(step, 20, 60, 0.8) == pytest.approx(expected)
    assert cubic_sparsity(5, 20, 60, 0.8) == 0.0


def test_updates_happen_at_multiples_of_the_frequency_and_at_the_end():
    model = Recurrent("lstm", 4, 8)
    pruner = Pruner(model, PruneConfig(final_sparsity=0.5, start_step=3, end_step=17,
                                       frequency=4), max_steps=None)  # fmt: skip
    assert [step for step in range(30) if pruner.due(step)] == [4, 8, 12, 16, 17]
    defaults = Pruner(model, PruneConfig(final_sparsity=0.5), max_steps=200)
    assert defaults.steps == (20, 60, 100)


def test_absolute_slopes_prune_every_weight_below_the_threshold_of_the_step():
    torch.manual_seed(4)
    model = Recurrent("elman", 6, 12)
    original = {name: p.detach().clone() for name, p in model.named_parameters() if p.dim() == 2}
    config = PruneConfig(final_sparsity=0.5, start_step=2, ramp_step=6, end_step=10,
                         frequency=2, start_slope=0.01, ramp_slope=0.03)  # fmt: skip
    pruner = Pruner(model, config, max_steps=None)
    for step, threshold in [(2, 0.01 * 1 / 2), (4, 0.01 * 3 / 2), (8, (0.01 * 5 + 0.03 * 3) / 2),
                            (10, (0.01 * 5 + 0.03 * 5) / 2)]:  # fmt: skip
        pruner.after_step(step)  # the weights do not change between updates here
        for name, parameter in model.named_parameters():
            if name in original:
                expected = torch.where(original[name].abs() < threshold, 0.0, original[name])
                assert torch.equal(parameter.detach(), expected), (step, name)


def train(model, pruner, steps, first=1, seed=0):
    """AdamW with weight decay on a regression loss; the trainer's order of mask calls."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    for step in range(first, first + steps):
        dtype = model.cells[0].weight_ih.dtype
        inputs = torch.randn(3, 5, model.input_size, generator=generator, dtype=dtype)
        outputs, _ = model(inputs)
        loss = (outputs - 0.3).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        optimizer.step()
        pruner.after_step(step)


@pytest.mark.parametrize("schedule", ["narang", "cubic"])
def test_the_end_step_reaches_the_target_per_layer_and_overall(schedule):
    torch.manual_seed(0)
    model = Recurrent("lstm", 6, 10, num_layers=2)
    config = PruneConfig(final_sparsity=0.9, schedule=schedule, start_step=2, end_step=20,
                         frequency=3)  # fmt: skip
    pruner = Pruner(model, config, max_steps=None)
    names = ["cells.0.weight_ih", "cells.0.weight_hh", "cells.1.weight_ih", "cells.1.weight_hh"]
    assert [group.name for group in pruner.groups] == names
    train(model, pruner, 13)
    assert 0.0 < pruner.sparsity() < 0.85  # gradual: below the target before the end step
    train(model, pruner, 7, first=14)
    weights = dict(model.named_parameters())
    for name in names:
        zeros = int((weights[name] == 0).sum())
        assert zeros == round(0.9 * weights[name].numel()), name
        assert pruner.layer_sparsity()[name] == pytest.approx(zeros / weights[name].numel())
    total = sum(weights[name].numel() for name in names)
    assert pruner.sparsity() == pytest.approx(0.9, abs=1 / total * len(names))


def test_pruned_weights_stay_zero_under_more_optimizer_steps():
    torch.manual_seed(1)
    model = Recurrent("gru", 5, 8)
    pruner = Pruner(model, PruneConfig(final_sparsity=0.8, start_step=1, end_step=6,
                                       frequency=2), max_steps=None)  # fmt: skip
    train(model, pruner, 6)
    pruned = {name: p.detach() == 0 for name, p in model.named_parameters() if p.dim() == 2}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train(model, pruner, 25, first=7, seed=5)
    for name, parameter in model.named_parameters():
        if name in pruned:
            assert bool((parameter[pruned[name]] == 0).all()), name
            assert not torch.equal(parameter[~pruned[name]], before[name][~pruned[name]]), name
    outputs, _ = model(torch.randn(2, 4, 5))
    outputs.sum().backward()
    pruner.mask_gradients()
    for name, parameter in model.named_parameters():
        if name in pruned:
            assert bool((parameter.grad[pruned[name]] == 0).all()), name


def block_maxima(weight, rows, columns):
    """Reference: the largest magnitude of each block, by loops."""
    return torch.tensor([
        [weight[r : r + rows, c : c + columns].abs().max().item()
         for c in range(0, weight.shape[1], columns)]
        for r in range(0, weight.shape[0], rows)
    ])  # fmt: skip


def test_block_pruning_removes_whole_blocks_of_smallest_maxima():
    torch.manual_seed(2)
    model = Recurrent("lstm", 8, 12)
    config = PruneConfig(final_sparsity=0.75, granularity="block", start_step=1, end_step=8,
                         frequency=2, block_rows=4, block_columns=2)  # fmt: skip
    pruner = Pruner(model, config, max_steps=None)
    train(model, pruner, 7)
    matrices = {name: p for name, p in model.named_parameters() if p.dim() == 2}
    maxima_before = {name: block_maxima(p.detach(), 4, 2) for name, p in matrices.items()}
    pruner.after_step(8)  # the end step, on the weights above
    for name, parameter in matrices.items():
        blocks = parameter.detach().reshape(parameter.shape[0] // 4, 4, parameter.shape[1] // 2, 2)
        zero = (blocks == 0).all(dim=3).all(dim=1)  # (row blocks, column blocks)
        nonzero = (blocks != 0).any(dim=3).any(dim=1)
        assert bool((zero | nonzero).all())
        assert int(zero.sum()) == round(0.75 * zero.numel()), name
        largest_pruned = maxima_before[name][zero].max()
        assert bool((maxima_before[name][~zero] >= largest_pruned).all()), name


def unit_norm(cell, unit):
    """Reference: the L2 norm of an LSTM unit's rows (four gates) and its recurrent column."""
    rows = [gate * cell.hidden_size + unit for gate in range(4)]
    input_weights, recurrent_weights = cell.weight_ih.detach(), cell.weight_hh.detach()
    squares = sum(float(weight[rows].pow(2).sum()) for weight in (input_weights, recurrent_weights))
    return math.sqrt(squares + float(recurrent_weights[:, unit].pow(2).sum()))


def test_unit_pruning_removes_whole_hidden_units_and_the_layer_shrinks():
    torch.manual_seed(3)
    size, inputs = 8, 5
    model = Recurrent("lstm", inputs, size).double()
    config = PruneConfig(final_sparsity=0.5, granularity="unit", start_step=1, end_step=6,
                         frequency=2)  # fmt: skip
    pruner = Pruner(model, config, max_steps=None)
    train(model, pruner, 5)
    norms = torch.tensor([unit_norm(model.cells[0], j) for j in range(size)])
    pruner.after_step(6)
    removed = torch.tensor([not bool(model.cells[0].weight_ih[j].any()) for j in range(size)])
    assert int(removed.sum()) == size // 2
    assert norms[removed].max() <= norms[~removed].min()
    gates = [g * size + j for g in range(4) for j in range(size) if removed[j]]
    for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        assert bool((getattr(model.cells[0], name)[gates] == 0).all()), name
    assert bool((model.cells[0].weight_hh[:, removed] == 0).all())
    kept = (~removed).nonzero().squeeze(1)
    rows = torch.cat([g * size + kept for g in range(4)])
    small = Recurrent("lstm", inputs, len(kept)).double()
    with torch.no_grad():
        small.cells[0].weight_ih.copy_(model.cells[0].weight_ih[rows])
        small.cells[0].weight_hh.copy_(model.cells[0].weight_hh[rows][:, kept])
        small.cells[0].bias_ih.copy_(model.cells[0].bias_ih[rows])
        small.cells[0].bias_hh.copy_(model.cells[0].bias_hh[rows])
        sequence = torch.randn(2, 7, inputs, dtype=torch.float64)
        outputs, _ = model(sequence)
        shrunk, _ = small(sequence)
    assert bool((outputs[..., removed] == 0).all())  # a removed unit outputs exactly zero
    torch.testing.assert_close(outputs[..., kept], shrunk, rtol=1e-12, atol=1e-12)


TINY = [
    "--model.embedding_size=8",
    "--model.recurrent.hidden_size=16",
    "--trainer.batch_size=4",
    "--bptt.window=16",
    "--bptt.evaluation_streams=4",
    "--trainer.log_interval=1",
    "--trainer.log_seconds=0",
    "--sample.length=10",
    "--trainer.threads=1",
]
PRUNE = ["--prune.final_sparsity=0.9", "--prune.start_step=2", "--prune.end_step=10",
         "--prune.frequency=2"]  # fmt: skip


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(bundled_path().read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


def checkpoint_tensors(run_dir):
    document = json.loads((run_dir / "checkpoint.json").read_text())
    folder = run_dir / document["tensors"]
    return load_file(str(folder / "model.safetensors")), load_file(
        str(folder / "training.safetensors")
    )


def test_cli_reports_sparsity_and_resume_gives_the_same_masks_and_results(
    tmp_path, text_file, monkeypatch
):
    command = ["train", "charlm", "--data", str(text_file), "--trainer.max_steps=14"]
    command += TINY + PRUNE + ["--trainer.eval_interval=5", "--seed", "2"]
    assert cli.main(command + ["--run-dir", str(tmp_path / "whole")]) == 0
    records = read_metrics(tmp_path / "whole" / "metrics.jsonl")
    sparsity = {r["step"]: r["sparsity"] for r in records if r["kind"] == "train"}
    assert sparsity[1] == 0.0 and 0.0 < sparsity[4] < sparsity[8] < 0.9
    assert sparsity[10] == sparsity[14] == pytest.approx(0.9, abs=1e-3)
    assert records[-1]["kind"] == "validation" and records[-1]["sparsity"] == sparsity[14]
    config = json.loads((tmp_path / "whole" / "config.json").read_text())
    assert config["trainer"]["prune"]["final_sparsity"] == 0.9

    original = Trainer.train_step

    def crash_at_seven(self):  # after the step-5 checkpoint, mid-schedule
        original(self)
        if self.step == 7:
            raise MemoryError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "train_step", crash_at_seven)
        with pytest.raises(MemoryError):
            cli.main(command + ["--run-dir", str(tmp_path / "parts")])
    _, training = checkpoint_tensors(tmp_path / "parts")
    assert any(key.startswith("prune.keep.") for key in training)
    assert cli.main(["train", "charlm", "--resume", str(tmp_path / "parts")]) == 0
    assert_same_records(tmp_path / "whole", tmp_path / "parts")
    for whole, parts in zip(checkpoint_tensors(tmp_path / "whole"),
                            checkpoint_tensors(tmp_path / "parts"), strict=True):  # fmt: skip
        keys = [key for key in whole if not key.startswith("rng.")]
        assert keys == [key for key in parts if not key.startswith("rng.")]
        for key in keys:
            assert torch.equal(whole[key], parts[key]), key


def assert_same_records(whole, parts) -> None:
    """metrics.jsonl of both runs equal but for the clocks and the throughput."""
    clocks = ("train_seconds", "elapsed_seconds", "chars_per_second")

    def strip(run):
        records = read_metrics(run / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k not in clocks} for r in records]

    assert strip(parts) == strip(whole)


def test_benchmark_task_takes_prune_options(tmp_path):
    run = tmp_path / "run"
    command = [
        "train",
        "adding",
        "--steps",
        "4",
        "--run-dir",
        str(run),
        "--data.sequence_length=20",
    ]
    command += ["--model.model_size=16", "--model.recurrent.hidden_size=16", "--model.num_blocks=1",
                "--trainer.batch_size=4", "--evaluation.sequences=8", "--evaluation.batch_size=4",
                "--prune.final_sparsity=0.5", "--prune.start_step=1", "--prune.end_step=2",
                "--prune.frequency=1", "--trainer.log_interval=1"]  # fmt: skip
    assert cli.main(command) == 0
    records = read_metrics(run / "metrics.jsonl")
    assert records[-1]["sparsity"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_takes_prune_options(task, capsys):
    options = ["--prune.final_sparsity=0.8", "--prune.granularity=block", "--prune.end_step=9"]
    command = ["train", task, "--print-config", "--steps", "20"] + options
    assert cli.main(command) == 0, capsys.readouterr().err
    prune = json.loads(capsys.readouterr().out)["trainer"]["prune"]
    assert (prune["final_sparsity"], prune["granularity"], prune["end_step"]) == (0.8, "block", 9)
