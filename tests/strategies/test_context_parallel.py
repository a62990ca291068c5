"""Context parallelism (``rnnkit.strategies.context_parallel``, and ``context_parallel_newton``
for nonlinear cells): two gloo ranks, each holding one
chunk of the time axis, give the outputs, final state and gradients (inputs, initial state,
parameters summed over ranks) of one process running ``sequential`` and ``scan`` over the whole
sequence, in float64, for chunks of unequal length.

Two spawned ranks run every case once and save what they
computed; each test compares one case against the one-process reference computed here.
"""

from __future__ import annotations

import multiprocessing
import os
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from conftest import assert_close

from rnnkit.cells import make_cell
from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES, StrategyUnsupportedError
from rnnkit.strategies.context_parallel import ContextParallel
from rnnkit.strategies.context_parallel_newton import ContextParallelNewton

F64 = torch.float64
BATCH, INPUT_SIZE, HIDDEN_SIZE = 2, 3, 4
CELL_OPTIONS = {
    "mingru": {},
    "minlstm": {},
    "lru": {},
    "s4d": {},
    "gla": {"num_heads": 2},
    "deltanet": {"num_heads": 2},
    "gated_deltanet": {"num_heads": 2},
    "deltaproduct": {"num_heads": 2},
    "elman": {},  # the nonlinear cells run by ContextParallelNewton
    "gru": {},
    "lstm": {},
    "paragru": {},
    "paralstm": {},
}
SPLITS = {"T7-3+4": (3, 4), "T9-6+3": (6, 3)}
LINEAR = ["mingru", "minlstm", "lru", "s4d", "gla", "deltanet", "gated_deltanet", "deltaproduct"]
NEWTON = {
    "elman": "full",
    "gru": "full",
    "lstm": "full",
    "paragru": "full",
    "paralstm": "full",  # 2x2 block Jacobians
    "gru-quasi": "diagonal",
}
CASES = [(cell, split) for cell in LINEAR for split in SPLITS] + [
    (cell, "T7-3+4") for cell in NEWTON
]
RECURRENT_SPLIT = (5, 2)  # a two-layer Recurrent of GLA cells


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    name = name.removesuffix("-quasi")
    return make_cell(name, INPUT_SIZE, HIDDEN_SIZE, **CELL_OPTIONS[name]).to(F64)


def context_parallel(name: str):
    if name in NEWTON:
        return ContextParallelNewton(tolerance=1e-13, jacobian=NEWTON[name])
    return ContextParallel()


def problem(cell: torch.nn.Module, steps: int, seed: int = 1) -> tuple:
    """Inputs ``(B, T, D)``, an initial state, and weights for the outputs and final state
    (the loss is a fixed weighted sum of both)."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(BATCH, steps, INPUT_SIZE, dtype=F64, generator=generator)
    zero = cell.initial_state(BATCH, dtype=F64)
    state = type(zero)(*(torch.randn(f.shape, dtype=f.dtype, generator=generator) for f in zero))
    state = type(zero)(*(0.3 * field for field in state))
    return inputs, state, generator


def weighted_loss(outputs: torch.Tensor, final, generator: torch.Generator, steps: int):
    """Sum of outputs and final state weighted by fixed random weights; the output weights
    are drawn for all ``steps`` and sliced by the caller's chunk."""
    weights = torch.randn(BATCH, steps, outputs.shape[-1], dtype=F64, generator=generator)
    final_weights = [torch.randn(f.shape, dtype=F64, generator=generator) for f in final]
    return weights, final_weights


