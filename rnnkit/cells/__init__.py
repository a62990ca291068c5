"""What recurs: one module per cell family, and the ``CELLS`` registry of names."""

from rnnkit.cells.base import Cell, State
from rnnkit.cells.elman import ElmanCell
from rnnkit.cells.gru import GRUCell, HiddenState
from rnnkit.cells.jordan import JordanCell, OutputState
from rnnkit.cells.lstm import LSTMCell, LSTMState
from rnnkit.cells.mingru import MinGRUCell, MinLSTMCell

CELLS: dict[str, type[Cell]] = {
    "elman": ElmanCell,
    "jordan": JordanCell,
    "lstm": LSTMCell,
    "gru": GRUCell,
    "mingru": MinGRUCell,
    "minlstm": MinLSTMCell,
}


def make_cell(name: str, input_size: int, hidden_size: int, **options) -> Cell:
    """Build the registered cell ``name``; unknown names raise with the known ones listed."""
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; registered cells: {', '.join(sorted(CELLS))}")
    return CELLS[name](input_size, hidden_size, **options)


__all__ = [
    "CELLS",
    "Cell",
    "ElmanCell",
    "GRUCell",
    "HiddenState",
    "JordanCell",
    "LSTMCell",
    "LSTMState",
    "MinGRUCell",
    "MinLSTMCell",
    "OutputState",
    "State",
    "make_cell",
]
