"""Fault-injection campaign (slow), run as a user runs the command line.

``python -m rnnkit.cli train charlm`` on the bundled corpus (hidden size 32, a checkpoint every
4 steps) is killed with SIGKILL at random moments and at moments found by polling the run folder
for the temporary files of a checkpoint write and of the ``metrics.jsonl`` rewrite; SIGTERM and
SIGINT are sent at random moments; two runs race for one folder; checkpoints are damaged in
every way we know; bad values are given to every option class. Every resumed run must finish
with weights, optimizer state, RNG state and metrics bit-identical to one uninterrupted run.

Run with ``python -m pytest -q -m slow tests/train/test_faults_slow.py -s``: each test prints
its counts and the module prints a summary line at the end.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rnnkit.train import checkpoint
from rnnkit.train.checkpoint import CHECKPOINT_FILE, CheckpointError
from rnnkit.train.lock import LOCK_FILE
from rnnkit.train.metrics import METRICS_FILE, read_metrics

pytestmark = pytest.mark.slow

SEED = 11
STEPS = 60
CHARLM = [
    "--data.validation_fraction=0.01", "--model.embedding_size=8",
    "--model.recurrent.hidden_size=32", "--trainer.batch_size=8", "--bptt.window=16",
    "--bptt.evaluation_streams=4", "--bptt.evaluation_window=64", "--trainer.eval_interval=4",
    "--trainer.eval_interval_seconds=0", "--trainer.log_interval=2", "--trainer.threads=1",
    "--sample.length=4",
]
TIMING_KEYS = {"train_seconds", "elapsed_seconds", "chars_per_second"}
TIMEOUT = 300

COUNTS: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def summary():
    started = time.monotonic()
    yield COUNTS
    COUNTS["corrupt checkpoints"] += 0  # a corrupt one fails its test where it is found
    counted = ", ".join(f"{name} {COUNTS[name]}" for name in sorted(COUNTS))
    print(f"\nfault campaign: {counted}; {time.monotonic() - started:.0f} s")


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "rnnkit.cli", *arguments]


def train_command(run: Path, *extra: str) -> list[str]:
    return cli("train", "charlm", "--steps", str(STEPS), "--run-dir", str(run), *CHARLM, *extra)


def finish(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(run: Path) -> tuple[int, dict[str, torch.Tensor], list[dict]]:
    """The final step, every tensor of the live checkpoint, the metrics without clock fields."""
    document = checkpoint.read_checkpoint(run)
    tensors = {}
    for file_name in checkpoint.TENSOR_FILES:
        for key, value in load_file(str(run / document["tensors"] / file_name)).items():
            tensors[f"{file_name}:{key}"] = value
    records = [
        {key: value for key, value in record.items() if key not in TIMING_KEYS}
        for record in read_metrics(run / METRICS_FILE)
    ]
    return document["step"], tensors, records


def identical(run: Path, reference: tuple) -> bool:
    step, tensors, records = outcome(run)
    expected_step, expected_tensors, expected_records = reference
    assert step == expected_step, f"{run}: final step {step}, expected {expected_step}"
    assert tensors.keys() == expected_tensors.keys(), f"{run}: other tensors"
    for key, tensor in tensors.items():
        assert torch.equal(tensor, expected_tensors[key]), f"{run}: {key} differs"
    assert records == expected_records, f"{run}: metrics.jsonl differs from the reference"
    return True


def wait_for(condition, process: subprocess.Popen, poll: float = 0.0) -> bool:
    """Spin until ``condition()`` or the process exits; True when the condition came first."""
    while process.poll() is None:
        if condition():
            return True
        if poll:
            time.sleep(poll)
    return False


def owns_lock(run: Path, process: subprocess.Popen) -> bool:
    try:
        return f'"pid": {process.pid},' in (run / LOCK_FILE).read_text()
    except OSError:
        return False


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run: its outcome and its timing (lock taken to exit, training span)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    process = start(train_command(run))
    wait_for(lambda: owns_lock(run, process), process, 0.002)
    locked = time.monotonic()
    wait_for(lambda: (run / METRICS_FILE).exists(), process, 0.002)
    training = time.monotonic()
    last = f"checkpoints/step-{STEPS:07d}-"
    wait_for(lambda: any(name.startswith(last) for name in entries(run)), process, 0.002)
    trained = time.monotonic()
    output, errors = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, errors[-2000:]
    ended = time.monotonic()
    return {
        "run": run,
        "outcome": outcome(run),
        "locked_span": ended - locked,
        "train_span": ended - training,
        "loop_span": trained - training,
    }


def entries(run: Path) -> set[str]:
    """The names in the run folder and in its checkpoints/ folder."""
    names = set(os.listdir(run)) if run.is_dir() else set()
    folder = run / checkpoint.CHECKPOINT_FOLDER
    if folder.is_dir():
        names |= {f"checkpoints/{name}" for name in os.listdir(folder)}
    return names


def torn(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")


def kill_site(run: Path, before: set[str], was_torn: bool) -> str:
    """Where a kill -9 landed, read from what it left that was not there when it started."""
    new = entries(run) - before
    folders = {name for name in entries(run) if name.startswith("checkpoints/step-")}
    if any(name.startswith(("checkpoints/.tmp-", ".checkpoint.json.")) for name in new):
        return "checkpoint write"
    if len(folders) > 1 and folders & new:  # renamed into place, the old one not yet removed
        return "checkpoint write"
    if any(name.startswith(".metrics.jsonl.") for name in new):
        return "metrics write"
    if torn(run / METRICS_FILE) and not was_torn:
        return "metrics write"
    if any(name.startswith(".config.json.") for name in new):
        return "config write"
    return "elsewhere"


def checkpoint_is_whole(run: Path) -> bool | None:
    """True when the checkpoint that checkpoint.json names loads and verifies (weights and
    training state); None when there is no checkpoint yet."""
    from rnnkit.train.tasks.charlm import load_trained

    if not (run / CHECKPOINT_FILE).exists():
        return None
    try:
        load_trained(run)
        checkpoint.load_training_tensors(run, checkpoint.read_checkpoint(run))
    except CheckpointError:
        return False
    return True


def new_temporary(run: Path, prefix: str, seen: set[str]):
    """A condition: a temporary entry starting with ``prefix`` that ``seen`` does not hold yet
    has appeared (it is added to ``seen``)."""

    def appeared() -> bool:
        try:
            fresh = {name for name in entries(run) if name.startswith(prefix)} - seen
        except FileNotFoundError:  # a folder removed between listing and reading it
            return False
        seen.update(fresh)
        return bool(fresh)

    return appeared


def kill(process: subprocess.Popen, run: Path, plan: str, rng: random.Random, spans) -> None:
    """Send SIGKILL to ``process`` as ``plan`` says: at a random moment after it took the lock,
    or when the k-th temporary checkpoint folder, checkpoint.json or metrics.jsonl appears."""
    if plan == "random":
        wait_for(lambda: owns_lock(run, process), process, 0.002)
        time.sleep(rng.uniform(0, spans["locked_span"]))
    else:
        prefix = {"checkpoint": "checkpoints/.tmp-", "checkpoint.json": ".checkpoint.json.",
                  "metrics": ".metrics.jsonl."}[plan]
        seen = {name for name in entries(run) if name.startswith(prefix)}
        appeared = new_temporary(run, prefix, seen)
        for _ in range(rng.randint(1, STEPS // 4) if plan != "metrics" else 1):
            if not wait_for(appeared, process):
                break
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=TIMEOUT)


PLANS = (
    [["random"]] * 5 + [["random", "random"]] * 3 + [["checkpoint"]] * 3
    + [["checkpoint.json"]] * 3 + [["checkpoint", "metrics"]] * 4
)


def continue_command(run: Path) -> list[str]:
    if (run / CHECKPOINT_FILE).exists():
        return cli("train", "charlm", "--resume", str(run))
    return train_command(run, "--overwrite")  # killed before its first checkpoint: start over


def kill_trial(run: Path, plans: list[str], rng: random.Random, reference) -> Counter:
    """Run ``train_command`` into ``run``, kill it (and its continuations) by ``plans``, then
    resume to the end; returns the counts."""
    counts: Counter = Counter()
    command, killed_pid = train_command(run), None
    for plan in plans:
        before, was_torn = entries(run), torn(run / METRICS_FILE)
        process = start(command)
        kill(process, run, plan, rng, reference)
        if process.returncode != -signal.SIGKILL:
            assert process.returncode == 0, f"{run}: exit {process.returncode}"
            counts["finished before the kill"] += 1
            key = "resumes identical" if counts["kills"] else "runs never killed, identical"
            counts[key] += identical(run, reference["outcome"])
            return counts
        counts["kills"] += 1
        site = kill_site(run, before, was_torn)
        counts[f"kills inside a {site}" if site != "elsewhere" else "kills elsewhere"] += 1
        whole = checkpoint_is_whole(run)
        counts["kills before the first checkpoint"] += whole is None
        assert whole is not False, f"{run}: corrupt checkpoint after a kill ({plan})"
        counts["checkpoints verified after a kill"] += whole is True
        killed_pid = process.pid if (run / LOCK_FILE).exists() else None
        command = continue_command(run)
    finished = finish(command)
    assert finished.returncode == 0, finished.stderr[-2000:]
    if killed_pid is not None:
        assert f"taking over a stale lock of process {killed_pid}" in finished.stdout
        counts["stale locks reported"] += 1
    counts["resumes identical"] += identical(run, reference["outcome"])
    return counts


def test_kill_9_at_random_moments_and_inside_writes_resumes_identical(tmp_path, reference):
    rng = random.Random(SEED)
    counts: Counter = Counter()
    for trial, plans in enumerate(PLANS):
        counts += kill_trial(tmp_path / f"trial-{trial}", plans, rng, reference)
        counts["trials"] += 1
    COUNTS.update(counts)
    print(f"\nkill -9: {dict(counts)}")
    assert counts["resumes identical"] + counts["runs never killed, identical"] == len(PLANS)
    assert counts["resumes identical"] >= len(PLANS) - 3
    assert counts["kills inside a checkpoint write"] >= 1
    assert counts["kills inside a metrics write"] >= 1


SIGNALS = [signal.SIGTERM, signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGHUP]


def test_sigterm_sigint_and_sighup_at_random_moments_save_and_resume_identical(
    tmp_path, reference
):
    rng = random.Random(SEED + 1)
    counts: Counter = Counter()
    for trial, signal_number in enumerate(SIGNALS):
        run = tmp_path / f"trial-{trial}"
        process = start(train_command(run))
        wait_for(lambda run=run: (run / METRICS_FILE).exists(), process, 0.002)
        time.sleep(rng.uniform(0, reference["loop_span"]))
        process.send_signal(signal_number)
        output, errors = process.communicate(timeout=TIMEOUT)
        name = signal.Signals(signal_number).name
        if process.returncode in (0, -signal_number):  # after the last step: nothing to save
            assert checkpoint.read_checkpoint(run)["step"] == STEPS, f"{name}: steps lost"
            counts[f"{name} after the last step"] += 1
            continue
        assert process.returncode == 128 + signal_number, f"{name}: exit {process.returncode}"
        assert "Traceback" not in errors and f"--resume {run}" in output
        step = checkpoint.read_checkpoint(run)["step"]
        assert f"interrupted at step {step}; checkpoint saved" in output
        assert not (run / LOCK_FILE).exists(), "the lock outlived the run"
        counts[f"{name} saved"] += 1
        resumed = finish(cli("train", "charlm", "--resume", str(run)))
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        counts["resumes identical"] += identical(run, reference["outcome"])
    COUNTS.update({f"signals: {key}": value for key, value in counts.items()})
    print(f"\nsignals: {dict(counts)}")
    assert sum(value for key, value in counts.items() if key.endswith("saved")) >= 3
    assert counts["resumes identical"] == sum(
        value for key, value in counts.items() if key.endswith("saved")
    )


def test_two_runs_into_one_folder_one_runs_the_other_is_refused(tmp_path, reference):
    run = tmp_path / "run"
    first, second = start(train_command(run)), start(train_command(run))
    results = [(process, *process.communicate(timeout=TIMEOUT)) for process in (first, second)]
    codes = sorted(process.returncode for process, _, _ in results)
    assert codes == [0, 1], codes
    winner = next(process for process, _, _ in results if process.returncode == 0)
    refused = next(errors for process, _, errors in results if process.returncode == 1)
    lines = refused.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rnnkit: error:"), refused
    assert f"in use by process {winner.pid}" in refused and str(run / LOCK_FILE) in refused
    assert identical(run, reference["outcome"])  # the refused run wrote nothing into the folder
    COUNTS["concurrent runs refused"] += 1


def test_a_stale_lock_left_by_kill_9_is_detected_and_reported(tmp_path, reference):
    run = tmp_path / "run"
    process = start(train_command(run))
    wait_for(lambda: owns_lock(run, process), process, 0.002)
    process.kill()
    process.communicate(timeout=TIMEOUT)
    assert (run / LOCK_FILE).exists(), "no lock left to test"
    finished = finish(continue_command(run))
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert f"taking over a stale lock of process {process.pid}" in finished.stdout
    assert not (run / LOCK_FILE).exists()
    assert identical(run, reference["outcome"])
    COUNTS["stale locks reported"] += 1


def _live(run: Path) -> Path:
    return run / checkpoint.read_checkpoint(run)["tensors"]


def _rewrite_document(run: Path, edit) -> None:
    import json

    path = run / CHECKPOINT_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    edit(document)
    path.write_text(json.dumps(document), encoding="utf-8")


def _flip(path: Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path, size: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])


def _wrong_shapes(run: Path) -> None:
    """A model file whose tensors (and their checksums) are whole but one has another shape."""
    from safetensors.torch import save_file

    path = _live(run) / "model.safetensors"
    tensors = load_file(str(path))
    key = sorted(tensors)[0]
    tensors[key] = tensors[key][1:].clone()
    save_file(tensors, str(path))
    sums = {name: checkpoint.tensor_checksum(value) for name, value in tensors.items()}

    def resign(document: dict) -> None:  # a consistent checkpoint.json: only the shapes are wrong
        checksums = document["checksums"]
        checksums[path.name] = sums
        checksums["document"] = checkpoint._document_checksum(document, checksums)

    _rewrite_document(run, resign)


def _other_task_tensors(run: Path, other: Path) -> None:
    live = _live(run)
    shutil.rmtree(live)
    shutil.copytree(_live(other), live)


def _edit_stored_checksum(document: dict) -> None:
    sums = document["checksums"]["model.safetensors"]
    sums[sorted(sums)[0]] = "0" * 64


DAMAGE = {  # name: (damage(run, other_run), text the error must hold besides the path)
    "model missing": (lambda r, o: (_live(r) / "model.safetensors").unlink(), "model.safetensors"),
    "model empty": (lambda r, o: _truncate(_live(r) / "model.safetensors", 0), "model.safetensors"),
    "model truncated": (
        lambda r, o: _truncate(_live(r) / "model.safetensors"), "model.safetensors"),
    "model header byte flipped": (
        lambda r, o: _flip(_live(r) / "model.safetensors", 12), "model.safetensors"),
    "model data byte flipped": (
        lambda r, o: _flip(_live(r) / "model.safetensors", -1), "does not match its checksum"),
    "training missing": (
        lambda r, o: (_live(r) / "training.safetensors").unlink(), "training.safetensors"),
    "training truncated": (
        lambda r, o: _truncate(_live(r) / "training.safetensors"), "training.safetensors"),
    "training data byte flipped": (
        lambda r, o: _flip(_live(r) / "training.safetensors", -1), "does not match its checksum"),
    "tensor folder missing": (lambda r, o: shutil.rmtree(_live(r)), ".safetensors"),
    "wrong shapes": (lambda r, o: _wrong_shapes(r), "model.safetensors"),
    "stored checksum edited": (
        lambda r, o: _rewrite_document(r, _edit_stored_checksum), "does not match its checksum"),
    "config edited": (
        lambda r, o: _rewrite_document(r, lambda d: d["config"].update(seed=5)), "checksum"),
    "other task's tensors": (_other_task_tensors, "differ from the checkpoint's list"),
    "checkpoint.json missing": (lambda r, o: (r / CHECKPOINT_FILE).unlink(), CHECKPOINT_FILE),
    "checkpoint.json empty": (lambda r, o: _truncate(r / CHECKPOINT_FILE, 0), CHECKPOINT_FILE),
    "checkpoint.json truncated": (lambda r, o: _truncate(r / CHECKPOINT_FILE), CHECKPOINT_FILE),
    "checkpoint.json binary": (
        lambda r, o: (r / CHECKPOINT_FILE).write_bytes(b"\xff\xfe\x00garbage"), CHECKPOINT_FILE),
    "checkpoint.json a list": (
        lambda r, o: (r / CHECKPOINT_FILE).write_text("[1, 2]"), CHECKPOINT_FILE),
    "checkpoint.json vocabulary edited": (
        lambda r, o: _rewrite_document(
            r, lambda d: d["metadata"].update(vocabulary=d["metadata"]["vocabulary"][::-1])),
        CHECKPOINT_FILE),
    "checkpoint.json key removed": (
        lambda r, o: _rewrite_document(r, lambda d: d.pop("rng")), CHECKPOINT_FILE),
}
TRAINING_ONLY = {"training missing", "training truncated", "training data byte flipped"}
COMMANDS = {
    "resume": lambda run: ["train", "charlm", "--resume", str(run)],
    "eval": lambda run: ["eval", str(run)],
    "sample": lambda run: ["sample", str(run), "--length", "3", "--seed", "0"],
}


@pytest.fixture(scope="module")
def other_task_run(tmp_path_factory):
    """A finished run of another task (reverse), tiny."""
    run = tmp_path_factory.mktemp("other") / "reverse"
    tiny = ["--data.validation_size=20", "--data.test_size=20", "--model.embedding_size=4",
            "--model.encoder.hidden_size=4", "--model.decoder.hidden_size=4",
            "--decoding.beam_width=1", "--decoding.examples=1", "--trainer.batch_size=4"]
    finished = finish(cli("train", "reverse", "--steps", "2", "--run-dir", str(run), *tiny))
    assert finished.returncode == 0, finished.stderr[-2000:]
    return run


def assert_one_clear_error(code: int, errors: str, *named: str) -> None:
    lines = [line for line in errors.splitlines() if line.strip()]
    assert code == 1, f"exit {code}: {errors[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("rnnkit: error:"), errors[-2000:]
    for text in named:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"


def test_every_kind_of_checkpoint_damage_is_one_clear_error(
    tmp_path, capsys, reference, other_task_run
):
    from rnnkit import cli as command_line

    counts: Counter = Counter()
    for kind, (damage, named) in DAMAGE.items():
        run = tmp_path / kind.replace(" ", "-").replace("'", "")
        shutil.copytree(reference["run"], run)
        damage(run, other_task_run)
        history = (run / METRICS_FILE).read_bytes()
        for name, arguments in COMMANDS.items():
            if kind in TRAINING_ONLY and name != "resume":
                continue  # eval and sample read only the weights
            capsys.readouterr()
            code = command_line.main(arguments(run))
            assert_one_clear_error(code, capsys.readouterr().err, str(run), named)
            assert (run / METRICS_FILE).read_bytes() == history, f"{kind}: {name} lost history"
            counts["clear errors"] += 1
    COUNTS["damage: kinds"] += len(DAMAGE)
    COUNTS["damage: clear errors"] += counts["clear errors"]
    print(f"\ndamage: {len(DAMAGE)} kinds, {counts['clear errors']} clear errors")


def test_another_tasks_run_is_refused_by_resume_and_sample(capsys, other_task_run):
    from rnnkit import cli as command_line

    for name in ("resume", "sample"):
        capsys.readouterr()
        code = command_line.main(COMMANDS[name](other_task_run))
        assert_one_clear_error(code, capsys.readouterr().err, str(other_task_run), "'reverse'")
        COUNTS["damage: clear errors"] += 1


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_real_command_line_reports_damage_without_a_traceback(tmp_path, reference, name):
    run = tmp_path / "run"
    shutil.copytree(reference["run"], run)
    _flip(_live(run) / "model.safetensors", -1)
    finished = finish(cli(*COMMANDS[name](run)))
    assert "Traceback" not in finished.stderr
    assert_one_clear_error(finished.returncode, finished.stderr, str(run), "checksum")
    COUNTS["damage: clear errors"] += 1


BAD_TRAIN_VALUES = {  # class: [(arguments, the option the error must name)]
    "types": [
        (["--trainer.batch_size=eight"], "trainer.batch_size"),
        (["--optimizer.learning_rate=fast"], "optimizer.learning_rate"),
        (["--model.recurrent.bidirectional=maybe"], "model.recurrent.bidirectional"),
        (["--trainer.max_steps=1.5"], "trainer.max_steps"),
        (["--model.hiden_size=3"], "model.hiden_size"),
        (["--time-budget", "soon"], "duration"),
    ],
    "ranges": [
        (["--steps", "0"], "max_steps"), (["--steps", "-5"], "max_steps"),
        (["--time-budget", "0"], "time_budget_seconds"),
        (["--trainer.log_interval=0"], "log_interval"),
        (["--trainer.threads=-1"], "threads"), (["--trainer.eval_interval=-2"], "eval_interval"),
        (["--trainer.eval_interval_seconds=-1"], "eval_interval_seconds"),
        (["--trainer.batch_size=0"], "batch_size"),
        (["--optimizer.weight_decay=-0.1"], "weight_decay"),
        (["--optimizer.warmup_steps=-1"], "warmup_steps"),
        (["--optimizer.learning_rate=nan"], "learning_rate"),
        (["--optimizer.learning_rate=inf"], "learning_rate"),
        (["--optimizer.beta2=1.5"], "beta2"), (["--optimizer.clip_norm=-1"], "clip_norm"),
        (["--optimizer.gradient_noise=-1"], "gradient_noise"),
        (["--bptt.window=0"], "window"), (["--bptt.evaluation_streams=0"], "evaluation_streams"),
        (["--model.embedding_size=0"], "embedding_size"), (["--model.dropout=1.5"], "dropout"),
        (["--model.recurrent.hidden_size=0"], "hidden_size"),
        (["--model.recurrent.num_layers=0"], "num_layers"),
        (["--data.validation_fraction=1.5"], "validation_fraction"),
    ],
    "combinations": [
        (["--trainer.max_steps=none", "--trainer.time_budget_seconds=none"], "max_steps"),
        (["--model.recurrent.cell=nosuch"], "nosuch"),
        (["--model.recurrent.strategy=nosuch"], "nosuch"),
        (["--overwrite", "--resume", "RUN"], "--overwrite"),
        (["--resume", "RUN", "--run-dir", "OTHER"], "--run-dir"),
    ],
    "sampling": [
        (["--sample.temperature=-1"], "temperature"), (["--sample.temperature=nan"], "temperature"),
        (["--sample.top_k=-3"], "top_k"), (["--sample.length=-1"], "length"),
    ],
}
BAD_SAMPLE_OPTIONS = [
    (["--temperature", "nan"], "--temperature"), (["--temperature", "-1"], "--temperature"),
    (["--top-k", "-1"], "--top-k"), (["--length", "-2"], "--length"),
]


def test_every_bad_value_class_is_one_clear_error_naming_the_option(tmp_path, capsys, reference):
    from rnnkit import cli as command_line

    counts: Counter = Counter()
    for value_class, cases in BAD_TRAIN_VALUES.items():
        for arguments, option in cases:
            run = tmp_path / f"run-{counts['total']}"
            replaced = {"RUN": str(reference["run"]), "OTHER": str(tmp_path / "other")}
            arguments = [replaced.get(argument, argument) for argument in arguments]
            command = ["train", "charlm", *arguments]
            if "--resume" not in arguments:
                command += ["--run-dir", str(run)]
            capsys.readouterr()
            assert_one_clear_error(command_line.main(command), capsys.readouterr().err, option)
            assert not run.exists(), f"{arguments}: refused after making the run folder"
            counts[value_class] += 1
            counts["total"] += 1
    for arguments, option in BAD_SAMPLE_OPTIONS:
        capsys.readouterr()
        code = command_line.main(["sample", str(reference["run"]), *arguments])
        assert_one_clear_error(code, capsys.readouterr().err, option)
        counts["sampling"] += 1
        counts["total"] += 1
    COUNTS["bad values: clear errors"] += counts["total"]
    print(f"\nbad values: {dict(counts)}")


def test_a_bad_value_on_the_real_command_line_has_no_traceback(tmp_path):
    finished = finish(cli("train", "charlm", "--run-dir", str(tmp_path / "run"),
                          "--trainer.log_interval=0"))
    assert "Traceback" not in finished.stderr
    assert_one_clear_error(finished.returncode, finished.stderr, "log_interval")
    COUNTS["bad values: clear errors"] += 1
