"""DeltaProduct against a readable float64 reference of the paper's equations (per token, head
and Householder step, in the paper's ``(d_v, d_k)`` layout), against DeltaNet and Gated DeltaNet
at ``num_householder = 1``, and through the command line (the scan strategy against
``sequential`` comes from the oracle table)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional

from rnnkit import cli
from rnnkit.cells import DeltaNetCell, DeltaProductCell, GatedDeltaNetCell, MatrixState
from rnnkit.strategies import STRATEGIES

F64 = torch.float64


def reference(
    cell: DeltaProductCell, inputs: torch.Tensor, memory: torch.Tensor, lengths: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The module docstring's equations, one token, head and write at a time, from the rows of
    ``weight_ih`` in the documented order (q, k_1..k_n, v_1..v_n, beta_1..beta_n[, a]).

    ``inputs (B, T, D)``, ``memory (B, heads * d_k * d_v)`` (``S^T`` per head) ->
    ``y (B, T, H)`` (zero past each length) and the final memory in the same layout.
    """
    writes, heads = cell.num_householder, cell.num_heads
    key_size, value_size = cell.key_head_size, cell.value_head_size
    projected = functional.linear(inputs, cell.weight_ih, cell.bias_ih)  # (B, T, P)
    sizes = [heads * key_size] * (1 + writes) + [heads * value_size] * writes + [heads] * writes
    sizes += [heads] if cell.gate else []
    rows = list(projected.split(sizes, -1))
    query_rows, key_rows = rows[0], rows[1 : 1 + writes]
    value_rows, rate_rows = rows[1 + writes : 1 + 2 * writes], rows[1 + 2 * writes :]

    def feature(row: torch.Tensor) -> torch.Tensor:  # one head's L2norm(phi(.))
        row = functional.silu(row) if cell.feature_map == "silu" else row
        return row / row.norm().clamp_min(1e-6)

    scale = 2.0 if cell.allow_negative_eigenvalues else 1.0
    batch, steps = inputs.shape[:2]
    states = memory.unflatten(-1, (heads, key_size, value_size)).transpose(-1, -2)  # S: (d_v, d_k)
    states = [[states[b, h] for h in range(heads)] for b in range(batch)]
    outputs = torch.zeros(batch, steps, cell.hidden_size, dtype=inputs.dtype)
    for b in range(batch):
        for t in range(lengths[b]):
            attended = []
            for h in range(heads):
                keys, values = (
                    slice(h * key_size, (h + 1) * key_size),
                    slice(h * value_size, (h + 1) * value_size),
                )
                state = states[b][h]
                if cell.gate:
                    rate = cell.decay_log_rate[h].exp()
                    gate = rate_rows[writes][b, t, h] + cell.decay_bias[h]
                    state = torch.exp(-rate * functional.softplus(gate)) * state
                for j in range(writes):
                    k = feature(key_rows[j][b, t, keys])
                    v = value_rows[j][b, t, values]
                    beta = scale * torch.sigmoid(rate_rows[j][b, t, h])
                    identity = torch.eye(key_size, dtype=inputs.dtype)
                    state = state @ (identity - beta * torch.outer(k, k)) + beta * torch.outer(v, k)
                states[b][h] = state
                attended.append(state @ feature(query_rows[b, t, keys]))
            attended_all = torch.cat(attended)
            if cell.output_projection:
                attended_all = functional.linear(attended_all, cell.weight_out, cell.bias_out)
            outputs[b, t] = attended_all
    final = torch.stack([torch.stack(row) for row in states])  # (B, heads, d_v, d_k)
    return outputs, final.transpose(-1, -2).flatten(1)


def perturbed(cell: DeltaProductCell, seed: int) -> DeltaProductCell:
    """``cell`` in float64 with every parameter moved off its (often zero) initial value."""
    generator = torch.Generator().manual_seed(seed)
    cell = cell.double()
    with torch.no_grad():
        for parameter in cell.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=F64)
            parameter.add_(0.5 * noise)
    return cell


CONFIGS = {
    "n2-heads2": {"num_heads": 2, "num_householder": 2},
    "n3-gate-negative": {"num_householder": 3, "gate": True, "allow_negative_eigenvalues": True},
    "n2-plain-nobias": {
        "num_householder": 2,
        "feature_map": "identity",
        "output_projection": False,
        "bias": False,
    },
}


