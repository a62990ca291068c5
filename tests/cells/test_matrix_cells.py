"""The matrix-state and softmax-prefix cells (GLA, mLSTM, DeltaNet, Aaren): the scan strategy
against the sequential reference, chunked runs against full ones, gradcheck of a step, and each
cell's equations against a formula written out independently."""

from __future__ import annotations

import pytest
import torch
from conftest import DTYPE_NAMES, assert_close, assert_states_close
from torch import nn
from torch.func import functional_call
from torch.nn import functional

from rnnkit.cells import CELLS, AarenState, Cell, make_cell
from rnnkit.cells.mlstm import running_stabilizer
from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError
from rnnkit.strategies.kernels import choose_implementation

F64 = torch.float64
CONFIGS: dict[str, tuple[str, dict]] = {
    "gla": ("gla", {"num_heads": 2}),
    "gla_plain": ("gla", {"output_projection": False, "bias": False}),
    "mlstm": ("mlstm", {"num_heads": 2}),
    "mlstm_expforget": ("mlstm", {"forget_activation": "exp"}),
    "deltanet": ("deltanet", {"num_heads": 2}),
    "deltanet_plain": ("deltanet", {"feature_map": "identity", "output_projection": False}),
    "aaren": ("aaren", {"num_heads": 2}),
}
# (batch, steps, hidden_size, lengths, initial state); input_size 3
SHAPES = [
    (2, 1, 4, None, True),
    (3, 7, 4, (7, 1, 4), True),
    (3, 37, 8, (37, 20, 1), True),
    (2, 37, 8, None, False),
]
FLOAT32_SHAPES = [(3, 37, 8, (37, 20, 1), True)]


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


def scan_strategies(cell: Cell) -> list[str]:
    """``scan`` and the ``scan:<implementation>`` strategies that accept ``cell`` and run
    something other than what ``scan`` itself runs (they refuse before computing anything)."""
    probe = torch.zeros(1, 1, cell.input_size, dtype=next(cell.parameters()).dtype)
    auto = (
        "chunked"
        if cell.linear_form in ("matrix", "delta")
        else choose_implementation(probe.device)
    )
    names = ["scan"]
    for name in STRATEGIES:
        if not name.startswith("scan:") or name == f"scan:{auto}":
            continue
        try:
            STRATEGIES[name](cell, probe)
        except StrategyUnsupportedError:
            continue
        names.append(name)
    return names


def loss_of(outputs, final_fields, seed: int = 1):
    """A weighted sum of every output and final-state element."""
    generator = torch.Generator().manual_seed(seed)
    loss = (outputs * torch.randn(outputs.shape, generator=generator, dtype=outputs.dtype)).sum()
    for field in final_fields:
        weight = torch.randn(field.shape, generator=generator, dtype=field.dtype)
        loss = loss + (field * weight).sum()
    return loss


def equivalence_cases() -> list:
    cases = []
    for config in CONFIGS:
        for strategy in scan_strategies(build(config, 3, 4)):
            for dtype, shapes in ((F64, SHAPES), (torch.float32, FLOAT32_SHAPES)):
                for batch, steps, hidden, lengths, initial in shapes:
                    case_id = (
                        f"{config}-{strategy}-B{batch}-T{steps}-H{hidden}"
                        + ("-len" if lengths else "")
                        + ("-h0" if initial else "")
                        + f"-{DTYPE_NAMES[dtype]}"
                    )
                    shape = (batch, steps, hidden, lengths, initial)
                    cases.append(pytest.param(config, strategy, shape, dtype, id=case_id))
    return cases


def assert_runs_close(actual: tuple, expected: tuple, names: list[str], dtype) -> None:
    """Two ``(outputs, final states, gradients)``; ``names`` name the gradients."""
    assert_close(actual[0], expected[0], "outputs", dtype)
    for index, (final, expected_final) in enumerate(zip(actual[1], expected[1], strict=True)):
        assert_states_close(final, expected_final, f"final state[{index}]", dtype)
    for name, gradient, expected_gradient in zip(names, actual[2], expected[2], strict=True):
        assert_close(gradient, expected_gradient, f"grad of {name}", dtype)


@pytest.mark.parametrize(("config", "strategy", "shape", "dtype"), equivalence_cases())
def test_scan_matches_sequential(config, strategy, shape, dtype):
    batch, steps, hidden, lengths, initial = shape
    cell = build(config, 3, hidden, dtype)
    generator = torch.Generator().manual_seed(steps)
    inputs = torch.randn(batch, steps, 3, dtype=dtype, generator=generator).requires_grad_()
    state = random_state(cell, batch, generator) if initial else None
    names = ["inputs", *(f"initial state.{field}" for field in (state._fields if state else ()))]
    names += [name for name, _ in cell.named_parameters()]
    results = []
    for name in ("sequential", strategy):
        outputs, final = STRATEGIES[name](cell, inputs, state, lengths)
        wrt = [inputs, *(state or ()), *cell.parameters()]
        results.append((outputs, [final], torch.autograd.grad(loss_of(outputs, final), wrt)))
    assert_runs_close(results[1], results[0], names, dtype)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_chunks_with_carried_state_match_full_run_and_steps(config):
    cell = build(config, 3, 8)
    generator = torch.Generator().manual_seed(5)
    inputs = torch.randn(2, 37, 3, dtype=F64, generator=generator)
    state = random_state(cell, 2, generator)
    with torch.no_grad():
        outputs, final = STRATEGIES["scan"](cell, inputs, state)
        first, middle = STRATEGIES["scan"](cell, inputs[:, :13], state)
        second, chunked_final = STRATEGIES["scan"](cell, inputs[:, 13:], middle)
        stepped, step_state = [], state
        for step in range(37):
            output, step_state = cell.step(inputs[:, step], step_state)
            stepped.append(output)
    assert_close(torch.cat([first, second], 1), outputs, "outputs of two chunks", F64)
    assert_states_close(chunked_final, final, "final state of two chunks", F64)
    assert_close(torch.stack(stepped, 1), outputs, "outputs step by step", F64)
    assert_states_close(step_state, final, "final state step by step", F64)


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


@pytest.mark.parametrize("config", list(CONFIGS))
def test_stacked_bidirectional_recurrent_scan_matches_sequential(config):
    name, options = CONFIGS[config]
    torch.manual_seed(0)
    layers = {
        strategy: Recurrent(
            name, 3, 8, num_layers=2, bidirectional=True, strategy=strategy, **options
        ).to(F64)
        for strategy in ("sequential", "scan")
    }
    with torch.no_grad():
        for parameter in layers["sequential"].parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    layers["scan"].load_state_dict(layers["sequential"].state_dict())
    generator = torch.Generator().manual_seed(2)
    inputs = torch.randn(3, 11, 3, dtype=F64, generator=generator).requires_grad_()
    states = tuple(random_state(cell, 3, generator) for cell in layers["sequential"].cells)
    lengths = torch.tensor([5, 11, 1])
    names = [
        "inputs",
        *(
            f"state[{index}].{field}"
            for index, state in enumerate(states)
            for field in state._fields
        ),
    ]
    names += [name for name, _ in layers["sequential"].named_parameters()]
    results = []
    for layer in layers.values():
        outputs, finals = layer(inputs, states, lengths)
        fields = [field for final in finals for field in final]
        wrt = [inputs, *(field for state in states for field in state), *layer.parameters()]
        results.append((outputs, finals, torch.autograd.grad(loss_of(outputs, fields), wrt)))
    assert_runs_close(results[1], results[0], names, F64)


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
