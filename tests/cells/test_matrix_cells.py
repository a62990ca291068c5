"""The matrix-state and softmax-prefix cells (GLA, mLSTM, DeltaNet, Aaren): the scan strategy
against the sequential reference, chunked runs against full ones, gradcheck of a step, and each
cell's equations against a formula written out independently."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_close
from oracle_table import ORACLE_TABLE
from torch import nn
from torch.func import functional_call
from torch.nn import functional

from rnnkit.cells import CELLS, AarenState, Cell, make_cell
from rnnkit.cells.mlstm import running_stabilizer
from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError

F64 = torch.float64
# this file's entries of the one oracle table
CONFIGS: dict[str, tuple[str, dict]] = {
    key: ORACLE_TABLE[key]
    for key in (
        "gla", "gla_plain", "mlstm", "mlstm_expforget", "deltanet", "deltanet_plain", "aaren"
    )
}


def build(config: str, input_size: int, hidden_size: int, dtype=F64, **options) -> Cell:
    """The cell of ``CONFIGS[config]``, every parameter perturbed (gate weights start at 0)."""
    name, config_options = CONFIGS[config]
    torch.manual_seed(0)
    cell = make_cell(name, input_size, hidden_size, **{**config_options, **options})
    with torch.no_grad():
        for parameter in cell.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return cell.to(dtype)


def random_state(cell: Cell, batch_size: int, generator: torch.Generator):
    """A random valid state requiring grad (Aaren's denominator is positive)."""
    dtype = next(cell.parameters()).dtype
    fields = [
        torch.randn(batch_size, size, dtype=dtype, generator=generator)
        for size in cell.state_sizes()
    ]
    if cell.state_type is AarenState:
        fields[2] = fields[2].exp()
    return cell.state_type(*(field.requires_grad_() for field in fields))


class StepOnce(nn.Module):
    """``cell.step`` as a module returning ``(y, *state)``, for ``functional_call``."""

    def __init__(self, cell: Cell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, inputs, *fields):
        output, state = self.cell.step(inputs, self.cell.state_type(*fields))
        return (output, *state)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_step_passes_gradcheck(config):
    module = StepOnce(build(config, 2, 4, key_size=2))
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2, 2, dtype=F64, generator=generator, requires_grad=True)
    state = random_state(module.cell, 2, generator)
    names = [name for name, _ in module.named_parameters()]
    parameters = [parameter.detach().requires_grad_() for parameter in module.parameters()]

    def function(*tensors):
        values = dict(zip(names, tensors[1 + len(state) :], strict=True))
        return functional_call(module, values, tensors[: 1 + len(state)])

    assert torch.autograd.gradcheck(function, (inputs, *state, *parameters))


def per_head(tensor: torch.Tensor) -> torch.Tensor:
    """``(..., 2 * d) -> (..., 2, d)``: the two heads of the formula tests."""
    return tensor.unflatten(-1, (2, -1))


def check_both_strategies(cell: Cell, inputs, expected, state=None, lengths=None) -> list:
    """``sequential`` and ``scan`` both give the ``expected`` outputs; their final states."""
    finals = []
    for name in ("sequential", "scan"):
        with torch.no_grad():
            outputs, final = STRATEGIES[name](cell, inputs, state, lengths)
        assert_close(outputs, expected, f"{name} outputs", F64)
        finals.append(final)
    return finals