@pytest.mark.parametrize("strategy", ["sequential", "scan"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_the_reference_with_lengths_and_initial_state(config, strategy):
    torch.manual_seed(0)
    cell = perturbed(DeltaProductCell(3, 4, **CONFIGS[config]), seed=1)
    inputs = torch.randn(3, 6, 3, dtype=F64, requires_grad=True)
    memory = torch.randn(3, cell.state_sizes()[0], dtype=F64, requires_grad=True)
    lengths = [6, 2, 5]
    weights = [torch.randn(3, 6, 4, dtype=F64), torch.randn_like(memory)]
    wrt = [inputs, memory, *cell.parameters()]

    def gradients(outputs, final):
        loss = (outputs * weights[0]).sum() + (final * weights[1]).sum()
        return torch.autograd.grad(loss, wrt)

    expected, expected_final = reference(cell, inputs, memory, lengths)
    expected_gradients = gradients(expected, expected_final)
    got, got_state = STRATEGIES[strategy](cell, inputs, MatrixState(memory), torch.tensor(lengths))
    got_gradients = gradients(got, got_state.memory)
    torch.testing.assert_close(got, expected, msg=lambda m: f"outputs: {m}")
    torch.testing.assert_close(got_state.memory, expected_final, msg=lambda m: f"state: {m}")
    names = ["inputs", "initial memory", *(name for name, _ in cell.named_parameters())]
    for name, got_gradient, expected_gradient in zip(
        names, got_gradients, expected_gradients, strict=True
    ):
        torch.testing.assert_close(
            got_gradient, expected_gradient, msg=lambda m, n=name: f"grad of {n}: {m}"
        )


@pytest.mark.parametrize("negative", [False, True])
@pytest.mark.parametrize("strategy", ["sequential", "scan"])
@pytest.mark.parametrize("gated", [False, True])
def test_one_householder_step_is_deltanet_exactly(gated, strategy, negative):
    torch.manual_seed(2)
    options = {"num_heads": 2, "allow_negative_eigenvalues": negative}
    base_type = GatedDeltaNetCell if gated else DeltaNetCell
    base = perturbed(base_type(5, 8, **options), seed=3)  # type: ignore[arg-type]
    product = DeltaProductCell(5, 8, num_householder=1, gate=gated, **options).double()
    assert [name for name, _ in product.named_parameters()] == [
        name for name, _ in base.named_parameters()
    ]
    product.load_state_dict(base.state_dict())
    inputs = torch.randn(3, 21, 5, dtype=F64, requires_grad=True)
    memory = torch.randn(3, base.state_sizes()[0], dtype=F64)
    results = []
    for cell in (base, product):
        outputs, state = STRATEGIES[strategy](cell, inputs, MatrixState(memory), [21, 9, 1])
        loss = outputs.square().sum() + state.memory.sum()
        results.append((outputs, state.memory, *torch.autograd.grad(loss, [inputs])))
    for name, expected, got in zip(("outputs", "state", "grad"), *results, strict=True):
        assert torch.equal(got, expected), f"{name} differs from {base_type.__name__}"


def test_two_reflections_rotate_the_memory_where_one_cannot():
    """With beta = 2 every write is a reflection: one per token (DeltaNet) gives a symmetric,
    orthogonal transition with real eigenvalues +-1; two (DeltaProduct) a rotation, det +1 and
    complex eigenvalues on the unit circle (Siems et al. 2025, Section 3)."""
    torch.manual_seed(4)
    for writes in (1, 2):
        cell = DeltaProductCell(3, 3, num_householder=writes, allow_negative_eigenvalues=True)
        cell = cell.double()
        with torch.no_grad():
            cell.bias_ih[-writes:] = 40.0  # beta = 2 sigmoid(40): a reflection to 1e-17
        projected = cell.project_inputs(torch.randn(1, 3, dtype=F64))
        memory = torch.zeros(1, 9, dtype=F64)
        transition = torch.autograd.functional.jacobian(
            lambda flat, c=cell, p=projected: c.recur(p, MatrixState(flat))[1].memory,
            memory,
        )[0, :, 0]  # (9, 9): A^T acting on each column of S^T
        torch.testing.assert_close(transition.T @ transition, torch.eye(9, dtype=F64))
        eigenvalues = torch.linalg.eigvals(transition)
        if writes == 1:
            assert eigenvalues.imag.abs().max() < 1e-12, eigenvalues
            assert eigenvalues.real.min() < -1 + 1e-12, eigenvalues
        else:
            assert torch.linalg.det(transition) == pytest.approx(1.0)
            assert eigenvalues.imag.abs().max() > 0.1, f"no rotation: {eigenvalues}"


def test_options_are_checked():
    with pytest.raises(ValueError, match="num_householder"):
        DeltaProductCell(3, 4, num_householder=0)
    cell = DeltaProductCell(3, 4, num_householder=3, gate=True)
    assert cell.virtual_steps == 3
    assert cell.weight_ih.shape == (4 + 3 * (4 + 4 + 1) + 1, 3)
    assert "num_householder=3" in repr(cell) and "gate=True" in repr(cell)


def test_trains_through_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    arguments = ["train", "state-tracking", "--steps", "2", "--run-dir", str(run)]
    arguments += [
        "--model.cell=deltaproduct",
        "--model.recurrent.options.num_householder=2",
        "--model.recurrent.options.allow_negative_eigenvalues=true",
        "--model.model_size=16",
        "--model.recurrent.hidden_size=16",
        "--model.num_blocks=1",
        "--trainer.batch_size=4",
        "--evaluation.sequences=8",
        "--evaluation.batch_size=4",
        "--data.train_length=6",
    ]
    threads = torch.get_num_threads()
    try:
        assert cli.main(arguments) == 0
    finally:
        torch.set_num_threads(threads)
    output = capsys.readouterr().out
    assert "final validation after 2 steps" in output and "blocks deltaproduct" in output
    recurrent = json.loads((run / "config.json").read_text())["model"]["recurrent"]
    assert recurrent["cell"] == "deltaproduct"
    assert recurrent["options"] == {"num_householder": 2, "allow_negative_eigenvalues": True}
    (weights_file,) = run.glob("checkpoints/*/model.safetensors")
    weights = load_file(str(weights_file))
    (weight_ih,) = (tensor for name, tensor in weights.items() if name.endswith("weight_ih"))
    assert weight_ih.shape == (16 + 2 * (16 + 16 + 1), 16)  # q, then 2 of k, v and beta
