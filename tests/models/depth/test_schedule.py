"""Test-time depth schedules: the parser, the scheduled model against the blocks run by hand,
and ``rnnkit eval RUN --depth-schedule SPEC`` on a tiny trained run."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from rnnkit import cli
from rnnkit.models.depth.schedule import apply_schedule, format_schedule, parse_schedule
from rnnkit.models.sequence_model import SequenceModelConfig, build_sequence_model


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,1,2,3", [0, 1, 2, 3]),
        ("0,1,3", [0, 1, 3]),
        ("0, 1x2, 3-2", [0, 1, 1, 3, 2]),
        ("0-3x2", [0, 1, 2, 3, 0, 1, 2, 3]),
        ("3-0", [3, 2, 1, 0]),
        ("2", [2]),
    ],
)
def test_parse_schedule(text, expected):
    assert parse_schedule(text, 4) == expected
    assert format_schedule(expected) == ",".join(map(str, expected))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "--depth-schedule: expected comma-separated .* got an empty schedule"),
        ("0,,1", "--depth-schedule: expected comma-separated .* got '' in '0,,1'"),
        ("a-b", "--depth-schedule: expected comma-separated .* got 'a-b'"),
        ("0,4", r"--depth-schedule: expected block indices 0..3 \(the model has 4 blocks\), got 4"),
        ("1x0", "--depth-schedule: expected a repeat count of 1 or more, got '1x0'"),
        ("-1", "--depth-schedule: expected comma-separated .* got '-1'"),
    ],
)
def test_bad_schedules_name_the_argument_the_expectation_and_the_value(text, message):
    with pytest.raises(ValueError, match=message):
        parse_schedule(text, 4)


@pytest.mark.parametrize("mixer", ["attention", "gru"])
def test_scheduled_model_runs_the_blocks_in_the_schedule_order(mixer):
    torch.manual_seed(0)
    config = SequenceModelConfig(model_size=8, num_blocks=3, mixer=mixer, num_heads=2)
    model = build_sequence_model(config, vocabulary_size=7).double()
    tokens = torch.randint(0, 7, (2, 6))
    blocks = model.block_list()
    parameters = model.parameter_count()
    schedule = [0, 2, 2, 1]
    hidden = model.embedding(tokens)
    for index in schedule:
        hidden, _ = blocks[index](hidden, None, None)
    expected = model.head(model.final_norm(hidden))
    apply_schedule(model, schedule)
    outputs, state = model(tokens)
    assert_close(outputs, expected)
    assert len(state) == 4
    assert model.parameter_count() == parameters  # repeats share their weights
    stepped, step_state = [], None
    for position in range(6):
        output, step_state = model.step(tokens[:, position], step_state)
        stepped.append(output)
    assert_close(torch.stack(stepped, 1), expected, msg="step outputs")


def test_eval_with_a_depth_schedule_on_a_trained_run(tmp_path, capsys):
    run = tmp_path / "copy"
    arguments = [
        "train", "copy", "--trainer.max_steps=3", "--run-dir", str(run),
        "--model.cell=attention", "--model.model_size=16", "--model.num_blocks=2",
        "--model.num_heads=2", "--trainer.batch_size=4", "--evaluation.sequences=8",
        "--evaluation.batch_size=4", "--data.delay=4", "--data.string_length=4",
    ]  # fmt: skip
    assert cli.main(arguments) == 0
    capsys.readouterr()
    assert cli.main(["eval", str(run), "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)["metrics"]
    assert cli.main(["eval", str(run), "--json", "--depth-schedule", "0,1"]) == 0
    same = json.loads(capsys.readouterr().out)["metrics"]
    assert same["loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert same["scheduled_blocks"] == 2
    assert cli.main(["eval", str(run), "--depth-schedule", "0,1x2,0"]) == 0
    output = capsys.readouterr().out
    assert "depth schedule 0,1,1,0" in output and "loss" in output
    assert cli.main(["eval", str(run), "--json", "--depth-schedule", "1"]) == 0
    skipped = json.loads(capsys.readouterr().out)["metrics"]
    assert skipped["loss"] != pytest.approx(plain["loss"], rel=1e-6)
    assert skipped["scheduled_blocks"] == 1
    assert cli.main(["eval", str(run), "--depth-schedule", "0,2"]) == 1
    error = capsys.readouterr().err
    assert "--depth-schedule: expected block indices 0..1 (the model has 2 blocks), got 2" in error
