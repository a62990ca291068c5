"""``rnnkit train dynamics``: generalized and sparse teacher forcing against readable loops, and
the task through the command line (train, eval, eval --data, predict read back). The metrics:
``test_dynamics_metrics.py``."""

from __future__ import annotations

import json

import pytest
import torch
from torch.testing import assert_close

from rnnkit import cli
from rnnkit.cells import ALRNNCell, GatedLinearAttentionCell, LSTMCell
from rnnkit.data.files.trajectories_csv import read_trajectories
from rnnkit.strategies import STRATEGIES
from rnnkit.train.tasks import dynamics, dynamics_config, supervised
from rnnkit.train.teacher_forcing import DynamicsModel, gtf_rollout
from rnnkit.train.teacher_forcing import adaptive_alpha as gtf_adaptive_alpha

F64 = torch.float64


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def small_case(cell_type=ALRNNCell, **options):
    torch.manual_seed(0)
    cell = cell_type(2, 5, **options).to(F64)
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(3, 8, 2, dtype=F64, generator=generator)
    observed = torch.randn(3, 8, 2, dtype=F64, generator=generator)
    z0 = torch.randn(3, 5, dtype=F64, generator=generator)
    return cell, inputs, observed, z0


def forced_loop(cell, inputs, observed, z0, alpha, interval=1):
    """The GTF recursion written out: predict, record, then mix the first N units after every
    ``interval``-th prediction."""
    z, predictions = z0, []
    for t in range(inputs.shape[1]):
        z = cell.step(inputs[:, t], cell.state_type(z))[1].h
        predictions.append(z)
        n = observed.shape[-1]
        if (t + 1) % interval == 0:
            z = torch.cat([(1 - alpha) * z[:, :n] + alpha * observed[:, t], z[:, n:]], -1)
    return torch.stack(predictions, 1), z


def test_alpha_one_is_pure_teacher_forcing():
    cell, inputs, observed, z0 = small_case()
    predictions, final = gtf_rollout(cell, inputs, cell.state_type(z0), observed, 1.0)
    # each step starts from the data in the observed units: predict t from x_{t-1}
    z = z0
    for t in range(inputs.shape[1]):
        z = cell.step(inputs[:, t], cell.state_type(z))[1].h
        assert_close(predictions[:, t], z)
        z = torch.cat([observed[:, t], z[:, 2:]], -1)
    assert_close(final.h, z)


def test_alpha_zero_is_the_free_run_of_the_strategy():
    cell, inputs, observed, z0 = small_case()
    predictions, final = gtf_rollout(cell, inputs, cell.state_type(z0), observed, 0.0)
    outputs, state = STRATEGIES["sequential"](cell, inputs, cell.state_type(z0))
    assert_close(predictions, outputs, rtol=0, atol=0)
    assert_close(final.h, state.h, rtol=0, atol=0)


@pytest.mark.parametrize("cell_type", [ALRNNCell, LSTMCell], ids=["alrnn", "lstm"])
def test_partial_forcing_values_and_gradients_match_the_loop(cell_type):
    cell, inputs, observed, z0 = small_case(cell_type)
    if cell_type is LSTMCell:
        state = cell.state_type(z0, torch.zeros_like(z0))
        predictions, _ = gtf_rollout(cell, inputs, state, observed, 0.3)
        h, c, expected = z0, torch.zeros_like(z0), []
        for t in range(inputs.shape[1]):
            _, (h, c) = cell.step(inputs[:, t], cell.state_type(h, c))
            expected.append(h)
            h = torch.cat([0.7 * h[:, :2] + 0.3 * observed[:, t], h[:, 2:]], -1)
        assert_close(predictions, torch.stack(expected, 1))
        return
    predictions, final = gtf_rollout(cell, inputs, cell.state_type(z0), observed, 0.3)
    expected, expected_final = forced_loop(cell, inputs, observed, z0, 0.3)
    assert_close(predictions, expected)
    assert_close(final.h, expected_final)
    parameters = list(cell.parameters())
    got = torch.autograd.grad(predictions.square().sum(), parameters)
    want = torch.autograd.grad(expected.square().sum(), parameters)
    for name, actual, reference in zip(dict(cell.named_parameters()), got, want, strict=True):
        assert_close(actual, reference, msg=f"grad of {name}")


@pytest.mark.parametrize("interval", [3, 8])
def test_sparse_forcing_values_and_gradients_match_the_loop(interval):
    cell, inputs, observed, z0 = small_case()
    predictions, final = gtf_rollout(cell, inputs, cell.state_type(z0), observed, 1.0, interval)
    expected, expected_final = forced_loop(cell, inputs, observed, z0, 1.0, interval)
    assert_close(predictions, expected)
    assert_close(final.h, expected_final)
    # between forcings the run is free: prediction 1 (x_2) continues prediction 0 (x_1)
    free, _ = STRATEGIES["sequential"](cell, inputs[:, :2], cell.state_type(z0))
    assert_close(predictions[:, :2], free)
    parameters = list(cell.parameters())
    got = torch.autograd.grad(predictions.square().sum(), parameters)
    want = torch.autograd.grad(expected.square().sum(), parameters)
    for name, actual, reference in zip(dict(cell.named_parameters()), got, want, strict=True):
        assert_close(actual, reference, msg=f"grad of {name}")
    with pytest.raises(ValueError, match="interval must be at least 1"):
        gtf_rollout(cell, inputs, cell.state_type(z0), observed, 1.0, 0)


