"""The matrix-state scans (gated linear attention and the delta rule): the reference loops
against formulas written out independently, and every implementation against its loop, in
values and gradients."""

from __future__ import annotations

import pytest
import torch
from conftest import DTYPE_NAMES, assert_close
from torch.nn import functional

from rnnkit.strategies.kernels.delta import (
    DELTA_SCAN_IMPLEMENTATIONS,
    delta_scan,
    delta_scan_chunked,
    delta_scan_loop,
)
from rnnkit.strategies.kernels.matrix import (
    MATRIX_SCAN_IMPLEMENTATIONS,
    matrix_scan,
    matrix_scan_chunked,
    matrix_scan_loop,
)

F64 = torch.float64
BATCH, HEADS, KEY_SIZE, VALUE_SIZE = 2, 2, 3, 4
NAMES = ("query", "key", "value", "gate", "initial", "log_decay")


def matrix_problem(steps: int, decay: str, dtype: torch.dtype, seed: int = 0) -> list:
    """``query, key, value, log_decay, initial`` that require grad; ``decay``: per key
    dimension (``"vector"``), per head (``"scalar"``) or strong (``"strong"``, about
    ``exp(-30)`` per step)."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, dtype=dtype, generator=generator)

    prefix = (BATCH, HEADS, steps)
    width = 1 if decay == "scalar" else KEY_SIZE
    log_decay = functional.logsigmoid(draw(*prefix, width) + 1.0)
    if decay == "strong":
        log_decay = log_decay - 30.0
    tensors = [
        draw(*prefix, KEY_SIZE),
        draw(*prefix, KEY_SIZE),
        draw(*prefix, VALUE_SIZE),
        log_decay,
        draw(BATCH, HEADS, KEY_SIZE, VALUE_SIZE),
    ]
    return [tensor.detach().requires_grad_() for tensor in tensors]


def delta_problem(steps: int, dtype: torch.dtype, seed: int = 0, decay: str = "none") -> list:
    """``query, key (unit norm), value, beta in (0, 1), initial`` and, unless ``decay`` is
    ``"none"``, ``log_decay (B, heads, T)``: in (-2, 0) (``"gated"``) or near -30
    (``"strong"``), requiring grad."""
    query, key, value, _, initial = matrix_problem(steps, "vector", dtype, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    beta = torch.rand(BATCH, HEADS, steps, dtype=dtype, generator=generator)
    key = functional.normalize(key.detach(), dim=-1).requires_grad_()
    tensors = [query, key, value, beta.requires_grad_(), initial]
    if decay != "none":
        scale = 2.0 if decay == "gated" else 30.0
        log_decay = -scale * torch.rand(BATCH, HEADS, steps, dtype=dtype, generator=generator)
        tensors.append(log_decay.requires_grad_())
    return tensors


def outputs_and_gradients(scan, tensors: list) -> tuple:
    """Outputs, final state and the gradients of every input of a weighted sum of both."""
    outputs, final = scan(*tensors)
    generator = torch.Generator().manual_seed(7)
    loss = (outputs * torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype)).sum()
    loss = loss + (final * torch.randn(final.shape, generator=generator, dtype=final.dtype)).sum()
    return outputs, final, torch.autograd.grad(loss, tensors)


def assert_same_run(actual: tuple, expected: tuple, dtype: torch.dtype) -> None:
    assert_close(actual[0], expected[0], "outputs", dtype)
    assert_close(actual[1], expected[1], "final state", dtype)
    names = NAMES[: len(actual[2])]
    for name, actual_gradient, expected_gradient in zip(names, actual[2], expected[2], strict=True):
        assert_close(actual_gradient, expected_gradient, f"grad of {name}", dtype)


def scan_cases(decays: tuple[str, ...]) -> list:
    cases = []
    for steps in (1, 7, 37):
        for chunk_size in (1, 5, 16, 64):
            for decay in decays:
                dtypes = (F64, torch.float32) if steps == 37 and chunk_size == 16 else (F64,)
                for dtype in dtypes:
                    case_id = f"{decay}-T{steps}-C{chunk_size}-{DTYPE_NAMES[dtype]}"
                    cases.append(pytest.param(steps, chunk_size, decay, dtype, id=case_id))
    return cases


def test_matrix_loop_is_gated_attention():
    """o_t = S_0^T (q_t * exp(B_t)) + sum_{s<=t} (q_t . (k_s * exp(B_t - B_s))) v_s with
    B_t = log_decay_1 + ... + log_decay_t, summed term by term."""
    query, key, value, log_decay, initial = matrix_problem(6, "vector", F64)
    with torch.no_grad():
        outputs, final = matrix_scan_loop(query, key, value, log_decay, initial)
        total = log_decay.cumsum(2)  # B_t: (B, heads, T, d_k)
        for t in range(6):
            decayed_query = query[:, :, t] * total[:, :, t].exp()
            expected = torch.einsum("bhkv,bhk->bhv", initial, decayed_query)
            for s in range(t + 1):
                weight = query[:, :, t] * key[:, :, s] * (total[:, :, t] - total[:, :, s]).exp()
                expected = expected + weight.sum(-1, keepdim=True) * value[:, :, s]
            assert_close(outputs[:, :, t], expected, f"outputs[t={t}]", F64)
        expected_final = initial * total[:, :, -1].exp().unsqueeze(-1)
        for s in range(6):
            decayed_key = key[:, :, s] * (total[:, :, -1] - total[:, :, s]).exp()
            expected_final = expected_final + decayed_key.unsqueeze(-1) * value[:, :, s, None, :]
        assert_close(final, expected_final, "final state", F64)


CASE_ARGUMENTS = ("steps", "chunk_size", "decay", "dtype")


@pytest.mark.parametrize(CASE_ARGUMENTS, scan_cases(("vector", "scalar")))
def test_matrix_chunked_matches_loop(steps, chunk_size, decay, dtype):
    tensors = matrix_problem(steps, decay, dtype)
    expected = outputs_and_gradients(matrix_scan_loop, tensors)

    def chunked(*arguments):
        return matrix_scan_chunked(*arguments, chunk_size=chunk_size)

    assert_same_run(outputs_and_gradients(chunked, tensors), expected, dtype)


@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=["f64", "f32"])
def test_matrix_chunked_is_stable_under_strong_decay(dtype):
    """Decays of exp(-30) a step: products over a chunk of 16 reach exp(-480), which a
    factored form exp(b_t) * exp(-b_s) would overflow; the log-space differences do not."""
    tensors = matrix_problem(37, "strong", dtype)
    expected = outputs_and_gradients(matrix_scan_loop, tensors)
    actual = outputs_and_gradients(matrix_scan_chunked, tensors)
    assert all(torch.isfinite(tensor).all() for tensor in (actual[0], actual[1], *actual[2]))
    assert_same_run(actual, expected, dtype)


def test_delta_loop_is_the_papers_rule():
    """The papers' orientation, with explicit matrices: P_t = P_{t-1} (I - beta k k^T) +
    beta v k^T, o_t = P_t q_t; the scan's state is its transpose."""
    query, key, value, beta, initial = (tensor.detach() for tensor in delta_problem(9, F64))
    outputs, final = delta_scan_loop(query, key, value, beta, initial)
    identity = torch.eye(KEY_SIZE, dtype=F64)
    paper_state = initial.transpose(-1, -2)  # (B, heads, d_v, d_k)
    for t in range(9):
        k, v, rate = key[:, :, t], value[:, :, t], beta[:, :, t, None, None]
        householder = identity - rate * k.unsqueeze(-1) * k.unsqueeze(-2)
        paper_state = paper_state @ householder + rate * v.unsqueeze(-1) * k.unsqueeze(-2)
        expected = (paper_state @ query[:, :, t].unsqueeze(-1)).squeeze(-1)
        assert_close(outputs[:, :, t], expected, f"outputs[t={t}]", F64)
    assert_close(final, paper_state.transpose(-1, -2), "final state", F64)


