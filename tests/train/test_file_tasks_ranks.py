"""The file tasks split each step's batch by rank (``splits_batch_by_rank``): the two ranks'
losses, weighted by their items as the trainer weights them (``rnnkit.train.distributed``),
equal one process's loss on the whole batch, in value and gradient.

The ranks are simulated in this process (``distributed.current`` answers rank r of 2), which
is what ``supervised.rank_rows`` reads; one task also trains for real on two forked gloo ranks
(``test_distributed.run_ranks``) against one process. CTC keeps the whole batch on every rank
(the CRNN's BatchNorm).
"""

from __future__ import annotations

import pytest
import torch
from test_classify_task import ramps, write_wide
from test_distributed import assert_same_run, run_ranks
from test_forecast_task import write_long
from test_seq2seq_files_task import write_pairs

from rnnkit import cli
from rnnkit.data import dynamical_systems as systems
from rnnkit.train import distributed
from rnnkit.train.config import apply_overrides
from rnnkit.train.distributed import Ranks
from rnnkit.train.tasks import TASKS, supervised


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def build(name: str, settings: dict[str, str]):
    definition = TASKS[name]
    config = apply_overrides(definition.config_type(), list(settings.items()))
    torch.manual_seed(0)
    task = definition.build(config, None)
    if name == "dynamics":  # random N(0, 0.25) weights: the AL-RNN's initial ones are
        generator = torch.Generator().manual_seed(1)  # contractive (adaptive alpha 0 for any rows)
        with torch.no_grad():
            for parameter in task.model.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return task


def loss_and_gradients(task, step: int) -> tuple[torch.Tensor, int, list[torch.Tensor]]:
    task.model.zero_grad()
    loss, items = task.train_loss(step)
    loss.backward()
    grads = [
        torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in task.model.parameters()
    ]
    return loss.detach(), items, grads


def settings(name: str, folder) -> dict[str, str]:
    if name == "classify":
        write_wide(folder / "train.csv", ramps(20, seed=0))
        return {"data.train": str(folder / "train.csv"), "model.recurrent.hidden_size": "8"}
    if name == "forecast":
        return {
            "data.path": str(write_long(folder / "series.csv")),
            "data.context": "6",
            "data.horizon": "3",
            "data.season": "4",
            "data.covariates": "price",
            "model.recurrent.hidden_size": "4",
        }
    if name == "seq2seq":
        return {
            "data.path": str(write_pairs(folder / "pairs.tsv", 60)),
            "model.decoder.hidden_size": "16",
            "model.encoder.hidden_size": "8",
            "model.embedding_size": "8",
            "data.target_tokens": "words",
        }
    return {  # dynamics, adaptive alpha: a maximum over the whole batch
        "data.steps": "300",
        "data.test_steps": "150",
        "train.adaptive": "true",
        "train.sequence_length": "10",
        "model.recurrent.hidden_size": "6",
    }


@pytest.mark.parametrize("name", ["classify", "forecast", "seq2seq", "dynamics"])
def test_two_ranks_weighted_equal_one_process_on_the_whole_batch(name, tmp_path, monkeypatch):
    task = build(name, {**settings(name, tmp_path), "trainer.batch_size": "6"})
    assert task.splits_batch_by_rank
    task.model.eval()  # no dropout: the ranks draw their masks from one shared seed
    step = 3
    whole_loss, whole_items, whole_grads = loss_and_gradients(task, step)
    losses, items, grads = [], [], []
    for rank in range(2):
        monkeypatch.setattr(distributed, "current", lambda rank=rank: Ranks(rank, 2))
        loss, count, gradient = loss_and_gradients(task, step)
        losses.append(loss)
        items.append(count)
        grads.append(gradient)
    assert sum(items) == whole_items and 0 < items[0] < whole_items
    weights = [count / whole_items for count in items]
    combined = sum(weight * loss for weight, loss in zip(weights, losses, strict=True))
    torch.testing.assert_close(combined, whole_loss, rtol=1e-5, atol=1e-6)
    for index, expected in enumerate(whole_grads):
        actual = weights[0] * grads[0][index] + weights[1] * grads[1][index]
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


def test_classify_trains_on_two_ranks_as_one_process(tmp_path, monkeypatch):
    """The same run, each rank on its half of every batch: the forked ranks record the rows
    they trained on (a run on the whole batch per rank gives the same averaged gradients, so
    the run alone would not show the split)."""
    write_wide(tmp_path / "train.csv", ramps(20, seed=0))
    runs = {name: tmp_path / name for name in ("single", "ranks")}
    command = ["train", "classify", "--data", str(tmp_path / "train.csv"), "--steps", "3"]
    command += ["--model.recurrent.hidden_size=8", "--trainer.batch_size=4"]
    assert cli.main(command + ["--run-dir", str(runs["single"])]) == 0
    original = supervised.rank_rows

    def recording(rows, batch_size):
        cut = original(rows, batch_size)
        record = tmp_path / f"rows-{distributed.current().rank}.txt"
        with record.open("a") as file:
            file.write(" ".join(str(int(row)) for row in cut) + "\n")
        return cut

    monkeypatch.setattr(supervised, "rank_rows", recording)  # inherited by the forked ranks
    assert run_ranks(command + ["--run-dir", str(runs["ranks"])]) == [0, 0]
    assert_same_run(runs["ranks"], runs["single"])
    halves = [(tmp_path / f"rows-{rank}.txt").read_text().splitlines() for rank in range(2)]
    assert len(halves[0]) == len(halves[1]) == 3  # one batch per step
    for first, second in zip(*halves, strict=True):
        assert len(first.split()) == len(second.split()) == 2  # 2 of the 4 rows each


def test_dynamics_ranks_force_with_the_whole_batch_alpha(tmp_path, monkeypatch):
    """Adaptive alpha is a maximum over the whole batch (``adaptive_alpha`` before
    ``rank_rows``): every rank forces with the whole batch's alpha, which here differs from the
    alpha of the second rank's own rows (so taking it from a rank's rows would show)."""
    task = build("dynamics", {**settings("dynamics", tmp_path), "trainer.batch_size": "6"})
    generator = supervised.batch_generator(task.config.seed, 3)
    length = task.config.train.sequence_length + 1
    windows = systems.draw_windows(task.data.train, length, 6, generator).float()
    whole = task.model.adaptive_alpha(windows)
    assert abs(task.model.adaptive_alpha(windows[3:]) - whole) > 1e-5
    forced = task.model.forced
    used = []

    def recording(windows, alpha, interval):
        used.append(alpha)
        return forced(windows, alpha, interval)

    monkeypatch.setattr(task.model, "forced", recording)
    for rank in range(2):
        monkeypatch.setattr(distributed, "current", lambda rank=rank: Ranks(rank, 2))
        task.train_loss(3)
    assert used == [whole, whole]
