"""Data-parallel training (``torchrun -m rnnkit train ...``): two CPU processes over gloo train
exactly as one process on the same global batch, resume, and stop together on an error.

The ranks are forked processes that set torchrun's environment (``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``) and run the real command line; forking skips re-importing
torch. The models are float32 (charlm and the benchmark tasks build no float64 model), so the
runs are compared with a tight float32 tolerance: the ranks sum two half-batch gradients and
all-reduce them where one process sums the whole batch at once, and only the order of those
float32 additions differs (about 1e-7 relative per step; Adam's normalized update keeps the
weights within ``lr * 1e-6`` after a few steps).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
from typing import NamedTuple

import pytest
import torch
from safetensors.torch import load_file

from rnnkit import cli
from rnnkit.data import StreamBatcher, bundled_path
from rnnkit.train import checkpoint as checkpoints
from rnnkit.train import distributed
from rnnkit.train.distributed import Ranks
from rnnkit.train.metrics import read_metrics
from rnnkit.train.tasks.charlm import CharLMTask, rank_streams
from rnnkit.train.tasks.supervised import rank_rows

TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}
CHARLM = [
    "--model.embedding_size=8",
    "--model.recurrent.hidden_size=16",
    "--model.dropout=0",  # dropout masks come from each rank's generator: not one process's
    "--model.recurrent.dropout=0",
    "--trainer.batch_size=4",
    "--trainer.eval_interval=2",
    "--trainer.threads=1",
    "--bptt.window=16",
    "--bptt.evaluation_streams=4",
    "--sample.length=5",
]
MQAR = [
    "--model.cell=gru",
    "--model.model_size=16",
    "--model.recurrent.hidden_size=16",
    "--model.num_blocks=1",
    "--trainer.batch_size=4",
    "--trainer.threads=1",
    "--evaluation.sequences=8",
    "--evaluation.batch_size=4",
    "--data.sequence_length=32",
    "--data.num_pairs=4",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rank_main(
    rank: int, world_size: int, port: int, arguments: list[str], fail_at: int, event: str
) -> None:
    """One rank: torchrun's environment, then the command line; the exit code is its status.
    ``fail_at`` >= 0: at that training step this rank's charlm task raises (``event`` "error")
    or receives SIGTERM ("signal")."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )
    status = 1
    try:
        if fail_at >= 0:
            train_loss = CharLMTask.train_loss

            def failing(task: CharLMTask, step: int):
                if step == fail_at and event == "signal":
                    os.kill(os.getpid(), signal.SIGTERM)
                elif step == fail_at:
                    raise RuntimeError(f"rank {rank} fails at step {step}")
                return train_loss(task, step)

            CharLMTask.train_loss = failing  # type: ignore[method-assign]
        status = cli.main(arguments)
    finally:
        os._exit(status)  # a forked child must not run the test process's exit handlers