def test_warm_up_ends_forced_whatever_the_interval():
    torch.manual_seed(0)
    model = DynamicsModel(dynamics_config.RecurrentConfig(cell="alrnn", hidden_size=5), 2)
    model = model.double()
    data = torch.randn(2, 6, 2, dtype=F64)
    with torch.no_grad():
        state = model.warmed_state(data, 1.0, 4)  # forced after x_4, then after x_5 at the end
        z0 = model.initial_state(data[:, 0]).h
        _, expected = forced_loop(
            model.cell, torch.zeros(2, 5, 1, dtype=F64), data[:, 1:], z0, 1.0, 4
        )
    assert_close(state.h[:, :2], data[:, -1])
    assert_close(state.h[:, 2:], expected[:, 2:])


def test_forcing_needs_an_output_field_and_a_valid_alpha():
    cell, inputs, observed, z0 = small_case()
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        gtf_rollout(cell, inputs, cell.state_type(z0), observed, 1.5)
    attention = GatedLinearAttentionCell(2, 4, num_heads=2)
    with pytest.raises(ValueError, match="has no output field"):
        gtf_rollout(attention, inputs.float(), attention.initial_state(3), observed.float(), 0.5)


TINY = [
    "--model.recurrent.hidden_size=6",
    "--train.sequence_length=10",
    "--trainer.batch_size=4",
    "--evaluation.horizon=30",
    "--evaluation.forecasts=5",
    "--evaluation.warmup=3",
]


def write_csv(path, trajectories, columns="x,y,z"):
    lines = [f"trajectory,{columns}"]
    for index, values in enumerate(trajectories):
        lines += [f"t{index}," + ",".join(repr(float(v)) for v in row) for row in values.tolist()]
    path.write_text("\n".join(lines) + "\n")


