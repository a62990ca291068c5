"""The Triton kernels of the fused GRU against the sequential reference.

Without a GPU the kernels run on CPU tensors in Triton's interpreter (``TRITON_INTERPRET=1``,
set before Triton is imported, hence one subprocess running this file as a script); there
``fused.KERNELS["gru"]`` is pointed at the Triton runner, so the whole ``fused`` strategy runs as
on a GPU except for the device dispatch. Compared: outputs, final state and the gradients of
inputs, initial state and every parameter (W_ih, W_hh, b_ih, b_hh), with lengths (rows past
theirs keep the state and output zero), an initial state, heads, resets, recurrent dropout,
DropConnect and no bias. Cases with ``kernel_heads > 1`` hand the kernel the cell's head count,
so that one program runs per head (``GRUCell.fused_weights`` gives the dense block-diagonal W_hh,
which the kernel otherwise runs as one head).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from rnnkit.cells.gru import GRUCell
from rnnkit.strategies import fused, sequential

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5}
DTYPES = {"f64": torch.float64, "f32": torch.float32}


# id -> (batch, steps, hidden, num_heads, kernel_heads, lengths, resets, cell options, dtype)
CASES = {
    "B3-T6-H8-heads2-len-h0-f64": (3, 6, 8, 2, 2, [5, 3, 1], False, {}, "f64"),
    "B3-T6-H8-heads2-len-h0-f32": (3, 6, 8, 2, 2, [5, 3, 1], False, {}, "f32"),
    "B3-T6-H8-heads2-dense-f64": (3, 6, 8, 2, 1, [6, 2, 4], False, {}, "f64"),
    "B18-T5-H20-heads2-len-h0-f32": (
        18,
        5,
        20,
        2,
        2,
        [1 + row % 5 for row in range(18)],
        False,
        {},
        "f32",
    ),
    "B5-T4-H128-heads2-head64-len-h0-f32": (5, 4, 128, 2, 2, [4, 1, 3, 4, 2], False, {}, "f32"),
    "B3-T7-H6-resets-dropout-h0-f64": (
        3,
        7,
        6,
        1,
        1,
        [7, 4, 2],
        True,
        {"hidden_dropout": 0.3},
        "f64",
    ),
    "B3-T5-H6-dropconnect-nobias-f64": (
        3,
        5,
        6,
        1,
        1,
        [5, 5, 3],
        False,
        {"weight_dropout": 0.3, "bias": False},
        "f64",
    ),
}


def make_case(name: str, device: str = "cpu"):
    batch, steps, hidden, heads, _, lengths, resets, options, dtype_name = CASES[name]
    dtype = DTYPES[dtype_name]
    torch.manual_seed(0)
    cell = GRUCell(3, hidden, num_heads=heads, **options)
    regularized = any(key.endswith("dropout") for key in options)
    cell = cell.to(device=device, dtype=dtype).train(regularized)
    inputs = torch.randn(batch, steps, 3, dtype=dtype, device=device)
    state = (torch.randn(batch, hidden, dtype=dtype, device=device),)
    restarts = torch.rand(batch, steps, device=device) < 0.3 if resets else None
    return cell, inputs, state, torch.tensor(lengths), restarts


def run_with_gradients(strategy, cell, inputs, state, lengths, resets) -> dict:
    """Outputs, final state and the gradients of a weighted sum of them, by name."""
    leaves = [inputs.clone().requires_grad_(True), *(s.clone().requires_grad_(True) for s in state)]
    torch.manual_seed(1)  # the same dropout masks for both strategies
    outputs, final = strategy(cell, leaves[0], tuple(leaves[1:]), lengths, resets)
    generator = torch.Generator().manual_seed(2)
    results = {"outputs": outputs, "h": final.h}
    loss = sum(
        (value * torch.randn(value.shape, generator=generator).to(value)).sum()
        for value in results.values()
    )
    names = ["inputs", "h0", *(name for name, _ in cell.named_parameters())]
    gradients = torch.autograd.grad(loss, leaves + list(cell.parameters()))
    results.update((f"grad {n}", g) for n, g in zip(names, gradients, strict=True))
    return results


def compare(name: str, device: str = "cpu") -> None:
    cell, inputs, state, lengths, resets = make_case(name, device)
    expected = run_with_gradients(sequential.run, cell, inputs, state, lengths, resets)
    actual = run_with_gradients(fused.run, cell, inputs, state, lengths, resets)
    assert set(actual) == set(expected)
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


@pytest.mark.parametrize("name", list(CASES), ids=[f"gru-triton-{name}" for name in CASES])
def test_triton_kernels_in_interpreter_match_sequential(interpreter_report, name):
    lines = [line for line in interpreter_report.splitlines() if line.startswith(f"{name}:")]
    assert lines == [f"{name}: ok"], "\n".join(lines) or f"{name} did not run"


@pytest.mark.parametrize(
    ("options", "heads", "option"),
    [
        ({"zoneout": 0.2}, 1, "zoneout"),
        ({"hidden_size": 80}, 1, "at most 64 units, got 80"),
        ({"hidden_size": 160, "num_heads": 2}, 2, "at most 64 units, got 80"),
    ],
    ids=["zoneout", "head80", "heads2-head80"],
)
def test_triton_refuses_what_it_lacks_naming_option_and_device(options, heads, option):
    pytest.importorskip("triton")
    from rnnkit.strategies.kernels.triton_fused_gru import run_gru_triton
    from rnnkit.strategies.native import StrategyUnsupportedError

    cell = GRUCell(3, **{"hidden_size": 8, **options})
    projected = cell.project_inputs(torch.randn(2, 4, 3))
    state = cell.initial_state(2, device=torch.device("cpu"), dtype=torch.float32)
    zoneout = cell.zoneout_masks(4, 2, device=projected.device, dtype=projected.dtype)
    weights = {**cell.fused_weights(2), "num_heads": heads}
    with pytest.raises(StrategyUnsupportedError, match=f"on cpu .*{option}"):
        run_gru_triton(projected, tuple(state), weights, zoneout, torch.tensor([4, 4]))


@pytest.mark.parametrize("gates", [3, 4])  # the GRU's and the LSTM's
def test_head_blocks_inverts_block_diagonal(gates):
    pytest.importorskip("triton")
    from rnnkit.cells.heads import block_diagonal
    from rnnkit.strategies.kernels.triton_common import head_blocks

    per_head = torch.randn(3, gates * 4, 4)
    torch.testing.assert_close(head_blocks(block_diagonal(per_head), 3, gates), per_head)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", list(CASES), ids=[f"gru-triton-cuda-{name}" for name in CASES])
def test_triton_kernels_on_gpu_match_sequential(name):
    pytest.importorskip("triton")
    if fused.unsupported_reason(GRUCell(3, 8), torch.device("cuda")) is not None:
        pytest.skip("the fused strategy does not yet send CUDA GRUs to run_gru (fused.CUDA)")
    compare(name, "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_triton_kernels_on_gpu_heads_of_64_units():
    pytest.importorskip("triton")
    from rnnkit.cells.heads import block_diagonal
    from rnnkit.strategies.kernels.fused_gru import run_gru

    torch.manual_seed(0)
    cell = GRUCell(16, 128, num_heads=2).cuda()
    inputs = torch.randn(37, 50, 16, device="cuda")
    h0 = torch.randn(37, 128, device="cuda")
    lengths = torch.randint(1, 51, (37,))
    results = {}
    for device in ("cuda", "cpu"):  # the Triton kernels against the CPU fused kernel
        leaves = [inputs.to(device).requires_grad_(True), h0.to(device).requires_grad_(True)]
        weight = cell.weight_hh.detach().to(device).requires_grad_(True)
        bias = cell.bias_hh.detach().to(device).requires_grad_(True)
        projected = torch.nn.functional.linear(
            leaves[0], cell.weight_ih.detach().to(device), cell.bias_ih.detach().to(device)
        )
        weights = {"recurrent": block_diagonal(weight), "recurrent_bias": bias, "num_heads": 2}
        outputs, (h,) = run_gru(projected, (leaves[1],), weights, None, lengths)
        loss = outputs.square().sum() + h.sum()
        gradients = torch.autograd.grad(loss, [*leaves, weight, bias])
        results[device] = [outputs, h, *gradients]
    for actual, expected in zip(results["cuda"], results["cpu"], strict=True):
        torch.testing.assert_close(actual.cpu(), expected, rtol=1e-4, atol=1e-4)


if __name__ == "__main__":  # the cases in Triton's interpreter, run by the test above
    from rnnkit.strategies.kernels.triton_fused_gru import run_gru_triton

    for case in sys.argv[1:]:
        kernel_heads = CASES[case][4]

        def kernel(projected, state, weights, zoneout, lengths, resets=None, heads=kernel_heads):
            """The Triton runner on CPU tensors, told the cell's head count."""
            weights = {**weights, "num_heads": heads}
            return run_gru_triton(projected, state, weights, zoneout, lengths, resets)

        fused.KERNELS["gru"] = kernel
        try:
            compare(case)
        except AssertionError as error:
            print(f"{case}: " + str(error).replace("\n", " "))
        else:
            print(f"{case}: ok")
