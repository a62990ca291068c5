"""The benchmark systems (vector fields, RK4, trajectories, Lyapunov exponent) and the CSV of
trajectories a user brings, with every malformed case."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rnnkit.data import dynamical_systems as systems
from rnnkit.data.files import DataFileError
from rnnkit.data.files.trajectories_csv import read_trajectories, write_trajectories


def test_vector_fields_by_hand():
    point = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(systems.lorenz63(point), [[10.0, 1 * 25 - 2, 2 - 8.0]])
    np.testing.assert_allclose(systems.roessler(point), [[-5.0, 1.4, 0.2 + 3 * (1 - 5.7)]])
    state = np.arange(5.0)[None] + 1
    expected = [
        (state[0, (i + 1) % 5] - state[0, i - 2]) * state[0, i - 1] - state[0, i] + 8
        for i in range(5)
    ]
    np.testing.assert_allclose(systems.lorenz96(state), [expected])


def test_rk4_is_fourth_order_on_exponential_decay():
    errors = []
    for dt in (0.1, 0.05):
        steps = round(1 / dt)
        states = systems.integrate(lambda x: -x, np.ones((1, 1)), steps, dt)
        errors.append(abs(states[0, -1, 0] - math.exp(-1)))
    assert errors[1] < 1e-6
    assert 14 < errors[0] / errors[1] < 18  # 2^4


def test_trajectories_are_reproducible_on_the_attractor_with_noise():
    system = systems.get_system("lorenz63")
    clean = systems.trajectories(system, 2, 500, torch.Generator().manual_seed(1))
    again = systems.trajectories(system, 2, 500, torch.Generator().manual_seed(1))
    assert clean.shape == (2, 500, 3) and clean.dtype == torch.float64
    assert torch.equal(clean, again)
    assert clean[..., 0].abs().max() < 25 and clean[..., 2].min() > 0 and clean[..., 2].max() < 55
    step = systems.rk4_step(system.field, clean[:, 10].numpy(), system.dt)
    np.testing.assert_allclose(step, clean[:, 11].numpy(), rtol=1e-12)
    noisy = systems.trajectories(system, 2, 500, torch.Generator().manual_seed(1), noise=0.1)
    spread = clean.reshape(-1, 3).std(0)
    measured = (noisy - clean).reshape(-1, 3).std(0) / spread
    assert torch.all((measured > 0.08) & (measured < 0.12))


def test_lorenz63_lyapunov_exponent_is_close_to_the_literature():
    estimate = systems.largest_lyapunov_exponent(systems.get_system("lorenz63"), steps=5000)
    assert abs(estimate - 0.906) < 0.12


def test_systems_are_looked_up_by_name():
    assert systems.get_system("lorenz96", 6).dimension == 6
    assert systems.get_system("roessler").dt == 0.08
    with pytest.raises(ValueError, match="unknown dynamical system 'henon'"):
        systems.get_system("henon")
    with pytest.raises(ValueError, match="at least 4"):
        systems.lorenz96_system(3)


def write(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_reads_trajectories_by_id_with_blank_lines_counted(tmp_path):
    path = write(tmp_path, "x,trajectory,y\n1,a,2\n3,a,4\n\n5,b,6\n7,b,8\n9,b,10\n")
    loaded = read_trajectories(path)
    assert loaded.columns == ["x", "y"] and loaded.ids == ["a", "b"]
    assert torch.equal(
        loaded.values[0], torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    )
    assert loaded.values[1].shape == (3, 2)
    assert loaded.report.read == 5 and loaded.report.skipped == {"blank lines": 1}


def test_reads_one_trajectory_without_ids_and_tsv(tmp_path):
    loaded = read_trajectories(write(tmp_path, "x\ty\n1\t2\n3\t4\n", "data.tsv"))
    assert loaded.ids == ["0"] and loaded.values[0].tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("\n\n", "the file is empty"),
        ("x,y\n", "line 1: a header but no data rows"),
        ("x,,y\n1,2,3\n1,2,3\n", "line 1: column 2 of the header has no name"),
        ("x,x\n1,2\n3,4\n", r"line 1: repeated column names \['x'\]"),
        ("trajectory\n1\n2\n", "no observed columns"),
        ("x,y\n1,2\n3\n", "line 3: 1 fields, expected 2"),
        ("x,y\n1,2\n3,4,5\n", "line 3: 3 fields, expected 2"),
        ("x,y\n1,2\n3,abc\n", "line 3: column 'y': expected a number, found 'abc'"),
        ("x,y\n1,nan\n3,4\n", "line 2: column 'y': expected a finite number, found 'nan'"),
        ("x,y\n1,inf\n3,4\n", "expected a finite number, found 'inf'"),
        ("x,y\n1,\n3,4\n", "line 2: column 'y': expected a number, found ''"),
        ("trajectory,x\n,1\n,2\n", "line 2: empty 'trajectory'"),
        ("trajectory,x\na,1\na,2\nb,3\nb,4\na,5\n", "line 6: trajectory 'a' continues after"),
        ("trajectory,x\na,1\na,2\nb,3\n", "trajectory 'b' has 1 steps, expected at least 2"),
    ],
)
def test_refuses_malformed_files(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(DataFileError, match=message) as error:
        read_trajectories(path)
    assert str(error.value).startswith(str(path))


def test_refuses_other_columns_than_the_model_knows_and_missing_files(tmp_path):
    path = write(tmp_path, "x,y\n1,2\n3,4\n")
    with pytest.raises(DataFileError, match=r"columns \['x', 'y'\], expected \['x', 'y', 'z'\]"):
        read_trajectories(path, expected_columns=["x", "y", "z"])
    with pytest.raises(DataFileError, match="no such file"):
        read_trajectories(tmp_path / "missing.csv")


def test_written_trajectories_read_back(tmp_path):
    values = [torch.tensor([[0.1, 1e-17], [2.5, -3.0]], dtype=torch.float64), torch.ones(3, 2)]
    path = tmp_path / "out.csv"
    assert write_trajectories(path, ["u", "v"], ["a", "b"], values) == 5
    lines = path.read_text().splitlines()
    assert lines[0] == "trajectory,step,u,v" and lines[1].startswith("a,1,0.1,")
    loaded = read_trajectories(path)
    assert loaded.columns == ["step", "u", "v"] and loaded.ids == ["a", "b"]
    assert torch.equal(loaded.values[0][:, 1:], values[0])  # repr round-trips floats exactly


def test_windows_are_contiguous_pieces_of_the_trajectories():
    trajectories = [torch.arange(10.0)[:, None], 100 + torch.arange(6.0)[:, None]]
    windows = systems.draw_windows(trajectories, 8, 50, torch.Generator().manual_seed(0))
    assert windows.shape == (50, 6, 1)  # the shorter trajectory caps the length
    steps = windows[..., 0].diff(dim=1)
    assert torch.all(steps == 1)
    firsts = set(windows[:, 0, 0].tolist())
    assert firsts <= {0.0, 1.0, 2.0, 3.0, 4.0, 100.0} and 100.0 in firsts and 0.0 in firsts
    again = systems.draw_windows(trajectories, 8, 50, torch.Generator().manual_seed(0))
    assert torch.equal(windows, again)
    forced, truth = systems.forecast_windows(trajectories, 4, warmup=2, horizon=3)
    assert forced.shape == (4, 3, 1) and truth.shape == (4, 3, 1)
    assert torch.all(torch.cat((forced, truth), 1)[..., 0].diff(dim=1) == 1)
    assert forced[0, 0, 0] == 0 and truth[-1, -1, 0] == 105
