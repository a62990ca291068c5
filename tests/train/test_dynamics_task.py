"""``rnnkit train dynamics``: generalized teacher forcing against readable loops, the metrics on
cases computed by hand, and the task through the command line (train, eval, eval --data,
predict read back)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from rnnkit import cli
from rnnkit.cells import ALRNNCell, GatedLinearAttentionCell, LSTMCell
from rnnkit.data.files.trajectories_csv import read_trajectories
from rnnkit.strategies import STRATEGIES
from rnnkit.train import dynamics_metrics as measures
from rnnkit.train.tasks import dynamics, supervised
from rnnkit.train.teacher_forcing import adaptive_alpha as gtf_adaptive_alpha
from rnnkit.train.teacher_forcing import gtf_rollout

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


def forced_loop(cell, inputs, observed, z0, alpha):
    """The GTF recursion written out: predict, record, then mix the first N units."""
    z, predictions = z0, []
    for t in range(inputs.shape[1]):
        z = cell.step(inputs[:, t], cell.state_type(z))[1].h
        predictions.append(z)
        n = observed.shape[-1]
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


def test_forcing_needs_an_output_field_and_a_valid_alpha():
    cell, inputs, observed, z0 = small_case()
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        gtf_rollout(cell, inputs, cell.state_type(z0), observed, 1.5)
    attention = GatedLinearAttentionCell(2, 4, num_heads=2)
    with pytest.raises(ValueError, match="has no output field"):
        gtf_rollout(attention, inputs.float(), attention.initial_state(3), observed.float(), 0.5)


def test_state_space_divergence_by_hand():
    true = torch.tensor([[0.0], [0.0], [0.0], [1.0]], dtype=F64)
    generated = torch.tensor([[0.0], [1.0]], dtype=F64)
    # 2 bins over [-0.0433, 1.0433]: p = (3/4, 1/4), q = (1/2, 1/2), Laplace 1e-5
    p = np.array([3 + 1e-5, 1 + 1e-5]) / (4 + 2e-5)
    q = np.array([1 + 1e-5, 1 + 1e-5]) / (2 + 2e-5)
    expected = float((p * np.log(p / q)).sum())
    assert math.isclose(measures.state_space_divergence(true, generated, bins=2), expected)
    assert measures.state_space_divergence(true, true, bins=10) == pytest.approx(0, abs=1e-12)
    assert math.isnan(measures.state_space_divergence(true, true + 100.0, bins=10))


def test_gmm_divergence_for_many_dimensions():
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(400, 6, dtype=F64, generator=generator)
    same = measures.state_space_divergence(data, data, scaling=0.5)
    shifted = measures.state_space_divergence(data, data + 2.0, scaling=0.5)
    assert same == pytest.approx(0, abs=1e-12) and shifted > 1.0


def test_power_spectrum_distance():
    time = torch.arange(2000, dtype=F64)[:, None]
    slow, fast = torch.sin(0.05 * time), torch.sin(0.6 * time)
    assert measures.power_spectrum_distance(slow, slow * 3 + 1) == pytest.approx(0, abs=1e-12)
    assert measures.power_spectrum_distance(slow, fast, smoothing=2.0) > 0.95
    assert measures.power_spectrum_distance(slow, torch.ones_like(slow)) == 1.0


def test_valid_prediction_steps():
    true = torch.zeros(2, 5, 1, dtype=F64)
    predicted = torch.tensor([[0.1, 0.2, 0.5, 0.1, 0.1], [0.0] * 5], dtype=F64)[..., None]
    steps = measures.valid_prediction_steps(true, predicted, torch.ones(1, dtype=F64), 0.4)
    assert steps.tolist() == [2, 5]


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


@pytest.mark.parametrize("sigma", [0.7, 2.0, 20.0])
def test_spectrum_smoothing_is_scipys_gaussian_filter(sigma):
    from scipy.ndimage import gaussian_filter1d

    values = np.random.default_rng(0).random((50, 3))
    expected = gaussian_filter1d(values, sigma, axis=0, mode="reflect")
    np.testing.assert_allclose(measures.gaussian_smoothing(values, sigma), expected, atol=1e-14)


def test_config_checks():
    with pytest.raises(ValueError, match="--data.system=csv needs --data.path"):
        dynamics.DynamicsDataConfig(system="csv")
    with pytest.raises(ValueError, match="data.system must be one of"):
        dynamics.DynamicsDataConfig(system="henon")
    with pytest.raises(ValueError, match="a.csv would be ignored with --data.system=roessler"):
        dynamics.DynamicsDataConfig(system="roessler", path="a.csv")
    assert dynamics.DynamicsDataConfig(path="a.csv").source() == "csv"
    assert dynamics.DynamicsDataConfig().source() == "lorenz63"
    with pytest.raises(ValueError, match=r"train.teacher_forcing must be in \[0.0, 1.0\]"):
        dynamics.GTFConfig(teacher_forcing=1.5)
    recurrent = dynamics.default_recurrent()
    recurrent.num_layers = 2
    with pytest.raises(ValueError, match="num_layers=1"):
        dynamics.DynamicsModelConfig(recurrent)
    with pytest.raises(ValueError, match="hidden_size .2. must be at least the observed"):
        dynamics.DynamicsModel(dynamics.RecurrentConfig(cell="plrnn", hidden_size=2), 3)


def test_generation_starts_from_the_inferred_or_warmed_up_state():
    torch.manual_seed(0)
    model = dynamics.DynamicsModel(dynamics.RecurrentConfig(cell="alrnn", hidden_size=5), 2)
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
    weight = cell.off_diagonal * (1 - torch.eye(5, dtype=F64))
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
