"""Fault injection on checkpoints: re-saves never delete the live folder, damage is one error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnkit.train import checkpoint
from rnnkit.train.checkpoint import CheckpointError


def _save(run_dir: Path, step: int, model: nn.Module) -> Path:
    return checkpoint.save_checkpoint(run_dir, step, model, {"extra": torch.zeros(2)}, {})


def test_resaving_the_same_step_keeps_the_live_folder_until_replaced(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    _save(tmp_path, 5, model)
    live = tmp_path / checkpoint.read_checkpoint(tmp_path)["tensors"]

    def killed(*arguments):  # a kill -9 at the rename of the new tensor folder
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 5, model)
    monkeypatch.undo()
    document = checkpoint.read_checkpoint(tmp_path)
    assert tmp_path / document["tensors"] == live and live.is_dir()
    restored = nn.Linear(3, 2)
    checkpoint.load_weights(tmp_path, document, restored)
    torch.testing.assert_close(restored.weight, model.weight)


def test_temporary_names_are_unique_per_process(tmp_path):
    first = _save(tmp_path, 1, nn.Linear(3, 2))
    assert str(os.getpid()) in first.name


@pytest.mark.parametrize("damage", ["bad-json", "list-json", "missing-weights", "truncated"])
def test_damaged_checkpoint_is_one_clear_error(tmp_path, damage):
    model = nn.Linear(3, 2)
    _save(tmp_path, 2, model)
    document = checkpoint.read_checkpoint(tmp_path)
    weights = tmp_path / document["tensors"] / "model.safetensors"
    if damage == "bad-json":
        (tmp_path / checkpoint.CHECKPOINT_FILE).write_text('{"format": 1, ')
    elif damage == "list-json":
        (tmp_path / checkpoint.CHECKPOINT_FILE).write_text(json.dumps([1]))
    elif damage == "missing-weights":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"checkpoint\.json|model\.safetensors"):
        checkpoint.load_weights(tmp_path, checkpoint.read_checkpoint(tmp_path), model)


def test_wrong_shapes_are_a_checkpoint_error(tmp_path):
    _save(tmp_path, 2, nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        checkpoint.load_weights(tmp_path, checkpoint.read_checkpoint(tmp_path), nn.Linear(4, 2))


SIGTERM_SCRIPT = """
import os, signal, sys
from rnnkit import cli
from rnnkit.train import trainer
original = trainer.Trainer.train_step
def step(self):
    original(self)
    if self.step == 2:
        os.kill(os.getpid(), signal.SIGTERM)
trainer.Trainer.train_step = step
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    import subprocess
    import sys

    from rnnkit.data import bundled_path

    text = tmp_path / "small.txt"
    text.write_text(bundled_path().read_text(encoding="utf-8")[:4000], encoding="utf-8")
    run = tmp_path / "run"
    tiny = ["--model.embedding_size=8", "--model.recurrent.hidden_size=16",
            "--trainer.batch_size=4",
            "--bptt.window=16", "--bptt.evaluation_streams=4", "--sample.length=10"]
    command = [sys.executable, "-c", SIGTERM_SCRIPT, "train", "charlm", "--data", str(text),
               "--steps", "50", "--run-dir", str(run), *tiny]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 128 + 15, finished.stderr[-2000:]
    assert "Traceback" not in finished.stderr
    assert checkpoint.read_checkpoint(run)["step"] >= 2


BROKEN_PIPE_SCRIPT = """
import sys
from rnnkit import cli
def flood(options, extra):
    for _ in range(100000):
        print("x" * 100)
    return 0
cli.run_sample = flood
sys.exit(cli.main(["sample", "nowhere"]))
"""