def test_gla_without_decay_is_causal_linear_attention():
    """alpha = 1 (gate bias 100: logsigmoid(100) / 16 rounds to 0): o_t = sum_{s<=t} (q_t .
    k_s) v_s per head, with q, k, v = W x + b."""
    cell = build("gla", 3, 8, output_projection=False)
    with torch.no_grad():
        cell.weight_gate_up.zero_()
        cell.bias_gate.fill_(100.0)
    inputs = torch.randn(2, 9, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    projected = functional.linear(inputs, cell.weight_ih, cell.bias_ih)  # (B, T, 2K + H)
    query, key, value = (per_head(x).transpose(1, 2) for x in projected.split([4, 4, 8], -1))
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    scores = (query @ key.transpose(-1, -2)).masked_fill(~causal, 0)  # (B, heads, T, T)
    check_both_strategies(cell, inputs, (scores @ value).transpose(1, 2).flatten(2))


def test_gla_gate_is_a_tempered_low_rank_sigmoid():
    cell = build("gla", 3, 8)
    inputs = torch.randn(2, 5, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
    state = cell.initial_state(2, dtype=F64)
    log_decay = cell.matrix_terms(cell.project_inputs(inputs), state, None)[3]
    low_rank = inputs @ cell.weight_gate_down.T @ cell.weight_gate_up.T + cell.bias_gate
    expected = torch.sigmoid(low_rank) ** (1 / 16)  # (B, T, K), K = 4: two heads of 2
    assert_close(log_decay.exp().transpose(1, 2).flatten(2), expected, "alpha", F64)


def mlstm_unstabilized(cell: Cell, inputs) -> tuple:
    """The paper's mLSTM without a stabilizer, from the zero state, two heads of 4: outputs
    and the final ``C (B, heads, d_v, d_k)``, ``n (B, heads, d_k)``."""
    projected = functional.linear(inputs, cell.weight_ih, cell.bias_ih)
    query, key, value, input_pre, forget_pre, output_pre = projected.split([8, 8, 8, 2, 2, 8], -1)
    memory = inputs.new_zeros(inputs.shape[0], 2, 4, 4)
    normalizer = inputs.new_zeros(inputs.shape[0], 2, 4)
    outputs = []
    for t in range(inputs.shape[1]):
        q, k, v = per_head(query[:, t]), per_head(key[:, t]) / 2, per_head(value[:, t])  # sqrt(4)
        i, f = input_pre[:, t, :, None].exp(), torch.sigmoid(forget_pre[:, t, :, None])
        memory = f[..., None] * memory + i[..., None] * v[..., :, None] * k[..., None, :]
        normalizer = f * normalizer + i * k
        denominator = (normalizer * q).sum(-1, keepdim=True).abs().clamp(min=1)
        hidden = (memory @ q.unsqueeze(-1)).squeeze(-1) / denominator
        outputs.append(torch.sigmoid(output_pre[:, t]) * hidden.flatten(1))
    return torch.stack(outputs, 1), memory, normalizer


def test_mlstm_is_the_unstabilized_formula():
    cell = build("mlstm", 3, 8)
    inputs = torch.randn(2, 11, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    expected, memory, normalizer = mlstm_unstabilized(cell, inputs)
    for name, final in zip(
        ("sequential", "scan"), check_both_strategies(cell, inputs, expected), strict=True
    ):
        scale = final.stabilizer.exp()[..., None]  # the stored (C, n) are times exp(-m)
        stored = final.memory.unflatten(-1, (2, 4, 4)).transpose(-1, -2)  # C from C^T
        assert_close(stored * scale[..., None], memory, f"{name} final memory * exp(m)", F64)
        stored_normalizer = per_head(final.normalizer) * scale
        assert_close(stored_normalizer, normalizer, f"{name} final normalizer * exp(m)", F64)


def test_mlstm_outputs_do_not_depend_on_the_stabilizer():
    """(C, n, m) and (C e^-c, n e^-c, m + c) are one state: the same outputs, and final
    states equal up to that rescaling."""
    cell = build("mlstm", 3, 8)
    generator = torch.Generator().manual_seed(4)
    inputs = torch.randn(2, 11, 3, dtype=F64, generator=generator)
    state = random_state(cell, 2, generator)
    with torch.no_grad():
        expected, final = STRATEGIES["sequential"](cell, inputs, state)
    shift = torch.tensor([[3.0, -2.0], [0.5, 7.0]], dtype=F64)  # c: (B, heads)
    shifted = type(state)(
        state.memory * (-shift).exp().repeat_interleave(16, 1),
        state.normalizer * (-shift).exp().repeat_interleave(4, 1),
        state.stabilizer + shift,
    )
    for moved in check_both_strategies(cell, inputs, expected, shifted):
        rescale = (moved.stabilizer - final.stabilizer).exp()  # (B, heads)
        memory = moved.memory * rescale.repeat_interleave(16, 1)
        assert_close(memory, final.memory, "final memory, rescaled", F64)


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_mlstm_stabilizer_in_chunks_is_the_running_max(chunk_size):
    """m_t = max(log f_t + m_{t-1}, log i_t), with padded steps (log i = -inf, log f = 0)."""
    generator = torch.Generator().manual_seed(8)
    log_input = torch.randn(2, 2, 37, dtype=F64, generator=generator)
    log_forget = functional.logsigmoid(torch.randn(2, 2, 37, dtype=F64, generator=generator))
    log_input[0, :, 30:], log_forget[0, :, 30:] = float("-inf"), 0.0
    initial = torch.randn(2, 2, dtype=F64, generator=generator)
    expected, stabilizer = [], initial
    for t in range(37):
        stabilizer = torch.maximum(log_forget[..., t] + stabilizer, log_input[..., t])
        expected.append(stabilizer)
    actual = running_stabilizer(log_input, log_forget, initial, chunk_size)
    assert_close(actual, torch.stack(expected, -1), "stabilizer", F64)


def test_deltanet_is_the_papers_rule():
    """S_t = S_{t-1} (I - beta k k^T) + beta v k^T, o_t = S_t q_t with explicit (d_v, d_k)
    matrices, q and k L2-normalized SiLU features; y = W_O o + b_O."""
    cell = build("deltanet", 3, 8)
    generator = torch.Generator().manual_seed(6)
    inputs = torch.randn(2, 9, 3, dtype=F64, generator=generator)
    state = random_state(cell, 2, generator)
    projected = functional.linear(inputs, cell.weight_ih, cell.bias_ih)
    query, key, value, beta_pre = projected.split([8, 8, 8, 2], -1)
    memory = state.memory.detach().unflatten(-1, (2, 4, 4)).transpose(-1, -2)  # (B, heads, v, k)
    expected = []
    for t in range(9):
        q, k = (
            functional.normalize(functional.silu(per_head(x[:, t])), dim=-1) for x in (query, key)
        )
        v, beta = per_head(value[:, t]), torch.sigmoid(beta_pre[:, t])[..., None, None]
        memory = memory @ (torch.eye(4, dtype=F64) - beta * k[..., :, None] * k[..., None, :])
        memory = memory + beta * v[..., :, None] * k[..., None, :]
        expected.append((memory @ q[..., None]).flatten(1) @ cell.weight_out.T + cell.bias_out)
    for final in check_both_strategies(cell, inputs, torch.stack(expected, 1), state):
        assert_close(final.memory, memory.transpose(-1, -2).flatten(1), "final memory", F64)


def test_aaren_is_softmax_attention_of_the_learned_query_over_each_prefix():
    cell = build("aaren", 3, 8)
    inputs = torch.randn(3, 9, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    lengths = torch.tensor([9, 4, 1])
    projected = functional.linear(inputs, cell.weight_ih, cell.bias_ih)
    keys, values = (per_head(x).transpose(1, 2) for x in projected.split([8, 8], -1))
    scores = (keys @ cell.query.unsqueeze(-1)).squeeze(-1) / 2  # (B, heads, T); sqrt(4) = 2
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    weights = scores.unsqueeze(-2).masked_fill(~causal, float("-inf")).softmax(-1)
    expected = (weights @ values).transpose(1, 2).flatten(2)  # (B, T, H)
    expected = expected * (torch.arange(9) < lengths[:, None]).unsqueeze(-1)
    check_both_strategies(cell, inputs, expected, None, lengths)


def test_registered_and_validated():
    assert {"gla", "mlstm", "deltanet", "aaren"} <= set(CELLS)
    with pytest.raises(ValueError, match=r"hidden_size \(6\) must be divisible by num_heads \(4\)"):
        make_cell("gla", 3, 6, num_heads=4)
    with pytest.raises(ValueError, match="feature_map must be one of"):
        make_cell("deltanet", 3, 4, feature_map="relu")
    with pytest.raises(ValueError, match="forget_activation must be one of"):
        make_cell("mlstm", 3, 4, forget_activation="tanh")
    with pytest.raises(StrategyUnsupportedError, match="'matrix' linear form has the scan"):
        STRATEGIES["scan:compiled"](make_cell("gla", 3, 4), torch.zeros(1, 2, 3))