def test_gated_delta_loop_is_the_papers_rule():
    """Gated DeltaNet (Yang et al. 2024, eq. 10) with explicit matrices: P_t = alpha_t P_{t-1}
    (I - beta k k^T) + beta v k^T, o_t = P_t q_t."""
    tensors = [tensor.detach() for tensor in delta_problem(9, F64, decay="gated")]
    query, key, value, beta, initial, log_decay = tensors
    outputs, final = delta_scan_loop(query, key, value, beta, initial, log_decay)
    identity = torch.eye(KEY_SIZE, dtype=F64)
    paper_state = initial.transpose(-1, -2)
    for t in range(9):
        k, v, rate = key[:, :, t], value[:, :, t], beta[:, :, t, None, None]
        alpha = log_decay[:, :, t, None, None].exp()
        householder = identity - rate * k.unsqueeze(-1) * k.unsqueeze(-2)
        paper_state = alpha * paper_state @ householder + rate * v.unsqueeze(-1) * k.unsqueeze(-2)
        expected = (paper_state @ query[:, :, t].unsqueeze(-1)).squeeze(-1)
        assert_close(outputs[:, :, t], expected, f"outputs[t={t}]", F64)
    assert_close(final, paper_state.transpose(-1, -2), "final state", F64)


def test_gated_delta_chunked_is_finite_under_strong_decay():
    tensors = delta_problem(37, torch.float32, decay="strong")
    outputs, final, gradients = outputs_and_gradients(delta_scan_chunked, tensors)
    assert all(torch.isfinite(tensor).all() for tensor in (outputs, final, *gradients))


