"""Newton strategies under ``rnnkit.nn.Recurrent``: two bidirectional layers with lengths and
initial states equal the sequential layer (outputs, final states, every gradient), and every
cell's own strategy object (``Recurrent.strategy_reports``) reports convergence, no fallback."""

from __future__ import annotations

import pytest
import torch
from oracle_table import ORACLE_TABLE
from test_oracle import ACCEPTING, QUASI_MAX_ITERATIONS, TOLERANCES, check_stacked

from rnnkit.nn import Recurrent

F64 = torch.float64


def newton_layer_cases() -> list:
    return [
        pytest.param(config, strategy, id=f"{config}-{strategy}-L2-bi-B3-T11-H4-len-h0-f64")
        for config, strategies in ACCEPTING.items()
        for strategy in strategies
        if strategy.startswith("newton")
    ]


def build_layers(config: str, strategy: str) -> dict[str, Recurrent]:
    """A sequential layer with perturbed parameters and a Newton layer holding the same ones."""
    name, options = ORACLE_TABLE[config]
    strategy_options = (
        {"max_iterations": QUASI_MAX_ITERATIONS} if strategy == "newton:quasi" else {}
    )
    torch.manual_seed(0)
    layers = {
        "sequential": Recurrent(
            name, 3, 4, num_layers=2, bidirectional=True, strategy="sequential", **options
        ).to(F64),
        strategy: Recurrent(
            name,
            3,
            4,
            num_layers=2,
            bidirectional=True,
            strategy=strategy,
            strategy_options=strategy_options,
            **options,
        ).to(F64),
    }
    with torch.no_grad():
        for parameter in layers["sequential"].parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    layers[strategy].load_state_dict(layers["sequential"].state_dict())
    return layers


@pytest.mark.parametrize(("config", "strategy"), newton_layer_cases())
def test_stacked_newton_converges_and_matches_sequential(config, strategy):
    layers = build_layers(config, strategy)
    check_stacked(config, layers, strategy, TOLERANCES[("newton", F64)])

    reports = layers[strategy].strategy_reports()
    assert len(reports) == len(layers[strategy].cells) == 4
    for index, cell_reports in enumerate(reports):
        assert cell_reports, f"cell {index}: {strategy} recorded no report"
        for report in cell_reports:
            assert report.converged and report.fallback_from is None, f"cell {index}: {report}"
