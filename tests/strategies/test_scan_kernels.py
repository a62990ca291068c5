"""Every diagonal scan implementation against the reference loop: values and gradients."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from rnnkit.strategies.kernels import (
    SCAN_IMPLEMENTATIONS,
    choose_implementation,
    diagonal_scan,
    unavailable_reason,
)
from rnnkit.strategies.kernels.chunked import scan_chunked
from rnnkit.strategies.kernels.reference import scan_loop

CPU_IMPLEMENTATIONS = ["chunked", "compiled"]
TOLERANCE = {torch.float64: 1e-11, torch.complex128: 1e-11, torch.float32: 2e-5}


def make_terms(batch, steps, width, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    real = torch.float64 if dtype.is_complex else dtype
    magnitude = 0.5 + 0.49 * torch.rand(batch, steps, width, generator=generator, dtype=real)
    if dtype.is_complex:
        phase = torch.rand(batch, steps, width, generator=generator, dtype=real) * 6.28
        a = torch.polar(magnitude, phase)
        b = torch.complex(*torch.randn(2, batch, steps, width, generator=generator, dtype=real))
        initial = torch.complex(*torch.randn(2, batch, width, generator=generator, dtype=real))
    else:
        a = magnitude
        b = torch.randn(batch, steps, width, generator=generator, dtype=dtype)
        initial = torch.randn(batch, width, generator=generator, dtype=dtype)
    return a.to(dtype), b.to(dtype), initial.to(dtype)


def hand_loop(a, b, initial, reverse):
    """The recurrence written out element by element, independent of scan_loop."""
    batch, steps, width = b.shape
    out = torch.empty_like(b)
    for row in range(batch):
        for n in range(width):
            h = initial[row, n]
            times = range(steps - 1, -1, -1) if reverse else range(steps)
            for t in times:
                h = a[row, t, n] * h + b[row, t, n]
                out[row, t, n] = h
    return out


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128], ids=["f64", "c128"])
def test_reference_loop_is_the_recurrence(dtype, reverse):
    a, b, initial = make_terms(2, 6, 3, dtype)
    expected = hand_loop(a, b, initial, reverse)
    torch.testing.assert_close(scan_loop(a, b, initial, reverse), expected, rtol=0, atol=1e-13)


CASES = [(1, 1, 1), (2, 7, 5), (3, 37, 70), (2, 100, 3)]


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize(
    "dtype", [torch.float64, torch.complex128, torch.float32], ids=["f64", "c128", "f32"]
)
@pytest.mark.parametrize("shape", CASES, ids=[f"B{b}-T{t}-N{n}" for b, t, n in CASES])
@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_implementation_matches_loop(implementation, shape, dtype, reverse):
    a, b, initial = make_terms(*shape, dtype)
    tensors = [tensor.clone().requires_grad_(True) for tensor in (a, b, initial)]
    weights = torch.randn_like(b)
    expected = scan_loop(*tensors, reverse)
    expected_grads = torch.autograd.grad((expected * weights).real.sum(), tensors)
    inputs = [tensor.detach().clone().requires_grad_(True) for tensor in tensors]
    got = diagonal_scan(*inputs, reverse=reverse, implementation=implementation)
    got_grads = torch.autograd.grad((got * weights).real.sum(), inputs)
    tolerance = TOLERANCE[dtype] * (20 if dtype == torch.float32 and shape[1] > 50 else 1)
    torch.testing.assert_close(got, expected, rtol=tolerance, atol=tolerance, msg="h differs")
    for name, value, reference in zip(
        ("a", "b", "initial"), got_grads, expected_grads, strict=True
    ):
        torch.testing.assert_close(
            value, reference, rtol=tolerance, atol=tolerance, msg=f"gradient of {name} differs"
        )


def test_real_decay_with_complex_inputs_gives_real_gradient():
    a, _, _ = make_terms(2, 9, 4, torch.float64)
    _, b, initial = make_terms(2, 9, 4, torch.complex128)
    a.requires_grad_(True)
    for implementation in ["loop", *CPU_IMPLEMENTATIONS]:
        h = diagonal_scan(a, b, initial, implementation=implementation)
        (grad,) = torch.autograd.grad(h.abs().sum(), a)
        assert grad.dtype == torch.float64
        if implementation == "loop":
            expected = grad
        torch.testing.assert_close(grad, expected)


def test_broadcast_decay_and_no_initial_state():
    a = torch.rand(1, 1, 4, dtype=torch.float64)
    b = torch.randn(3, 11, 4, dtype=torch.float64)
    expected = scan_loop(a.expand_as(b), b)
    for implementation in CPU_IMPLEMENTATIONS:
        torch.testing.assert_close(diagonal_scan(a, b, implementation=implementation), expected)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 64])
def test_chunked_any_chunk_size(chunk_size):
    a, b, initial = make_terms(2, 23, 3, torch.float64)
    torch.testing.assert_close(
        scan_chunked(a, b, initial, chunk_size=chunk_size), scan_loop(a, b, initial)
    )


def test_auto_picks_compiled_on_cpu():
    assert choose_implementation(torch.device("cpu")) == "compiled"
    assert unavailable_reason("triton", torch.device("cpu")) is not None


def test_errors_name_the_problem():
    a, b, initial = make_terms(2, 5, 3, torch.float64)
    with pytest.raises(ValueError, match="unknown scan implementation 'fast'"):
        diagonal_scan(a, b, implementation="fast")
    with pytest.raises(ValueError, match=r"initial must have shape \(2, 3\), got \(2, 4\)"):
        diagonal_scan(a, b, torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="'triton' cannot run: .*CUDA"):
        diagonal_scan(a, b, implementation="triton")
    assert set(SCAN_IMPLEMENTATIONS) == {"loop", "chunked", "compiled", "triton"}


TRITON_CHECK = textwrap.dedent(
    """
    import torch
    from rnnkit.strategies.kernels.autograd import differentiable
    from rnnkit.strategies.kernels.reference import scan_loop
    from rnnkit.strategies.kernels.triton_gpu import scan_triton_raw
    scan = differentiable(scan_triton_raw)
    torch.manual_seed(0)
    for dtype in (torch.float64, torch.complex128):
        for reverse in (False, True):
            a = (torch.rand(2, 37, 5, dtype=dtype) * 0.9).requires_grad_(True)
            b = torch.randn(2, 37, 5, dtype=dtype, requires_grad=True)
            initial = torch.randn(2, 5, dtype=dtype, requires_grad=True)
            expected = scan_loop(a, b, initial, reverse)
            got = scan(a, b, initial, reverse)
            assert (got - expected).abs().max() < 1e-12, (dtype, reverse)
            grads = torch.autograd.grad(got.abs().sum(), (a, b, initial))
            wanted = torch.autograd.grad(expected.abs().sum(), (a, b, initial))
            for value, reference in zip(grads, wanted):
                assert (value - reference).abs().max() < 1e-10, (dtype, reverse)
    print("triton interpreter ok")
    """
)


def test_triton_kernel_in_interpreter_mode():
    pytest.importorskip("triton")
    environment = dict(os.environ, TRITON_INTERPRET="1")
    result = subprocess.run(
        [sys.executable, "-c", TRITON_CHECK],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "triton interpreter ok" in result.stdout


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["f32", "c64"])
def test_triton_on_gpu(dtype):
    a, b, initial = (tensor.cuda() for tensor in make_terms(4, 300, 70, dtype))
    assert b.dtype == dtype, f"the kernel must run in {dtype}, got {b.dtype}"
    expected = scan_loop(
        a.double() if not dtype.is_complex else a.to(torch.complex128),
        b.to(torch.complex128 if dtype.is_complex else torch.float64),
        initial.to(torch.complex128 if dtype.is_complex else torch.float64),
    )
    got = diagonal_scan(a, b, initial, implementation="triton")
    torch.testing.assert_close(got, expected.to(dtype), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=["f32", "c64"])
def test_make_terms_gives_the_dtype_asked_for(dtype):
    # the GPU test once compared complex128 results with complex64 ones through these terms
    for name, tensor in zip(("a", "b", "initial"), make_terms(2, 3, 4, dtype), strict=True):
        assert tensor.dtype == dtype, f"{name}: expected {dtype}, got {tensor.dtype}"


@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_conjugate_views(implementation):
    a, b, initial = (t.requires_grad_(True) for t in make_terms(2, 11, 5, torch.complex128))
    got = diagonal_scan(a.conj(), b.conj(), initial.conj(), implementation=implementation)
    expected = scan_loop(a.conj(), b.conj(), initial.conj())
    torch.testing.assert_close(got, expected, msg=lambda m: f"outputs: {m}")
    weights = torch.randn_like(expected)
    grads = torch.autograd.grad((got * weights.conj()).real.sum(), (a, b, initial))
    expected_grads = torch.autograd.grad((expected * weights.conj()).real.sum(), (a, b, initial))
    for name, value, reference in zip(("a", "b", "initial"), grads, expected_grads, strict=True):
        torch.testing.assert_close(value, reference, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("implementation", CPU_IMPLEMENTATIONS)
def test_half_precision_computed_in_float32(implementation, dtype):
    a64, b64, initial64 = make_terms(2, 40, 6, torch.float64)
    a, b, initial = (t.to(dtype).requires_grad_(True) for t in (a64, b64, initial64))
    got = diagonal_scan(a, b, initial, implementation=implementation)
    assert got.dtype == dtype, f"outputs: expected {dtype}, got {got.dtype}"
    leaves = [t.detach().double().requires_grad_(True) for t in (a, b, initial)]
    expected = scan_loop(*leaves)
    torch.testing.assert_close(got.double(), expected, rtol=2e-2, atol=5e-2)
    weights = torch.randn(expected.shape, dtype=torch.float64)
    grads = torch.autograd.grad((got.double() * weights).sum(), (a, b, initial))
    expected_grads = torch.autograd.grad((expected * weights).sum(), leaves)
    for name, value, reference in zip(("a", "b", "initial"), grads, expected_grads, strict=True):
        assert value.dtype == dtype, f"grad {name}: expected {dtype}, got {value.dtype}"
        torch.testing.assert_close(
            value.double(),
            reference,
            rtol=3e-2,
            atol=0.3,
            msg=lambda m, name=name: f"grad {name}: {m}",
        )


def test_pararnn_kernels_found_by_declared_name():
    # lookup once checked ``type(cell) is ParaGRUCell``: a subclass lost its kernel
    from rnnkit.cells.pararnn import ParaGRUCell
    from rnnkit.strategies.kernels import pararnn_cpu

    class Renamed(ParaGRUCell):
        pass

    cpu = torch.device("cpu")
    assert pararnn_cpu.lookup(Renamed(4, 6), cpu, torch.float32) is pararnn_cpu.KERNELS["paragru"]
    assert pararnn_cpu.lookup(ParaGRUCell(4, 6, num_heads=3), cpu, torch.float32) is None


def test_workspace_reuses_only_buffers_nobody_holds():
    from rnnkit.strategies.kernels.workspace import Workspace

    workspace = Workspace(slots=2)
    first = workspace.take("out", (3, 4), torch.float32)
    second = workspace.take("out", (3, 4), torch.float32)
    assert first.data_ptr() != second.data_ptr(), "a held buffer was handed out twice"
    address = first.data_ptr()
    del first
    again = workspace.take("out", (3, 4), torch.float32)
    assert again.data_ptr() == address, "a free buffer was not reused"
    held_by_numpy = again.numpy()
    assert workspace.take("out", (3, 4), torch.float32).data_ptr() != held_by_numpy.ctypes.data


def test_compiled_scan_outputs_survive_later_calls():
    a, b, initial = make_terms(2, 9, 4, torch.float32)
    kept = diagonal_scan(a, b, initial, implementation="compiled")
    expected = kept.clone()
    for _ in range(3):
        diagonal_scan(a, b * 2, initial, implementation="compiled")
    torch.testing.assert_close(kept, expected, msg=lambda m: f"kept outputs overwritten: {m}")