def test_trains_evaluates_and_predicts_through_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    sizes = ["--data.steps=400", "--data.test_steps=200", "--trainer.threads=1", *TINY]
    assert cli.main(["train", "dynamics", "--run-dir", str(run), "--steps", "3", *sizes]) == 0
    output = capsys.readouterr().out
    assert "after 3 steps" in output and "D_stsp" in output and "Lyapunov times" in output
    assert (run / dynamics.PLOT_FILE).stat().st_size > 0
    assert cli.main(["eval", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out.splitlines()[0])["metrics"]
    assert metrics["loss"] > 0 and 0 <= metrics["power_spectrum_distance"] <= 1
    assert metrics["valid_prediction_lyapunov_times"] == pytest.approx(
        metrics["valid_prediction_steps"] * 0.906 * 0.01
    )

    generator = torch.Generator().manual_seed(5)
    lorenz = dynamics.systems.get_system("lorenz63")
    trajectories = list(dynamics.systems.trajectories(lorenz, 2, 60, generator))
    data = tmp_path / "mine.csv"
    write_csv(data, trajectories)
    assert cli.main(["eval", str(run), "--data", str(data), "--json"]) == 0
    file_metrics = json.loads(capsys.readouterr().out.splitlines()[0])["metrics"]
    assert file_metrics["valid_prediction_steps"] <= 30

    output_path = tmp_path / "generated.csv"
    assert cli.main(["predict", str(run), "--data", str(data), "--output", str(output_path)]) == 0
    assert "wrote 60 predictions" in capsys.readouterr().out
    written = read_trajectories(output_path)
    assert written.ids == ["t0", "t1"] and written.columns == ["step", "x", "y", "z"]
    _, task, _ = supervised.load_run(run, dynamics.NAME, dynamics.DynamicsConfig, dynamics.build)
    scaled = [(values - task.data.mean) / task.data.scale for values in trajectories]
    expected = dynamics.continuations(task, scaled, 30)
    for values, reference in zip(written.values, expected, strict=True):
        assert values[:, 0].tolist() == list(range(1, 31))
        assert_close(values[:, 1:], reference, rtol=0, atol=0)


def test_trains_on_a_csv_and_refuses_a_file_with_other_columns(tmp_path, capsys):
    generator = torch.Generator().manual_seed(2)
    roessler = dynamics.systems.get_system("roessler")
    data = tmp_path / "train.csv"
    write_csv(data, list(dynamics.systems.trajectories(roessler, 2, 120, generator)), "a,b,c")
    run = tmp_path / "run"
    arguments = ["train", "dynamics", "--run-dir", str(run), *TINY]
    arguments += ["--data", str(data), "--steps", "2", "--model.recurrent.cell=plrnn"]
    assert cli.main(arguments) == 0
    output = capsys.readouterr().out
    assert "train.csv: 240 read, 2 trajectories" in output and "Lyapunov" not in output
    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n3,4\n")
    assert cli.main(["eval", str(run), "--data", str(other)]) == 1
    assert (
        "other.csv: line 1: columns ['x', 'y'], expected ['a', 'b', 'c']" in capsys.readouterr().err
    )


def test_config_checks():
    with pytest.raises(ValueError, match="--data.system=csv needs --data.path"):
        dynamics_config.DynamicsDataConfig(system="csv")
    with pytest.raises(ValueError, match="data.system must be one of"):
        dynamics_config.DynamicsDataConfig(system="henon")
    with pytest.raises(ValueError, match="a.csv would be ignored with --data.system=roessler"):
        dynamics_config.DynamicsDataConfig(system="roessler", path="a.csv")
    assert dynamics_config.DynamicsDataConfig(path="a.csv").source() == "csv"
    assert dynamics_config.DynamicsDataConfig().source() == "lorenz63"
    with pytest.raises(ValueError, match=r"train.teacher_forcing must be in \[0.0, 1.0\]"):
        dynamics_config.GTFConfig(teacher_forcing=1.5)
    recurrent = dynamics_config.default_recurrent()
    recurrent.num_layers = 2
    with pytest.raises(ValueError, match="num_layers=1"):
        dynamics_config.DynamicsModelConfig(recurrent)
    with pytest.raises(ValueError, match="hidden_size .2. must be at least the observed"):
        DynamicsModel(dynamics_config.RecurrentConfig(cell="plrnn", hidden_size=2), 3)


def test_generation_starts_from_the_inferred_or_warmed_up_state():
    torch.manual_seed(0)
    model = DynamicsModel(dynamics_config.RecurrentConfig(cell="alrnn", hidden_size=5), 2)
    model = model.double()
    data = torch.randn(2, 4, 2, dtype=F64)
    z0 = model.initial_state(data[:, 0]).h
    assert_close(z0[:, :2], data[:, 0])
    assert_close(z0[:, 2:], data[:, 0] @ model.hidden_from_observed.weight.t())
    with torch.no_grad():
        cold = model.generate(data[:, :1], 6, 0.3)
        warm = model.generate(data, 6, 0.3)
        free, _ = STRATEGIES["sequential"](model.cell, torch.zeros(2, 5, 1, dtype=F64), (z0,))
        _, state = forced_loop(model.cell, torch.zeros(2, 3, 1, dtype=F64), data[:, 1:], z0, 0.3)
    assert_close(cold[:, 0], data[:, 0])
    assert_close(cold[:, 1:], free[..., :2])
    assert_close(warm[:, :4], data)
    expected, _ = STRATEGIES["sequential"](model.cell, torch.zeros(2, 2, 1, dtype=F64), (state,))
    assert_close(warm[:, 4:], expected[..., :2])


def test_adaptive_alpha_from_the_alrnn_jacobians_by_hand():
    cell, _, _, _ = small_case(num_relu=2)
    generator = torch.Generator().manual_seed(4)
    states = 2 * torch.randn(3, 6, 5, dtype=F64, generator=generator)
    projected = torch.randn(3, 6, 5, dtype=F64, generator=generator)
    with torch.no_grad():
        cell.diagonal.mul_(3)  # expansive, so alpha > 0
    weight = cell.weight_hh  # the AL-RNN's W, diagonal included
    means = []
    for b in range(3):
        logs = []
        for t in range(6):
            slopes = torch.ones(5, dtype=F64)
            slopes[3:] = (states[b, t, 3:] > 0).double()
            jacobian = torch.diag(cell.diagonal) + weight * slopes
            logs.append(torch.linalg.svdvals(jacobian)[0].log())
        means.append(torch.stack(logs).mean().exp())
    expected = 1 - 1 / float(torch.stack(means).max().detach())
    assert expected > 0.1
    assert gtf_adaptive_alpha(cell, projected, states) == pytest.approx(expected, rel=1e-10)
    lstm = LSTMCell(2, 4)
    with pytest.raises(ValueError, match="state is one field; LSTMCell has 2"):
        gtf_adaptive_alpha(lstm, torch.zeros(1, 2, 16), torch.zeros(1, 2, 8))


def test_trains_with_adaptive_alpha(tmp_path, capsys):
    run = tmp_path / "run"
    sizes = ["--data.steps=300", "--data.test_steps=150", "--train.adaptive=true", *TINY]
    assert cli.main(["train", "dynamics", "--run-dir", str(run), "--steps", "2", *sizes]) == 0
    assert "after 2 steps" in capsys.readouterr().out
