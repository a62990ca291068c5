"""The reference itself, over every entry of the oracle table: a padded batch with lengths gives
each sequence what it gives run alone. (``sequential`` = a hand loop of ``cell.step`` is the
``sequential`` case of ``test_oracle.test_full_equals_chunked_equals_stepwise``.)"""

from __future__ import annotations

import pytest
import torch
from oracle_table import ORACLE_TABLE, build_oracle_cell, random_oracle_state
from torch.testing import assert_close

from rnnkit.strategies import STRATEGIES

F64 = torch.float64
TOLERANCE = {"rtol": 1e-10, "atol": 1e-10}


@pytest.mark.parametrize("config", list(ORACLE_TABLE))
def test_sequential_with_lengths_equals_each_sequence_alone(config):
    """Each row, truncated to its length, equals that row run alone; outputs past a sequence's
    end are exactly zero; lengths include a tie and none reaches the padded length."""
    cell = build_oracle_cell(config, 3, 4, F64)
    generator = torch.Generator().manual_seed(4)
    lengths = [6, 2, 6, 1]
    inputs = torch.randn(4, 7, 3, dtype=F64, generator=generator)
    state = random_oracle_state(config, cell, 4, generator)
    sequential = STRATEGIES["sequential"]
    with torch.no_grad():
        outputs, final_state = sequential(cell, inputs, state, torch.tensor(lengths))
        for row, length in enumerate(lengths):
            row_state = cell.state_type(*(field[row : row + 1] for field in state))
            alone_outputs, alone_state = sequential(cell, inputs[row : row + 1, :length], row_state)
            assert_close(
                outputs[row : row + 1, :length],
                alone_outputs,
                **TOLERANCE,
                msg=lambda text, row=row: f"outputs[{row}] differs: {text}",
            )
            padding = outputs[row, length:]
            assert torch.equal(padding, torch.zeros_like(padding)), f"padded outputs[{row}] != 0"
            for field, got, want in zip(
                final_state._fields, final_state, alone_state, strict=True
            ):
                assert_close(
                    got[row : row + 1],
                    want,
                    **TOLERANCE,
                    msg=lambda text, row=row, field=field: f"final state[{row}].{field}: {text}",
                )