def test_sample_into_a_closed_pipe_ends_quietly():
    import subprocess
    import sys

    writer = subprocess.Popen(
        [sys.executable, "-c", BROKEN_PIPE_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    writer.stdout.read(10)
    writer.stdout.close()
    error = writer.stderr.read().decode()
    assert writer.wait(timeout=60) in (0, 141)
    assert "Traceback" not in error


def test_training_restores_torch_threads(tmp_path):
    from rnnkit import cli
    from rnnkit.data import bundled_path

    text = tmp_path / "small.txt"
    text.write_text(bundled_path().read_text(encoding="utf-8")[:4000], encoding="utf-8")
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    command = ["train", "charlm", "--data", str(text), "--steps", "1", "--run-dir",
               str(tmp_path / "run"), f"--trainer.threads={wanted}",
               "--model.recurrent.hidden_size=16",
               "--model.embedding_size=8", "--bptt.window=16", "--sample.length=5"]
    assert cli.main(command) == 0
    assert torch.get_num_threads() == before


BAD_VALUES = [
    (["--steps", "0"], "max_steps"),
    (["--steps", "-5"], "max_steps"),
    (["--time-budget", "0"], "time_budget_seconds|duration"),
    (["--trainer.log_interval=0"], "log_interval"),
    (["--trainer.threads=-1"], "threads"),
    (["--trainer.eval_interval=-2"], "eval_interval"),
    (["--trainer.batch_size=0"], "batch_size"),
    (["--optimizer.weight_decay=-0.1"], "weight_decay"),
    (["--optimizer.warmup_steps=-1"], "warmup_steps"),
    (["--optimizer.learning_rate=nan"], "learning_rate"),
    (["--optimizer.beta2=1.5"], "beta2"),
    (["--bptt.window=0"], "window"),
    (["--sample.temperature=-1"], "temperature"),
    (["--sample.temperature=nan"], "temperature"),
    (["--sample.top_k=-3"], "top_k"),
    (["--data.validation_fraction=1.5"], "validation_fraction"),
]


@pytest.mark.parametrize(
    ("arguments", "field"), BAD_VALUES, ids=[" ".join(a) for a, _ in BAD_VALUES]
)
def test_bad_values_are_refused_before_any_work(tmp_path, capsys, arguments, field):
    from rnnkit import cli

    run = tmp_path / "run"
    assert cli.main(["train", "charlm", "--run-dir", str(run), *arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith("rnnkit: error:") and "Traceback" not in error
    assert pytest.importorskip("re").search(field, error), error
    assert not run.exists()  # refused while resolving the config: no folder, no data read


@pytest.mark.parametrize(
    ("arguments", "option"),
    [(["--temperature", "nan"], "--temperature"), (["--temperature", "-1"], "--temperature"),
     (["--top-k", "-1"], "--top-k"), (["--length", "-2"], "--length")],
)
def test_sample_options_are_refused_with_their_name(tmp_path, capsys, arguments, option):
    from rnnkit import cli

    assert cli.main(["sample", str(tmp_path / "no-run"), *arguments]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"rnnkit: error: {option} must be"), error


def test_run_dir_with_resume_is_refused_not_ignored(tmp_path, capsys):
    from rnnkit import cli

    other = tmp_path / "other"
    command = ["train", "charlm", "--resume", str(tmp_path / "run"), "--run-dir", str(other)]
    assert cli.main(command) == 1
    assert "--run-dir" in capsys.readouterr().err and not other.exists()


def test_a_corpus_of_one_character_is_refused(tmp_path):
    from rnnkit.data import CorpusError
    from rnnkit.data.corpus import check_text

    with pytest.raises(CorpusError, match="one distinct character"):
        check_text("a" * 5000, "uniform.txt")


def _tiny_train(tmp_path: Path, run: Path, *extra: str) -> list[str]:
    from rnnkit.data import bundled_path

    text = tmp_path / "small.txt"
    if not text.exists():
        text.write_text(bundled_path().read_text(encoding="utf-8")[:4000], encoding="utf-8")
    return ["train", "charlm", "--data", str(text), "--steps", "2", "--run-dir", str(run),
            "--model.recurrent.hidden_size=8", "--model.embedding_size=4", "--bptt.window=8",
            "--trainer.batch_size=2", "--bptt.evaluation_streams=2", "--sample.length=2", *extra]


def _dead_pid() -> int:
    import subprocess
    import sys

    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def _write_lock(run: Path, pid: int) -> Path:
    import socket

    from rnnkit.train.lock import LOCK_FILE

    run.mkdir(parents=True, exist_ok=True)
    lock = run / LOCK_FILE
    lock.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": 0}))
    return lock


def test_a_folder_locked_by_a_live_run_is_refused(tmp_path, capsys):
    from rnnkit import cli

    run = tmp_path / "run"
    lock = _write_lock(run, os.getppid())  # a live process that is not this one
    assert cli.main(_tiny_train(tmp_path, run)) == 1
    assert f"in use by process {os.getppid()}" in capsys.readouterr().err
    assert lock.exists() and not (run / checkpoint.CHECKPOINT_FILE).exists()


def test_a_stale_lock_is_reported_taken_over_and_released(tmp_path, capsys):
    from rnnkit import cli

    run = tmp_path / "run"
    dead = _dead_pid()
    lock = _write_lock(run, dead)
    assert cli.main(_tiny_train(tmp_path, run)) == 0
    assert f"stale lock of process {dead}" in capsys.readouterr().out
    assert not lock.exists() and checkpoint.read_checkpoint(run)["step"] == 2


def test_a_new_run_into_a_finished_run_needs_overwrite(tmp_path, capsys):
    from rnnkit import cli
    from rnnkit.train.metrics import METRICS_FILE

    run = tmp_path / "run"
    assert cli.main(_tiny_train(tmp_path, run)) == 0
    records = (run / METRICS_FILE).read_text()
    assert cli.main(_tiny_train(tmp_path, run)) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (run / METRICS_FILE).read_text() == records  # the old history is untouched
    assert cli.main(_tiny_train(tmp_path, run, "--overwrite")) == 0
    assert len((run / METRICS_FILE).read_text().splitlines()) == len(records.splitlines())


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    from rnnkit import cli

    run = tmp_path / "run"
    assert cli.main(_tiny_train(tmp_path, run)) == 0
    names = ("metrics.jsonl", "checkpoint.json", "loss.png")
    before = {name: (run / name).read_bytes() for name in names}
    assert cli.main(["train", "charlm", "--resume", str(run)]) == 0
    assert {name: (run / name).read_bytes() for name in names} == before


def test_metrics_rewrite_on_resume_is_atomic(tmp_path, monkeypatch):
    from rnnkit.train.metrics import MetricsLog

    log = MetricsLog(tmp_path)
    for step in range(1, 6):
        log.append({"kind": "train", "step": step, "loss": 1.0})
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"kind": "train", "st')  # a kill -9 inside an append
    original = log.path.read_text()

    def killed(*arguments):  # a kill -9 just before the rename of the rewritten file
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        log.truncate_after(3)
    assert log.path.read_text() == original  # the history is intact, not half-written
    monkeypatch.undo()
    assert [record["step"] for record in log.truncate_after(3)] == [1, 2, 3]
    assert [json.loads(line)["step"] for line in log.path.read_text().splitlines()] == [1, 2, 3]


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # the last byte of the last tensor's data, inside the file's data section
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("file_name", ["model.safetensors", "training.safetensors"])
def test_a_flipped_tensor_byte_fails_its_checksum(tmp_path, file_name):
    model = nn.Linear(3, 2)
    _save(tmp_path, 2, model)
    document = checkpoint.read_checkpoint(tmp_path)
    _flip_last_byte(tmp_path / document["tensors"] / file_name)
    with pytest.raises(CheckpointError, match=rf"{file_name}: tensor '.+' does not match"):
        checkpoint.load_weights(tmp_path, document, model)
        checkpoint.load_training_tensors(tmp_path, document)


def test_an_edited_config_fails_its_checksum(tmp_path):
    checkpoint.save_checkpoint(tmp_path, 1, nn.Linear(3, 2), {}, {"config": {"seed": 0}})
    path = tmp_path / checkpoint.CHECKPOINT_FILE
    document = json.loads(path.read_text())
    document["config"]["seed"] = 1
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="config does not match its checksum"):
        checkpoint.read_checkpoint(tmp_path)


@pytest.mark.parametrize("command", ["eval", "sample", "resume"])
def test_the_cli_reports_a_damaged_checkpoint_without_a_traceback(tmp_path, capsys, command):
    from rnnkit import cli

    run = tmp_path / "run"
    assert cli.main(_tiny_train(tmp_path, run)) == 0
    capsys.readouterr()
    document = checkpoint.read_checkpoint(run)
    _flip_last_byte(run / document["tensors"] / "model.safetensors")
    arguments = {"eval": ["eval", str(run)], "sample": ["sample", str(run), "--length", "3"],
                 "resume": ["train", "charlm", "--resume", str(run), "--steps", "4"]}[command]
    assert cli.main(arguments) == 1
    error = capsys.readouterr().err
    assert error.startswith("rnnkit: error:") and "does not match its checksum" in error, error


def test_a_non_finite_validation_loss_is_never_kept_as_good(tmp_path, capsys, monkeypatch):
    from rnnkit import cli
    from rnnkit.train.tasks import charlm

    original = charlm.CharLMTask.evaluate
    calls = []

    def evaluate(self):
        calls.append(1)
        return original(self) if len(calls) == 1 else {"loss": float("inf")}

    monkeypatch.setattr(charlm.CharLMTask, "evaluate", evaluate)
    run = tmp_path / "run"
    assert cli.main(_tiny_train(tmp_path, run, "--steps", "4", "--trainer.eval_interval=2")) == 1
    error = capsys.readouterr().err
    assert "last good checkpoint (step 2)" in error and "--optimizer.learning_rate=" in error
    assert checkpoint.read_checkpoint(run)["step"] == 2


def test_resume_may_change_the_learning_rate_and_says_so(tmp_path, capsys):
    from rnnkit import cli

    run = tmp_path / "run"
    assert cli.main(_tiny_train(tmp_path, run)) == 0
    capsys.readouterr()
    resume = ["train", "charlm", "--resume", str(run), "--steps", "3"]
    assert cli.main([*resume, "--optimizer.beta1=0.5"]) == 1
    error = capsys.readouterr().err
    assert "optimizer.beta1" in error and "optimizer.learning_rate" in error
    assert cli.main([*resume, "--optimizer.learning_rate=0.001"]) == 0
    assert "optimizer.learning_rate changed: 0.006 -> 0.001" in capsys.readouterr().out


def test_training_bounds_and_restores_numba_threads(tmp_path, monkeypatch):
    numba = pytest.importorskip("numba")
    from rnnkit import cli
    from rnnkit.train import run as runs

    before = numba.get_num_threads()
    seen = []
    original = runs.Trainer.fit

    def fit(self):
        seen.append(numba.get_num_threads())
        return original(self)

    monkeypatch.setattr(runs.Trainer, "fit", fit)
    assert cli.main(_tiny_train(tmp_path, tmp_path / "run", "--trainer.threads=1")) == 0
    assert seen == [1] and numba.get_num_threads() == before


def test_a_valid_json_edit_outside_the_config_fails_the_checksum(tmp_path):
    info = {"config": {"seed": 0}, "metadata": {"vocabulary": "ab"}}
    checkpoint.save_checkpoint(tmp_path, 1, nn.Linear(3, 2), {}, info)
    path = tmp_path / checkpoint.CHECKPOINT_FILE
    document = json.loads(path.read_text())
    document["metadata"]["vocabulary"] = "ba"  # a flipped byte that keeps the JSON valid
    path.write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match=r"checkpoint\.json: the file does not match"):
        checkpoint.read_checkpoint(tmp_path)


def test_a_shape_mismatch_is_one_line(tmp_path):
    _save(tmp_path, 2, nn.Linear(3, 2))
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_weights(tmp_path, checkpoint.read_checkpoint(tmp_path), nn.Linear(4, 2))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("command", ["resume", "sample"])
def test_a_checkpoint_of_another_task_is_refused(tmp_path, capsys, command):
    from rnnkit import cli

    run = tmp_path / "run"
    checkpoint.save_checkpoint(run, 1, nn.Linear(3, 2), {}, {"task": "reverse", "config": {}})
    arguments = {"resume": ["train", "charlm", "--resume", str(run)],
                 "sample": ["sample", str(run), "--length", "3"]}[command]
    assert cli.main(arguments) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"rnnkit: error: {run}") and "'reverse'" in error, error
