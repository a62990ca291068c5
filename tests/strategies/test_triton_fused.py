"""The Triton kernels of the fused LSTM against the sequential reference.

Without a GPU the kernels run on CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``,
set before Triton is imported, hence one subprocess running this file as a script);
there ``fused.KERNELS["lstm"]`` is pointed at the Triton runner, so the whole ``fused`` strategy
runs as on a GPU except for the device dispatch. Compared: outputs, final state and the gradients
of inputs, initial state and every parameter, with lengths (rows past theirs keep the state and
output zero), an initial state, heads, resets and recurrent dropout.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rnnkit.cells.lstm import LSTMCell
from rnnkit.strategies import fused, sequential

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
DTYPES = {"f64": torch.float64, "f32": torch.float32}


# id -> (batch, steps, hidden, num_heads, lengths, resets, hidden_dropout, dtype)
CASES = {
    "B3-T6-H8-heads2-len-h0-f64": (3, 6, 8, 2, [5, 3, 1], False, 0.0, "f64"),
    "B3-T6-H8-heads2-len-h0-f32": (3, 6, 8, 2, [5, 3, 1], False, 0.0, "f32"),
    "B18-T5-H20-heads2-len-h0-f32": (
        18,
        5,
        20,
        2,
        [1 + row % 5 for row in range(18)],
        False,
        0.0,
        "f32",
    ),
    "B3-T7-H6-resets-dropout-h0-f64": (3, 7, 6, 1, [7, 4, 2], True, 0.3, "f64"),
    "B2-T4-H8-heads2-f64": (2, 4, 8, 2, [4, 3], False, 0.0, "f64"),
}


def make_case(name: str, device: str = "cpu"):
    batch, steps, hidden, heads, lengths, resets, dropout, dtype_name = CASES[name]
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    cell = LSTMCell(3, hidden, num_heads=heads, forget_bias=1.0, hidden_dropout=dropout)
    cell = cell.to(device=device, dtype=dtype).train(dropout > 0)
    inputs = torch.randn(batch, steps, 3, dtype=dtype, device=device)
    state = tuple(torch.randn(batch, hidden, dtype=dtype, device=device) for _ in range(2))
    restarts = torch.rand(batch, steps, device=device) < 0.3 if resets else None
    return cell, inputs, state, torch.tensor(lengths), restarts


def run_with_gradients(strategy, cell, inputs, state, lengths, resets) -> dict:
    """Outputs, final state and the gradients of a weighted sum of them, by name."""
    leaves = [inputs.clone().requires_grad_(True), *(s.clone().requires_grad_(True) for s in state)]
    torch.manual_seed(1)  # the same dropout masks for both strategies
    outputs, final = strategy(cell, leaves[0], tuple(leaves[1:]), lengths, resets)
    generator = torch.Generator().manual_seed(2)
    results = {"outputs": outputs, "h": final.h, "c": final.c}
    loss = sum(
        (value * torch.randn(value.shape, generator=generator).to(value)).sum()
        for value in results.values()
    )
    names = ["inputs", "h0", "c0", *(name for name, _ in cell.named_parameters())]
    gradients = torch.autograd.grad(loss, leaves + list(cell.parameters()))
    results.update((f"grad {n}", g) for n, g in zip(names, gradients, strict=True))
    return results


def compare(name: str, device: str = "cpu") -> None:
    cell, inputs, state, lengths, resets = make_case(name, device)
    expected = run_with_gradients(sequential.run, cell, inputs, state, lengths, resets)
    actual = run_with_gradients(fused.run, cell, inputs, state, lengths, resets)
    tolerance = TOLERANCE[inputs.dtype]
    for key, value in expected.items():
        torch.testing.assert_close(
            actual[key], value, rtol=tolerance, atol=tolerance, msg=lambda m, k=key: f"{k}: {m}"
        )


@pytest.fixture(scope="module")
def interpreter_report() -> str:
    """Every case run once in one interpreter subprocess (Python and Triton start once)."""
    pytest.importorskip("triton")
    environment = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, __file__, *CASES],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("name", list(CASES), ids=[f"lstm-triton-{name}" for name in CASES])
def test_triton_kernels_in_interpreter_match_sequential(interpreter_report, name):
    lines = [line for line in interpreter_report.splitlines() if line.startswith(f"{name}:")]
    assert lines == [f"{name}: ok"], "\n".join(lines) or f"{name} did not run"


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"peephole": True}, "peephole"),
        ({"layer_norm": True}, "layer_norm"),
        ({"proj_size": 4}, "proj_size"),
        ({"zoneout": 0.2}, "zoneout"),
        ({"hidden_size": 80}, "at most 64 units, got 80"),
    ],
    ids=["peephole", "layer_norm", "proj_size", "zoneout", "head80"],
)
def test_triton_refuses_what_it_lacks_naming_option_and_device(options, option):
    pytest.importorskip("triton")
    from rnnkit.strategies.kernels.triton_fused_lstm import run_lstm_triton
    from rnnkit.strategies.native import StrategyUnsupportedError

    cell = LSTMCell(3, **{"hidden_size": 8, **options})
    projected = cell.project_inputs(torch.randn(2, 4, 3))
    state = cell.initial_state(2, device=torch.device("cpu"), dtype=torch.float32)
    zoneout = cell.zoneout_masks(4, 2, device=projected.device, dtype=projected.dtype)
    with pytest.raises(StrategyUnsupportedError, match=f"on cpu .*{option}"):
        run_lstm_triton(
            projected, tuple(state), cell.fused_weights(2), zoneout, torch.tensor([4, 4])
        )


def test_fused_accepts_cuda_only_for_the_lstm_and_gru():
    pytest.importorskip("triton")
    from rnnkit.cells.elman import ElmanCell
    from rnnkit.cells.gru import GRUCell

    cuda = torch.device("cuda")  # only named: nothing is allocated there
    assert fused.unsupported_reason(LSTMCell(3, 8), cuda) is None
    assert fused.unsupported_reason(GRUCell(3, 8), cuda) is None
    assert "run on the CPU" in str(fused.unsupported_reason(ElmanCell(3, 8), cuda))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(CASES), ids=[f"lstm-triton-cuda-{name}" for name in CASES])
def test_triton_kernels_on_gpu_match_sequential(name):
    pytest.importorskip("triton")
    compare(name, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_kernels_on_gpu_heads_of_64_units():
    torch.manual_seed(0)
    cell = LSTMCell(16, 128, num_heads=2, forget_bias=1.0).cuda()
    inputs = torch.randn(37, 50, 16, device="cuda")
    state = tuple(torch.randn(37, 128, device="cuda") for _ in range(2))
    lengths = torch.randint(1, 51, (37,))
    expected = run_with_gradients(sequential.run, cell, inputs, state, lengths, None)
    actual = run_with_gradients(fused.run, cell, inputs, state, lengths, None)
    for key, value in expected.items():
        torch.testing.assert_close(
            actual[key], value, rtol=1e-4, atol=1e-4, msg=lambda m, k=key: f"{k}: {m}"
        )


if __name__ == "__main__":  # one case in Triton's interpreter, run by the test above
    from rnnkit.strategies.kernels.triton_fused_lstm import run_lstm_triton

    fused.KERNELS["lstm"] = run_lstm_triton  # CPU tensors through the Triton kernels
    for case in sys.argv[1:]:
        try:
            compare(case)
        except AssertionError as error:
            print(f"{case}: " + str(error).replace("\n", " "))
        else:
            print(f"{case}: ok")