def grad_or_zeros(parameter: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(parameter) if parameter.grad is None else parameter.grad.clone()


def _reduce(value: torch.Tensor) -> torch.Tensor:
    return value.real if value.is_complex() else value


def _rank_case(name: str, split: tuple[int, int], rank: int) -> dict:
    cell = build(name)
    steps = sum(split)
    inputs, state, generator = problem(cell, steps)
    start = sum(split[:rank])
    chunk = inputs[:, start : start + split[rank]].clone().requires_grad_()
    state = type(state)(*(field.clone().requires_grad_() for field in state))
    outputs, final = context_parallel(name)(cell, chunk, state)
    weights, final_weights = weighted_loss(outputs, final, generator, steps)
    loss = (outputs * weights[:, start : start + split[rank]]).sum()
    if rank == len(split) - 1:
        loss = loss + sum(_reduce(f * w).sum() for f, w in zip(final, final_weights, strict=True))
    loss.backward()
    grads = [grad_or_zeros(parameter) for parameter in cell.parameters()]
    for grad in grads:
        dist.all_reduce(grad)
    return {
        "outputs": outputs.detach(),
        "final": [field.detach() for field in final],
        "inputs_grad": chunk.grad,
        "state_grad": [field.grad for field in state],
        "parameter_grads": grads,
    }


def _rank_recurrent(rank: int) -> dict:
    torch.manual_seed(0)
    layer = Recurrent(
        "gla",
        INPUT_SIZE,
        HIDDEN_SIZE,
        num_layers=2,
        batch_first=True,
        strategy=ContextParallel(),
        num_heads=2,
    ).to(F64)
    inputs = torch.randn(BATCH, sum(RECURRENT_SPLIT), INPUT_SIZE, dtype=F64)
    start = sum(RECURRENT_SPLIT[:rank])
    chunk = inputs[:, start : start + RECURRENT_SPLIT[rank]].clone().requires_grad_()
    outputs, _ = layer(chunk)
    outputs.square().sum().backward()
    grads = [grad_or_zeros(parameter) for parameter in layer.parameters()]
    for grad in grads:
        dist.all_reduce(grad)
    return {"outputs": outputs.detach(), "inputs_grad": chunk.grad, "parameter_grads": grads}


def _rank_main(rank: int, rendezvous: str, directory: str) -> None:
    status = 1
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
        results = {
            f"{name}-{split}": _rank_case(name, SPLITS[split], rank) for name, split in CASES
        }
        results["recurrent"] = _rank_recurrent(rank)
        torch.save(results, os.path.join(directory, f"rank{rank}.pt"))
        dist.destroy_process_group()
        status = 0
    except BaseException:
        traceback.print_exc()  # os._exit below would drop it
    finally:
        os._exit(status)  # the rank's exit code is the status alone


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    directory = tmp_path_factory.mktemp("context_parallel")
    # spawn, not fork: a fork after the test process has used GNU OpenMP (any earlier torch
    # test in the same run) is refused by libgomp ("fork() called from a process already
    # using GNU OpenMP") and the ranks die
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(
            target=_rank_main, args=(rank, str(directory / "rendezvous"), str(directory))
        )
        for rank in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    codes = [process.exitcode for process in processes]
    for process in processes:
        if process.exitcode is None:
            process.kill()
            process.join()
    assert codes == [0, 0], f"rank exit codes {codes}"
    return [torch.load(Path(directory) / f"rank{rank}.pt") for rank in range(2)]


@pytest.mark.parametrize("strategy", ["sequential", "parallel"])  # parallel: scan or newton
@pytest.mark.parametrize("name, split", CASES, ids=[f"{name}-{split}" for name, split in CASES])
def test_two_ranks_equal_one_process(ranks, name, split, strategy):
    cell = build(name)
    steps = sum(SPLITS[split])
    inputs, state, generator = problem(cell, steps)
    inputs = inputs.requires_grad_()
    state = type(state)(*(field.clone().requires_grad_() for field in state))
    if strategy == "parallel":
        strategy = "newton" if name in NEWTON else "scan"
    outputs, final = STRATEGIES[strategy](cell, inputs, state)
    weights, final_weights = weighted_loss(outputs, final, generator, steps)
    loss = (outputs * weights).sum()
    loss = loss + sum(_reduce(f * w).sum() for f, w in zip(final, final_weights, strict=True))
    loss.backward()
    got = [rank[f"{name}-{split}"] for rank in ranks]
    assert_close(torch.cat([g["outputs"] for g in got], 1), outputs.detach(), "outputs", F64)
    for index, field in enumerate(final):
        assert_close(got[1]["final"][index], field.detach(), f"final state {index}", F64)
    inputs_grad = torch.cat([g["inputs_grad"] for g in got], 1)
    assert_close(inputs_grad, inputs.grad, "inputs grad", F64)
    for index, field in enumerate(state):
        assert_close(got[0]["state_grad"][index], field.grad, f"initial state {index} grad", F64)
        assert got[1]["state_grad"][index] is None  # rank 1 never reads the given state
    names = [parameter_name for parameter_name, _ in cell.named_parameters()]
    for parameter_name, actual, parameter in zip(
        names, got[0]["parameter_grads"], cell.parameters(), strict=True
    ):
        assert_close(actual, grad_or_zeros(parameter), f"{parameter_name} grad", F64)


def test_recurrent_stack_on_two_ranks_equals_one_process(ranks):
    torch.manual_seed(0)
    layer = Recurrent(
        "gla",
        INPUT_SIZE,
        HIDDEN_SIZE,
        num_layers=2,
        batch_first=True,
        strategy="sequential",
        num_heads=2,
    ).to(F64)
    inputs = torch.randn(BATCH, sum(RECURRENT_SPLIT), INPUT_SIZE, dtype=F64).requires_grad_()
    outputs, _ = layer(inputs)
    outputs.square().sum().backward()
    got = [rank["recurrent"] for rank in ranks]
    assert_close(torch.cat([g["outputs"] for g in got], 1), outputs.detach(), "outputs", F64)
    assert_close(torch.cat([g["inputs_grad"] for g in got], 1), inputs.grad, "inputs grad", F64)
    for actual, parameter in zip(got[0]["parameter_grads"], layer.parameters(), strict=True):
        assert_close(actual, grad_or_zeros(parameter), "parameter grad", F64)


@pytest.mark.parametrize("name", ["selective_ssm", "mlstm", "elman"])
def test_cells_with_more_state_or_nonlinear_are_refused(name):
    cell = make_cell(name, INPUT_SIZE, HIDDEN_SIZE)
    with pytest.raises(StrategyUnsupportedError, match="context parallelism"):
        ContextParallel()(cell, torch.randn(BATCH, 3, INPUT_SIZE))


def test_lengths_are_refused():
    cell = make_cell("mingru", INPUT_SIZE, HIDDEN_SIZE)
    with pytest.raises(StrategyUnsupportedError, match="lengths"):
        ContextParallel()(cell, torch.randn(BATCH, 3, INPUT_SIZE), lengths=[3, 2])


def test_bidirectional_layer_is_refused() -> None:
    from rnnkit.nn import Recurrent

    for strategy in (ContextParallel(), ContextParallelNewton()):
        with pytest.raises(ValueError, match="cannot run a bidirectional layer"):
            Recurrent("gru", 4, 4, bidirectional=True, strategy=strategy)
