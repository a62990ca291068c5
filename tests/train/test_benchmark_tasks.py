"""The benchmark tasks (``rnnkit train mqar | state-tracking | ...``): through the command
line with recurrent and attention mixers, and their metrics against models that know the
answers."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import Tensor, nn

from rnnkit import cli
from rnnkit.cells import CELLS
from rnnkit.data.benchmarks import state_tracking
from rnnkit.train.config import apply_overrides
from rnnkit.train.metrics import format_evaluation
from rnnkit.train.tasks import TASKS, language_problems, token_problems
from rnnkit.train.tasks.benchmark_task import LENGTH_PREFIX, lengths_of
from tests.train.test_trainer import interrupt_at

BENCHMARK_TASKS = [
    "mqar",
    "state-tracking",
    "icll",
    "passkey",
    "copy",
    "selective-copy",
    "adding",
    "sequential-digits",
]
TINY = [
    "--model.model_size=16",
    "--model.recurrent.hidden_size=16",
    "--model.num_blocks=1",
    "--model.num_heads=2",
    "--trainer.batch_size=4",
    "--evaluation.sequences=8",
    "--evaluation.batch_size=4",
]
SMALL_DATA = {
    "mqar": ["--data.sequence_length=32", "--data.num_pairs=4"],
    "state-tracking": ["--data.train_length=6"],
    "icll": ["--data.sequence_length=32"],
    "passkey": ["--data.train_length=16", "--data.test_length_factor=4"],
    "copy": ["--data.delay=4", "--data.string_length=4"],
    "selective-copy": ["--data.sequence_length=16", "--data.string_length=4"],
    "adding": ["--data.sequence_length=20"],
    "sequential-digits": [],
}


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_every_benchmark_task_is_registered():
    assert set(BENCHMARK_TASKS) <= set(TASKS)


@pytest.mark.parametrize("cell", ["gru", "attention"])
@pytest.mark.parametrize("task", BENCHMARK_TASKS)
def test_trains_and_evaluates_through_the_command_line(task, cell, tmp_path, capsys):
    run = tmp_path / task
    arguments = ["train", task, "--steps", "2", "--run-dir", str(run), f"--model.cell={cell}"]
    assert cli.main([*arguments, *TINY, *SMALL_DATA[task]]) == 0
    output = capsys.readouterr().out
    assert "final validation after 2 steps" in output and "test: loss" in output
    expected_blocks = "attention" if cell == "attention" else cell
    assert f"blocks {expected_blocks};" in output or f"blocks {expected_blocks}," in output
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["mixer"] == ("attention" if cell == "attention" else "recurrent")
    if cell != "attention":
        assert config["model"]["recurrent"]["cell"] == cell
    assert cli.main(["eval", str(run), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    metrics = document["metrics"]
    assert (document["task"], document["step"], document["split"]) == (task, 2, "test")
    assert {"loss", "accuracy", "parameter_count", "state_size"} <= set(metrics)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["parameter_count"] > 0
    if task in ("state-tracking", "passkey"):
        assert lengths_of(metrics) and (run / "accuracy_by_length.png").stat().st_size > 0
    if cell == "attention":
        assert metrics["state_size"] == 2 * 16  # one block: K and V of 16 features per token


@pytest.mark.parametrize("cell", [*sorted(CELLS), "paragru:newton", "mingru:scan"])
def test_every_registered_cell_is_a_mixer_through_the_command_line(cell, tmp_path, capsys):
    name, _, strategy = cell.partition(":")
    arguments = ["train", "mqar", "--steps", "1", "--run-dir", str(tmp_path / "run")]
    arguments += [f"--model.cell={name}", *TINY, *SMALL_DATA["mqar"]]
    if strategy:
        arguments.append(f"--model.recurrent.strategy={strategy}")
    assert cli.main(arguments) == 0
    assert f"blocks {name}, strategy {strategy or 'auto'};" in capsys.readouterr().out


def test_cell_options_follow_the_cell_named_by_model_cell(tmp_path, capsys):
    arguments = ["train", "state-tracking", "--steps", "1", "--run-dir", str(tmp_path / "run")]
    arguments += ["--model.cell=mingru", "--model.recurrent.options.allow_negative_eigenvalues=on"]
    assert cli.main([*arguments, *TINY]) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["recurrent"]["cell"] == "mingru"
    assert config["model"]["recurrent"]["options"] == {"allow_negative_eigenvalues": True}
    arguments[5] = str(tmp_path / "other")
    assert cli.main([*arguments[:-1], "--model.recurrent.options.num_householder=2"]) == 1
    assert "not taken by the cell 'mingru'" in capsys.readouterr().err


def test_titans_mag_trains_through_the_command_line(tmp_path, capsys):
    """Titans' memory as a gate: sliding-window attention gated by a titans memory whose
    options are the recurrent options."""
    run = tmp_path / "mag"
    arguments = ["train", "mqar", "--steps", "2", "--run-dir", str(run), *TINY]
    arguments += ["--model.mixer=titans_mag", "--model.attention_window=4"]
    arguments += ["--model.recurrent.options.chunk_size=4", *SMALL_DATA["mqar"]]
    assert cli.main(arguments) == 0
    assert "blocks titans_mag, strategy auto;" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["mixer"] == "titans_mag"
    assert config["model"]["attention_window"] == 4
    assert config["model"]["recurrent"]["cell"] == "titans"
    assert config["model"]["recurrent"]["options"] == {"chunk_size": 4}
    assert cli.main(["eval", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["state_size"] > 2 * 16


def test_an_unknown_cell_names_the_option_and_the_cells(tmp_path, capsys):
    arguments = ["train", "mqar", "--steps", "1", "--run-dir", str(tmp_path / "run")]
    assert cli.main([*arguments, "--model.cell=lstmm"]) == 1
    error = capsys.readouterr().err
    assert "mixer" in error and "'lstmm'" in error and "attention" in error and "gru" in error


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, capsys, monkeypatch):
    command = ["train", "mqar", "--steps", "4", *TINY, *SMALL_DATA["mqar"], "--model.cell=lstm"]
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    assert cli.main([*command, "--run-dir", str(straight)]) == 0
    with monkeypatch.context() as patch:
        interrupt_at(patch, 2)
        assert cli.main([*command, "--run-dir", str(parts)]) == cli.INTERRUPTED
    assert json.loads((parts / "checkpoint.json").read_text())["step"] == 2
    assert cli.main(["train", "mqar", "--resume", str(parts)]) == 0
    capsys.readouterr()
    results = []
    for run in (straight, parts):
        assert cli.main(["eval", str(run), "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out)["metrics"])
    assert results[0] == results[1]


def test_evaluation_lines_stay_short_with_per_length_metrics():
    metrics = {"loss": 0.5, **{f"{LENGTH_PREFIX}{n}": 1.0 for n in range(1, 65)}}
    line = format_evaluation(metrics)
    assert "56 more in metrics.jsonl" in line and f"{LENGTH_PREFIX}9 " not in line


class RunningProducts(nn.Module):
    """Knows the group: right for the first ``right_for`` positions, wrong after."""

    def __init__(self, group: str, right_for: int) -> None:
        super().__init__()
        self.table, self.right_for = state_tracking.multiplication_table(group), right_for

    def forward(self, inputs: Tensor) -> tuple[Tensor, None]:
        products = state_tracking.running_products(inputs, self.table)
        size = self.table.shape[0]
        wrong = (products + 1) % size
        answer = torch.where(torch.arange(inputs.shape[1]) < self.right_for, products, wrong)
        return nn.functional.one_hot(answer, size).float() * 20.0, None


def state_tracking_problem(*overrides: tuple[str, str]):
    definition = TASKS["state-tracking"]
    config = apply_overrides(
        definition.config_type(),
        [("evaluation.sequences", "32"), ("evaluation.batch_size", "16"), *overrides],
    )
    return language_problems.StateTrackingProblem(config)


@pytest.mark.parametrize("right_for", [64, 40, 16, 3, 0])
def test_state_tracking_scores_every_length_and_the_longest_held(right_for):
    problem = state_tracking_problem(("data.group", "s3"))
    metrics = problem.evaluate(RunningProducts("s3", right_for), stream=1)  # type: ignore[arg-type]
    by_length = dict(lengths_of(metrics))
    assert sorted(by_length) == list(range(1, 65))
    assert all(by_length[n] == (1.0 if n <= right_for else 0.0) for n in by_length)
    assert metrics["longest_length_at_90"] == right_for
    assert metrics["accuracy"] == pytest.approx(right_for / 64)
    assert metrics["accuracy_in_distribution"] == pytest.approx(min(right_for, 16) / 16)


@pytest.mark.parametrize(("group", "order"), [("parity", 2), ("s3", 6), ("a5", 60), ("s5", 120)])
def test_state_tracking_reads_and_scores_one_token_per_group_element(group, order):
    definition = TASKS["state-tracking"]
    config = apply_overrides(definition.config_type(), [("data.group", group)])
    task = definition.build(config, None)
    batch = task.problem.train_batch(8, torch.Generator().manual_seed(0))
    assert int(batch.inputs.max()) < order and int(batch.targets.max()) < order
    logits, _ = task.model(torch.arange(order)[None])  # every element is a valid input token
    assert logits.shape == (1, order, order)  # one logit per element at every position
    loss, _ = task.problem.loss(task.model, batch)  # an untrained model is near chance
    assert abs(loss.item() - math.log(order)) < 0.5


@pytest.mark.slow
def test_an_lstm_learns_s3_and_holds_it_at_4x_the_training_length(tmp_path, capsys):
    """S3 at the default length 16 (chance 1/6 per position): 1,000 steps suffice (about 20 s
    on one thread); the sweeps' 2,000 leave a margin."""
    run = tmp_path / "s3"
    arguments = ["train", "state-tracking", "--steps", "1000", "--run-dir", str(run)]
    arguments += ["--model.cell=lstm", "--data.group=s3", "--trainer.threads=1"]
    assert cli.main(arguments) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert metrics["longest_length_at_90"] == 64 and metrics["accuracy"] > 0.95