def run_ranks(
    arguments: list[str], failing_rank: int = -1, fail_at: int = -1, event: str = "error"
) -> list[int]:
    """Exit codes of two forked ranks running ``rnnkit ARGUMENTS`` (None: still running after
    the timeout, then killed)."""
    port, context = _free_port(), multiprocessing.get_context("fork")
    processes = [
        context.Process(
            target=_rank_main,
            args=(rank, 2, port, arguments, fail_at if rank == failing_rank else -1, event),
        )
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.exitcode is None:
            process.kill()
            process.join()
    return codes


def checkpoint_tensors(run) -> dict[str, torch.Tensor]:
    """Weights (``model.``) and training tensors (optimizer, carried state) of ``run``."""
    folder = run / checkpoints.read_checkpoint(run)["tensors"]
    model = {f"model.{k}": v for k, v in load_file(str(folder / "model.safetensors")).items()}
    training = load_file(str(folder / "training.safetensors"))
    skipped = ("rng.",)  # the generators' states are bytes, compared through the runs' losses
    return {**model, **{k: v for k, v in training.items() if not k.startswith(skipped)}}


def assert_same_run(distributed_run, single_run) -> None:
    """The same checkpoint tensors and the same recorded losses."""
    actual, expected = checkpoint_tensors(distributed_run), checkpoint_tensors(single_run)
    assert sorted(actual) == sorted(expected)
    for name, value in expected.items():
        torch.testing.assert_close(
            actual[name], value, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}"
        )
    records = [read_metrics(run / "metrics.jsonl") for run in (distributed_run, single_run)]
    assert [(r["kind"], r["step"]) for r in records[0]] == [
        (r["kind"], r["step"]) for r in records[1]
    ]
    for got, want in zip(*records, strict=True):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-6), (got, want)
        if "gradient_norm" in want:  # summed, not averaged, gradients would show here
            assert got["gradient_norm"] == pytest.approx(want["gradient_norm"], rel=1e-5)


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "small.txt"
    path.write_text(bundled_path().read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single_charlm(tmp_path_factory, text):
    """One process, 4 steps of charlm on the global batch of 4 streams."""
    run = tmp_path_factory.mktemp("single") / "run"
    command = ["train", "charlm", "--data", str(text), "--steps", "4", "--run-dir", str(run)]
    assert cli.main(command + CHARLM) == 0
    return run


def test_charlm_on_two_ranks_equals_one_process(tmp_path, text, single_charlm):
    run = tmp_path / "run"
    command = ["train", "charlm", "--data", str(text), "--steps", "4", "--run-dir", str(run)]
    assert run_ranks(command + CHARLM) == [0, 0]
    assert_same_run(run, single_charlm)
    # the carried state of all 4 streams, gathered from the ranks' 2 each
    assert checkpoint_tensors(run)["carry.0.h"].shape == (4, 16)


def test_charlm_resumed_on_two_ranks_equals_one_process_resumed(tmp_path, text):
    """Stopped at step 2 and resumed to step 4 (the schedule follows ``max_steps``, so the
    reference is one process stopped and resumed the same way)."""
    runs = {name: tmp_path / name for name in ("single", "ranks")}
    for name, launch in (("single", lambda arguments: [cli.main(arguments)]), ("ranks", run_ranks)):
        command = ["train", "charlm", "--data", str(text), "--run-dir", str(runs[name])]
        assert set(launch(command + ["--steps", "2"] + CHARLM)) == {0}
        assert checkpoints.read_checkpoint(runs[name])["step"] == 2
        assert set(launch(["train", "charlm", "--resume", str(runs[name]), "--steps", "4"])) == {0}
    assert_same_run(runs["ranks"], runs["single"])


def test_benchmark_task_on_two_ranks_equals_one_process(tmp_path):
    runs = {name: tmp_path / name for name in ("single", "ranks")}
    command = ["train", "mqar", "--steps", "3", *MQAR]
    assert cli.main(command + ["--run-dir", str(runs["single"])]) == 0
    assert run_ranks(command + ["--run-dir", str(runs["ranks"])]) == [0, 0]
    assert_same_run(runs["ranks"], runs["single"])


def test_torchrun_runs_the_module_on_two_ranks(tmp_path, text, single_charlm):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
    command += ["--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "rnnkit"]
    command += ["train", "charlm", "--data", str(text), "--steps", "4", "--run-dir", str(run)]
    finished = subprocess.run(command + CHARLM, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "data parallel over 2 processes" in finished.stdout
    assert_same_run(run, single_charlm)


def test_python_dash_m_rnnkit_is_the_command_line():
    finished = subprocess.run(
        [sys.executable, "-m", "rnnkit", "train", "--help"], capture_output=True, text=True
    )
    assert finished.returncode == 0 and "charlm" in finished.stdout


def test_an_error_on_one_rank_stops_every_rank(tmp_path, text):
    run = tmp_path / "run"
    command = ["train", "charlm", "--data", str(text), "--steps", "4", "--run-dir", str(run)]
    codes = run_ranks(command + CHARLM, failing_rank=1, fail_at=2)
    assert None not in codes, "a rank was still waiting for its failed peer"
    assert all(code != 0 for code in codes)


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, text):
    run = tmp_path / "run"
    command = ["train", "charlm", "--data", str(text), "--steps", "6", "--run-dir", str(run)]
    codes = run_ranks(command + CHARLM, failing_rank=1, fail_at=2, event="signal")
    assert codes == [128 + signal.SIGTERM] * 2  # both interrupted, after the same step
    assert checkpoints.read_checkpoint(run)["step"] == 3


def test_ranks_split_a_batch_into_equal_consecutive_rows():
    assert [Ranks(rank, 2).rows(6) for rank in range(2)] == [slice(0, 3), slice(3, 6)]
    assert Ranks().rows(5) == slice(0, 5)
    with pytest.raises(ValueError, match="does not split evenly over 2 processes"):
        Ranks(1, 2).rows(5)


def test_a_ranks_streams_are_its_rows_of_the_global_streams():
    tokens = torch.arange(103)
    resets = tokens % 7 == 0
    whole = StreamBatcher(tokens, 4, 5, resets=resets)
    for rank in range(2):
        part_tokens, part_resets, streams = rank_streams(tokens, resets, 4, Ranks(rank, 2))
        part = StreamBatcher(part_tokens, streams, 5, resets=part_resets)
        assert len(part) == len(whole)
        for step in range(len(whole) + 1):
            expected, actual = whole.window_at(step), part.window_at(step)
            rows = slice(2 * rank, 2 * rank + 2)
            assert torch.equal(actual.inputs, expected.inputs[rows])
            assert torch.equal(actual.targets, expected.targets[rows])
            assert torch.equal(actual.resets, expected.resets[rows])
            assert actual.starts_epoch == expected.starts_epoch


class Pairs(NamedTuple):
    inputs: torch.Tensor  # (B, T)
    lengths: torch.Tensor  # (B,)


@dataclasses.dataclass
class Labelled:
    pairs: Pairs
    labels: list[torch.Tensor]
    table: torch.Tensor  # (V, 3): not batch rows
    padding: int


def test_rank_rows_cut_every_batch_first_tensor_of_a_batch(monkeypatch):
    batch = Labelled(
        Pairs(torch.arange(24).reshape(4, 6), torch.tensor([6, 5, 4, 3])),
        [torch.arange(4) * 10],
        torch.zeros(5, 3),
        padding=0,
    )
    assert rank_rows(batch, 4) is batch  # one process: the whole batch
    monkeypatch.setattr(distributed, "current", lambda: Ranks(1, 2))
    cut = rank_rows(batch, 4)
    assert isinstance(cut.pairs, Pairs)
    assert torch.equal(cut.pairs.inputs, batch.pairs.inputs[2:])
    assert torch.equal(cut.pairs.lengths, torch.tensor([4, 3]))
    assert torch.equal(cut.labels[0], torch.tensor([20, 30]))
    assert cut.table is batch.table and cut.padding == 0