def test_delta_rule_with_beta_one_stores_the_value():
    """With beta = 1 and a unit key, reading the state with that key returns its value."""
    _, key, value, _, initial = (tensor.detach() for tensor in delta_problem(3, F64))
    beta = torch.ones(BATCH, HEADS, 3, dtype=F64)
    for implementation in DELTA_SCAN_IMPLEMENTATIONS:
        outputs, final = delta_scan(key, key, value, beta, initial, implementation)
        assert_close(outputs, value, f"{implementation}: read-out of each written key", F64)
        retrieved = torch.einsum("bhkv,bhk->bhv", final, key[:, :, -1])
        assert_close(retrieved, value[:, :, -1], f"{implementation}: final read-out", F64)


@pytest.mark.parametrize(CASE_ARGUMENTS, scan_cases(("none", "gated", "strong")))
def test_delta_chunked_matches_loop(steps, chunk_size, decay, dtype):
    tensors = delta_problem(steps, dtype, decay=decay)
    expected = outputs_and_gradients(delta_scan_loop, tensors)

    def chunked(*arguments):
        return DELTA_SCAN_IMPLEMENTATIONS["chunked"](*arguments, chunk_size=chunk_size)

    assert_same_run(outputs_and_gradients(chunked, tensors), expected, dtype)


def test_implementations_agree_through_the_checked_entry_points():
    matrix_tensors = [tensor.detach() for tensor in matrix_problem(11, "vector", F64)]
    delta_tensors = [tensor.detach() for tensor in delta_problem(11, F64)]
    for name in MATRIX_SCAN_IMPLEMENTATIONS:
        outputs, _ = matrix_scan(*matrix_tensors, implementation=name)
        assert_close(outputs, matrix_scan_loop(*matrix_tensors)[0], f"matrix {name}", F64)
    for name in DELTA_SCAN_IMPLEMENTATIONS:
        outputs, _ = delta_scan(*delta_tensors, implementation=name)
        assert_close(outputs, delta_scan_loop(*delta_tensors)[0], f"delta {name}", F64)


def test_entry_points_name_the_bad_argument():
    query, key, value, log_decay, initial = (
        tensor.detach() for tensor in matrix_problem(5, "vector", F64)
    )
    with pytest.raises(ValueError, match="log_decay must have shape"):
        matrix_scan(query, key, value, log_decay[..., :2], initial)
    with pytest.raises(ValueError, match="initial must have shape"):
        matrix_scan(query, key, value, log_decay, initial[..., :2])
    with pytest.raises(ValueError, match="value must have shape"):
        matrix_scan(query, key, value[:, :, :3], log_decay, initial)
    with pytest.raises(ValueError, match="unknown matrix scan implementation 'compiled'"):
        matrix_scan(query, key, value, log_decay, initial, implementation="compiled")
    with pytest.raises(ValueError, match="beta must have shape"):
        delta_scan(query, key, value, log_decay, initial)