class CopiesTargets(nn.Module):
    """Answers a token task from the batch it was given (it holds the targets)."""

    def __init__(self, inputs: Tensor, targets: Tensor, size: int) -> None:
        super().__init__()
        self.inputs, self.targets, self.size = inputs, targets, size

    def forward(self, inputs: Tensor) -> tuple[Tensor, None]:
        rows = [int((self.inputs == row).all(1).nonzero()[0]) for row in inputs]
        return nn.functional.one_hot(self.targets[rows], self.size).float() * 20.0, None


@pytest.mark.parametrize("task", ["mqar", "copy", "selective-copy"])
def test_token_tasks_score_a_model_that_knows_the_answers_perfectly(task):
    definition = TASKS[task]
    config = apply_overrides(definition.config_type(), [("evaluation.sequences", "20")])
    problem = definition.build(config, None).problem
    held = problem.held_out(1)
    model = CopiesTargets(held.inputs, held.targets, config.data.vocabulary_size)
    metrics = problem.evaluate(model, 1)
    assert metrics["accuracy"] == 1.0 and metrics["sequence_accuracy"] == 1.0
    assert metrics["loss"] < 1e-6


def test_mqar_scores_the_frequent_and_the_rare_values_apart():
    definition = TASKS["mqar"]
    config = apply_overrides(
        definition.config_type(), [("evaluation.sequences", "40"), ("data.zipf_exponent", "0.5")]
    )
    problem = definition.build(config, None).problem
    held = problem.held_out(1)
    tail = config.data.tail_value(held.targets)
    knows_the_head = held.targets.masked_fill(tail, 0)  # wrong at every rare value
    model = CopiesTargets(held.inputs, knows_the_head, config.data.vocabulary_size)
    metrics = problem.evaluate(model, 1)
    assert metrics["head_accuracy"] == 1.0 and metrics["tail_accuracy"] == 0.0
    share = float(tail[held.mask].double().mean())
    assert 0.0 < share < 0.5 and metrics["accuracy"] == pytest.approx(1.0 - share)


