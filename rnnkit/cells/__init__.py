"""What recurs: one module per cell family, and the ``CELLS`` registry of names."""

from rnnkit.cells.aaren import AarenCell, AarenState
from rnnkit.cells.base import Cell, State
from rnnkit.cells.deltanet import DeltaNetCell
from rnnkit.cells.deltaproduct import DeltaProductCell
from rnnkit.cells.elman import ElmanCell
from rnnkit.cells.gated_deltanet import GatedDeltaNetCell
from rnnkit.cells.gla import GatedLinearAttentionCell, MatrixState
from rnnkit.cells.gru import GRUCell, HiddenState
from rnnkit.cells.jordan import JordanCell, OutputState
from rnnkit.cells.lru import LRUCell, LRUState
from rnnkit.cells.lstm import LSTMCell, LSTMState
from rnnkit.cells.mingru import MinGRUCell, MinLSTMCell
from rnnkit.cells.mlstm import MLSTMCell, MLSTMState
from rnnkit.cells.pararnn import ParaGRUCell, ParaLSTMCell, ParaLSTMState
from rnnkit.cells.plrnn import ALRNNCell, PLRNNCell
from rnnkit.cells.s4d import S4DCell, S4DState
from rnnkit.cells.selective_ssm import SelectiveSSMCell, SelectiveState
from rnnkit.cells.slstm import SLSTMCell, SLSTMState
from rnnkit.cells.titans import TitansCell, TitansState

CELLS: dict[str, type[Cell]] = {
    "elman": ElmanCell,
    "jordan": JordanCell,
    "lstm": LSTMCell,
    "gru": GRUCell,
    "mingru": MinGRUCell,
    "minlstm": MinLSTMCell,
    "gla": GatedLinearAttentionCell,
    "mlstm": MLSTMCell,
    "deltanet": DeltaNetCell,
    "gated_deltanet": GatedDeltaNetCell,
    "deltaproduct": DeltaProductCell,
    "aaren": AarenCell,
    "paragru": ParaGRUCell,
    "paralstm": ParaLSTMCell,
    "slstm": SLSTMCell,
    "lru": LRUCell,
    "s4d": S4DCell,
    "selective_ssm": SelectiveSSMCell,
    "titans": TitansCell,
    "plrnn": PLRNNCell,
    "alrnn": ALRNNCell,
}


def make_cell(name: str, input_size: int, hidden_size: int, **options) -> Cell:
    """Build the registered cell ``name``; unknown names raise with the known ones listed."""
    if name not in CELLS:
        raise ValueError(f"unknown cell {name!r}; registered cells: {', '.join(sorted(CELLS))}")
    return CELLS[name](input_size, hidden_size, **options)


__all__ = [
    "ALRNNCell",
    "AarenCell",
    "AarenState",
    "CELLS",
    "Cell",
    "DeltaNetCell",
    "DeltaProductCell",
    "ElmanCell",
    "GRUCell",
    "GatedDeltaNetCell",
    "GatedLinearAttentionCell",
    "HiddenState",
    "JordanCell",
    "LRUCell",
    "LRUState",
    "LSTMCell",
    "LSTMState",
    "MLSTMCell",
    "MLSTMState",
    "MatrixState",
    "MinGRUCell",
    "MinLSTMCell",
    "OutputState",
    "ParaGRUCell",
    "ParaLSTMCell",
    "ParaLSTMState",
    "PLRNNCell",
    "S4DCell",
    "S4DState",
    "SLSTMCell",
    "SLSTMState",
    "SelectiveSSMCell",
    "SelectiveState",
    "State",
    "TitansCell",
    "TitansState",
    "make_cell",
]
