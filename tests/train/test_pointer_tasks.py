"""``rnnkit train sort | convex-hull | tsp`` and ``rnnkit eval`` end to end on tiny models."""

from __future__ import annotations

import io
import json

import pytest
import torch

from rnnkit import cli
from rnnkit.data.pointer_problems import SORT, draw_batch
from rnnkit.models.pointer import PointerNetworkConfig
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.train.tasks import TASKS, pointer_tasks
from rnnkit.train.tasks.pointer_tasks import (
    PointerTask,
    SortConfig,
    parse_test_sizes,
    split_batch,
)

TINY = [
    "--model.embedding_size=8",
    "--model.recurrent.hidden_size=12",
    "--model.attention_size=8",
    "--trainer.batch_size=8",
    "--data.validation_examples=12",
    "--data.test_examples=6",
]
METRICS = {
    "sort": {"accuracy", "position_accuracy"},
    "convex-hull": {"accuracy", "area_coverage", "valid"},
    "tsp": {"accuracy", "tour_ratio", "invalid_tours"},
}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    """The pointer tasks train on one thread (``trainer.threads=1``); later tests keep theirs."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", sorted(METRICS))
def test_train_three_steps_then_eval(name, tmp_path, capsys):
    run = tmp_path / name
    assert cli.main(["train", name, "--steps", "3", "--run-dir", str(run), *TINY]) == 0
    output = capsys.readouterr().out
    assert "final validation loss" in output and f"rnnkit eval {run}" in output
    assert (run / "prediction.png").stat().st_size > 0 and (run / "loss.png").exists()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["kind"] == "validation" and records[-1]["step"] == 3
    assert METRICS[name] | {"loss"} <= set(records[-1])
    assert "pointers_per_second" in records[0]

    assert cli.main(["eval", str(run)]) == 0
    output = capsys.readouterr().out
    sizes = parse_test_sizes(TASKS[name].config_type().data.test_sizes)
    assert output.count("test, n = ") == 1 + len(sizes)
    results = TASKS[name].evaluate_run(run, io.StringIO())
    expected = METRICS[name] | {"loss"}
    expected |= {f"n{size}_{metric}" for size in sizes for metric in expected}
    assert set(results) == expected
    assert all(isinstance(value, float) for value in results.values())


def test_resumed_run_continues(tmp_path, capsys):
    run = tmp_path / "sort"
    assert cli.main(["train", "sort", "--steps", "2", "--run-dir", str(run), *TINY]) == 0
    assert cli.main(["train", "sort", "--steps", "4", "--resume", str(run)]) == 0
    assert "continuing from step 2" in capsys.readouterr().out
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 4


def test_refused_settings(tmp_path, capsys):
    hull = ["train", "convex-hull", "--steps", "1", "--run-dir", str(tmp_path / "hull"), *TINY]
    assert cli.main([*hull, "--model.end_position=false"]) == 1
    assert "model.end_position" in capsys.readouterr().err
    tsp = ["train", "tsp", "--steps", "1", "--run-dir", str(tmp_path / "tsp"), *TINY]
    assert cli.main([*tsp, "--data.max_size=20"]) == 1
    assert "exact up to 13" in capsys.readouterr().err
    assert cli.main([*tsp, "--data.test_sizes=12,14"]) == 1
    assert "exact up to 13" in capsys.readouterr().err
    with pytest.raises(ValueError, match="data.test_sizes"):
        parse_test_sizes("20;50")
    assert parse_test_sizes(" 20, 50 ") == [20, 50] and parse_test_sizes("") == []


def test_loss_is_nats_per_pointer_and_evaluation_parts_cover_the_batch():
    model = PointerNetworkConfig(embedding_size=8, recurrent=RecurrentConfig(hidden_size=8))
    config = SortConfig(model=model)
    config.data.validation_examples = 20
    config.trainer.batch_size = 6
    task = PointerTask(config, SORT)
    loss, count = task.train_loss(0)
    batch = draw_batch(SORT, torch.Generator(), 6, 5, 10)
    assert count == int(task.train_loss(0)[1]) and 30 <= count <= 60
    again = float(task.train_loss(0)[0].detach())
    assert float(loss.detach()) == pytest.approx(again)  # same step, same batch
    parts = split_batch(batch, size=4)
    assert [len(part.lengths) for part in parts] == [4, 2]
    assert all(part.inputs.shape[1] == int(part.lengths.max()) for part in parts)
    evaluation = task.evaluate()
    assert set(evaluation) == {"loss", "accuracy", "position_accuracy"}


def test_eval_restores_torch_threads(tmp_path, capsys):
    """``rnnkit eval`` runs with the run's ``trainer.threads`` and then puts torch's back."""
    run = tmp_path / "run"
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    command = ["train", "sort", "--steps", "1", "--run-dir", str(run), *TINY]
    assert cli.main([*command, f"--trainer.threads={wanted}"]) == 0
    torch.set_num_threads(before)
    seen = []
    original = pointer_tasks.evaluate_batch

    def spy(*arguments, **keywords):
        seen.append(torch.get_num_threads())
        return original(*arguments, **keywords)

    pointer_tasks.evaluate_batch = spy
    try:
        assert cli.main(["eval", str(run)]) == 0
    finally:
        pointer_tasks.evaluate_batch = original
    assert seen and set(seen) == {wanted}
    assert torch.get_num_threads() == before
