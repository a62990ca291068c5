"""``torch.compile(fullgraph=True)`` against eager: every registered cell under every strategy
that runs it (the oracle table's entries, Triton skipped: no GPU), the ``rnnkit.nn`` drop-ins
and the language model. Outputs, final states and gradients of inputs, initial state and every
parameter, float64, with lengths and an initial state.

The default suite compiles with ``aot_eager`` (Dynamo and AOTAutograd, no code generation)
``DEFAULT_CASES``: every compiled-kernel custom op path (``fused``, ``native``, the Numba scans)
and one plain-PyTorch strategy; every other (entry, strategy) pair and the ``inductor`` backend
are ``slow`` (compiling the plain-PyTorch loops takes 2-20 s each).
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from oracle_table import ORACLE_TABLE, build_oracle_cell, random_oracle_state
from torch.testing import assert_close

from rnnkit.models.language_model import LanguageModel, LanguageModelConfig
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.nn import GRU, LSTM, RNN
from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError, make_strategy

TOLERANCE = {"rtol": 1e-9, "atol": 1e-10}
BATCH, STEPS, INPUT_SIZE, HIDDEN_SIZE = 3, 5, 3, 4
LENGTHS = (5, 2, 4)
SKIPPED = {"sequential", "auto", "scan:triton"}


DEFAULT_CASES = {
    *(f"{cell}-fused" for cell in ("elman", "jordan", "lstm", "gru", "paragru", "paralstm")),
    "slstm-fused",
    *(f"{cell}-native" for cell in ("elman", "lstm", "gru")),
    "mingru-scan",
    "minlstm-scan",
    "lru-scan:compiled",
    "s4d_lin-scan:compiled",
    "aaren-scan:compiled",
    "lstm-sequential",
    "selective_ssm-newton",
    "paragru-newton",
    "elman-newton:quasi",
    "gru-newton:damped",
}


def accepting(config: str) -> list[str]:
    """``sequential`` and the strategies (but Triton and ``auto``) that run ``config``."""
    cell = build_oracle_cell(config, 2, 4)
    probe = torch.zeros(1, 1, cell.input_size, dtype=torch.float64)
    names = ["sequential"]
    for name in STRATEGIES:
        if name in SKIPPED:
            continue
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                make_strategy(name)(cell, probe)
        except StrategyUnsupportedError:
            continue
        names.append(name)
    return names


def cases() -> list:
    result = []
    for config in ORACLE_TABLE:
        for strategy in accepting(config):
            marks = [] if f"{config}-{strategy}" in DEFAULT_CASES else [pytest.mark.slow]
            result.append(pytest.param(config, strategy, id=f"{config}-{strategy}", marks=marks))
    return result


def loss_of(tensors) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    loss = torch.zeros((), dtype=torch.float64)
    for tensor in tensors:
        tensor = torch.view_as_real(tensor) if tensor.is_complex() else tensor
        weight = torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype)
        loss = loss + (tensor * weight).sum()
    return loss


def check_same(eager_outputs, compiled_outputs, eager_grads, compiled_grads, names) -> None:
    for index, (got, want) in enumerate(zip(compiled_outputs, eager_outputs, strict=True)):
        assert_close(got, want, **TOLERANCE, msg=lambda m, i=index: f"output {i}: {m}")
    for name, got, want in zip(names, compiled_grads, eager_grads, strict=True):
        if got is None or want is None:
            assert got is None and want is None, f"{name}: one gradient is None"
        else:
            assert_close(got, want, **TOLERANCE, msg=lambda m, n=name: f"grad of {n}: {m}")


def compare_strategy(
    config: str, strategy_name: str, backend: str, resets: torch.Tensor | None = None
) -> None:
    torch._dynamo.reset()
    cell = build_oracle_cell(config, INPUT_SIZE, HIDDEN_SIZE)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=torch.float64, generator=generator)
    state = random_oracle_state(config, cell, BATCH, generator)
    lengths = torch.tensor(LENGTHS)
    strategy = make_strategy(strategy_name)

    def run(inputs, state, lengths):
        outputs, final = strategy(cell, inputs, state, lengths, resets=resets)
        return (outputs, *final)

    compiled = torch.compile(run, fullgraph=True, backend=backend)
    wrt = [inputs.requires_grad_(), *state, *cell.parameters()]
    names = ["inputs", *(f"state.{field}" for field in state._fields)]
    names += [name for name, _ in cell.named_parameters()]
    results = []
    for function in (run, compiled):
        outputs = function(inputs, state, lengths)
        grads = torch.autograd.grad(loss_of(outputs), wrt, allow_unused=True)
        results.append((outputs, grads))
    check_same(results[0][0], results[1][0], results[0][1], results[1][1], names)


@pytest.mark.parametrize(("config", "strategy"), cases())
def test_strategy_compiles_to_eager_numbers(config, strategy):
    compare_strategy(config, strategy, "aot_eager")


RESETS = torch.tensor(
    [
        [False, False, True, False, True],  # two restarts within length 5
        [False, True, False, False, False],  # one within length 2, one step segment
        [False, False, False, True, True],  # consecutive restarts, the last past length 4
    ]
)


@pytest.mark.parametrize(
    ("config", "strategy"),
    [
        ("lstm", "native"),
        ("gru", "native"),
        ("lstm", "fused"),
        ("slstm", "fused"),
        ("mingru", "scan"),
        ("paragru", "newton"),
        ("elman", "newton:quasi"),
        pytest.param("lstm", "sequential", marks=pytest.mark.slow),
        pytest.param("gla", "sequential", marks=pytest.mark.slow),
    ],
)
def test_strategy_with_resets_compiles_to_eager_numbers(config, strategy):
    """Resets under compile (``native`` cuts its segments inside the custom op)."""
    compare_strategy(config, strategy, "aot_eager", resets=RESETS)


@pytest.mark.parametrize("config", ["gla", "deltanet"])
def test_compiled_matrix_scan_with_resets_raises(config):
    """Matrix-state scans restart by segments, whose count and length are data-dependent."""
    with pytest.raises(Exception, match="cannot run resets for .* state"):
        compare_strategy(config, "scan", "aot_eager", resets=RESETS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "strategy"),
    [("lstm", "fused"), ("gru", "native"), ("mingru", "scan"), ("lru", "scan:compiled")],
)
def test_strategy_compiles_with_inductor(config, strategy):
    compare_strategy(config, strategy, "inductor")


def compare_module(module: torch.nn.Module, arguments: tuple, backend: str = "aot_eager") -> None:
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend=backend)
    parameters = list(module.parameters())
    floating = [a for a in arguments if isinstance(a, torch.Tensor) and a.is_floating_point()]
    wrt = [*floating, *parameters]
    results = []
    for function in (module, compiled):
        outputs = torch.utils._pytree.tree_leaves(function(*arguments))
        outputs = [o for o in outputs if isinstance(o, torch.Tensor) and o.is_floating_point()]
        grads = torch.autograd.grad(loss_of(outputs), wrt, allow_unused=True)
        results.append((outputs, grads))
    names = [f"argument {i}" for i in range(len(floating))]
    names += [name for name, _ in module.named_parameters()]
    check_same(results[0][0], results[1][0], results[0][1], results[1][1], names)


@pytest.mark.parametrize("layer", [LSTM, GRU, RNN])
def test_torch_drop_in_compiles(layer):
    torch.manual_seed(0)
    module = layer(3, 4, num_layers=2, batch_first=True).double()
    inputs = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    compare_module(module, (inputs,))


def test_language_model_compiles():
    torch.manual_seed(0)
    config = LanguageModelConfig(
        embedding_size=4, recurrent=RecurrentConfig(cell="lstm", hidden_size=6), dropout=0.0
    )
    model = LanguageModel(config, vocabulary_size=7).double()
    tokens = torch.randint(0, 7, (2, 5))
    compare_module(model, (tokens,))


def test_compiled_lengths_check_raises_in_graph():
    """Value checks become in-graph asserts under compile: same message, at run time."""
    torch._dynamo.reset()
    cell = build_oracle_cell("lstm", INPUT_SIZE, HIDDEN_SIZE)
    strategy = make_strategy("fused")
    compiled = torch.compile(
        lambda inputs, lengths: strategy(cell, inputs, None, lengths)[0],
        fullgraph=True,
        backend="aot_eager",
    )
    inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="lengths must not exceed the 5 time steps"):
        compiled(inputs, torch.tensor([5, 6, 1]))
    inputs[1, 2, 0] = float("nan")
    with pytest.raises(RuntimeError, match="inputs contain NaN or infinite values"):
        compiled(inputs, torch.tensor([5, 2, 1]))


def test_compiled_native_lengths_equal_the_packed_kernel():
    """Under compile ``native`` runs one unpacked call per distinct length (lengths 5, 2, 2, 4
    here: rows regrouped and put back in order); eager packs them. float32 outputs, final
    state and gradients."""
    torch._dynamo.reset()
    cell = build_oracle_cell("lstm", INPUT_SIZE, HIDDEN_SIZE).float()
    strategy = make_strategy("native")
    compiled = torch.compile(
        lambda *arguments: strategy(*arguments), fullgraph=True, backend="aot_eager"
    )
    inputs = torch.randn(4, STEPS, INPUT_SIZE, requires_grad=True)
    lengths = torch.tensor([5, 2, 2, 4])
    results = []
    for function in (strategy, compiled):
        outputs, final = function(cell, inputs, None, lengths)
        loss = loss_of([outputs, *final])
        results.append([outputs, *final, *torch.autograd.grad(loss, [inputs, *cell.parameters()])])
    for got, want in zip(*reversed(results), strict=True):
        assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert results[1][0][1, 2:].abs().max() == 0  # nothing past a row's length


def test_compiled_newton_reports_each_solve():
    """The compiled solve is the eager one: one report per call, forward and backward."""
    torch._dynamo.reset()
    cell = build_oracle_cell("paragru", INPUT_SIZE, HIDDEN_SIZE)
    strategy = make_strategy("newton")
    compiled = torch.compile(
        lambda inputs: strategy(cell, inputs)[0], fullgraph=True, backend="aot_eager"
    )
    inputs = torch.randn(BATCH, STEPS, INPUT_SIZE, dtype=torch.float64, requires_grad=True)
    for calls in (1, 2):
        compiled(inputs).sum().backward()
        assert len(strategy.reports) == calls
        assert strategy.reports[-1].converged and strategy.reports[-1].steps == STEPS


def test_importing_rnnkit_does_not_import_dynamo():
    """Dynamo takes seconds to import: rnnkit leaves it to the first ``torch.compile``."""
    code = "import sys, rnnkit; assert 'torch._dynamo' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