def test_passkey_lengths_double_from_the_training_length_to_the_longest():
    config = TASKS["passkey"].config_type()
    assert token_problems.passkey_lengths(config.data) == [64, 128, 256, 512, 1024]
    config = apply_overrides(config, [("data.test_length_factor", "3")])
    assert token_problems.passkey_lengths(config.data) == [64, 128, 192]


class ReadsTheSum(nn.Module):
    """Adds the marked values, off by ``error``."""

    def __init__(self, error: float) -> None:
        super().__init__()
        self.error = error

    def forward(self, inputs: Tensor) -> tuple[Tensor, None]:
        total = (inputs[..., 0] * inputs[..., 1]).cumsum(1) + self.error
        return total.unsqueeze(-1), None


@pytest.mark.parametrize(("error", "accuracy"), [(0.0, 1.0), (0.03, 1.0), (0.05, 0.0)])
def test_adding_scores_the_sum_at_the_last_step(error, accuracy):
    config = TASKS["adding"].config_type()
    problem = TASKS["adding"].build(config, None).problem
    metrics = problem.evaluate(ReadsTheSum(error), 1)  # type: ignore[arg-type]
    assert metrics["accuracy"] == accuracy
    assert metrics["mse"] == pytest.approx(error**2, abs=1e-6)


def test_icll_reports_the_ngram_baselines_on_the_same_sequences():
    definition = TASKS["icll"]
    config = apply_overrides(
        definition.config_type(),
        [("evaluation.sequences", "8"), ("evaluation.batch_size", "8"), ("model.num_blocks", "1")],
    )
    task = definition.build(config, None)
    metrics = task.evaluate()
    for order in (1, 2, 3):
        assert 0.0 <= metrics[f"ngram_{order}_accuracy"] <= 1.0
        assert 0.0 <= metrics[f"ngram_{order}_total_variation"] <= 1.0
    # The in-context bigram knows the language better than the unigram on the same sequences.
    assert metrics["ngram_2_accuracy"] > metrics["ngram_1_accuracy"]


def test_the_variant_must_match_the_copy_task():
    definition = TASKS["copy"]
    config = apply_overrides(definition.config_type(), [("data.variant", "selective-copy")])
    with pytest.raises(ValueError, match="data.variant: expected 'copy'"):
        definition.build(config, None)


@pytest.mark.parametrize("task", BENCHMARK_TASKS)
def test_the_suggested_sweep_command_is_valid(task, tmp_path, capsys):
    suggested = TASKS[task].next_steps(tmp_path / "run").splitlines()
    command = next(line.split() for line in suggested if "rnnkit bench" in line)
    assert cli.main([*command[1:], "--out", str(tmp_path / "sweep"), "--plan"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 3  # allocator line, 3 runs
