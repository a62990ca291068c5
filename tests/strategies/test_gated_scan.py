"""The compiled minGRU / minLSTM scans (``kernels/gated_scan_cpu.py``).

Their values and gradients against the sequential reference come from the oracle
(``test_oracle.py``: the ``mingru*`` and ``minlstm*`` entries under ``scan`` and
``scan:compiled``); here: that the oracle really exercises them, that their own backward is the
derivative of their forward (gradcheck, padding included) and that they are not chosen where
they do not apply.
"""

from __future__ import annotations

import pytest
import torch

from rnnkit.strategies.kernels import gated_scan_cpu
from tests.oracle_table import ORACLE_TABLE, build_oracle_cell

CPU = torch.device("cpu")


def test_every_compiled_scan_is_declared_by_an_oracle_entry():
    declared = set()
    for config in ORACLE_TABLE:
        cell = build_oracle_cell(config, 3, 4)
        if cell.compiled_kernel in gated_scan_cpu.KERNELS:
            declared.add(cell.compiled_kernel)
    missing = set(gated_scan_cpu.KERNELS) - declared
    assert not missing, f"compiled scans no oracle entry runs: {sorted(missing)}"


@pytest.mark.parametrize("config", ["mingru", "mingru_identity", "minlstm", "minlstm_identity"])
@pytest.mark.parametrize(
    ("strategy", "expected_calls"), [("scan", 1), ("scan:compiled", 1), ("scan:chunked", 0)]
)
def test_scan_runs_the_compiled_scan_where_it_applies(
    monkeypatch, config, strategy, expected_calls
):
    from rnnkit.strategies import make_strategy

    calls = []
    original = gated_scan_cpu.GatedScanFunction.apply

    def counting(*arguments):
        calls.append(arguments)
        return original(*arguments)

    monkeypatch.setattr(gated_scan_cpu.GatedScanFunction, "apply", counting)
    cell = build_oracle_cell(config, 3, 4)
    inputs = torch.randn(2, 5, 3, dtype=torch.float64)
    make_strategy(strategy)(cell, inputs, lengths=torch.tensor([5, 2]))
    assert len(calls) == expected_calls, f"{strategy} on {config}: {len(calls)} compiled scans"


@pytest.mark.parametrize("name", sorted(gated_scan_cpu.KERNELS))
def test_backward_is_the_derivative_of_the_forward(name):
    scan = gated_scan_cpu.lookup(name, CPU, torch.float64)
    assert scan is not None
    gates, _ = gated_scan_cpu.KERNELS[name]
    torch.manual_seed(0)
    batch, steps, width = 3, 6, 4
    projected = torch.randn(batch, steps, (gates + 1) * width, dtype=torch.float64)
    projected.requires_grad_(True)
    initial = torch.randn(batch, width, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 3, 1])  # padded steps carry the state and get no gradient
    torch.autograd.gradcheck(lambda p, h: scan(p, h, lengths), (projected, initial))


def test_not_chosen_where_it_does_not_apply():
    assert gated_scan_cpu.lookup("mingru_g", CPU, torch.bfloat16) is None
    assert gated_scan_cpu.lookup("mingru_g", torch.device("meta"), torch.float32) is None
    assert gated_scan_cpu.lookup("paragru", CPU, torch.float32) is None
    assert gated_scan_cpu.lookup(None, CPU, torch.float32) is None


def test_outputs_survive_later_calls():
    scan = gated_scan_cpu.lookup("mingru_g", CPU, torch.float32)
    assert scan is not None
    projected, initial = torch.randn(2, 7, 8), torch.randn(2, 4)
    kept = scan(projected, initial, None)
    expected = kept.clone()
    for _ in range(3):
        scan(projected * 2, initial, None)
    torch.testing.assert_close(kept, expected, msg=lambda m: f"kept outputs overwritten: {m}")
