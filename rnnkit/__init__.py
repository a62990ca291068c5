"""rnnkit: recurrent neural networks for sequence learning on PyTorch.

- ``rnnkit.cells``: what recurs (``CELLS`` registry of names).
- ``rnnkit.strategies``: how a cell runs over time (``STRATEGIES`` registry of names).
- ``rnnkit.nn``: drop-ins for torch.nn's LSTM, GRU and RNN, and ``Recurrent`` for any cell.
"""

from rnnkit.cells import CELLS, Cell, make_cell
from rnnkit.nn import Recurrent
from rnnkit.strategies import STRATEGIES, choose, get_strategy

__version__ = "0.1.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)

__all__ = ["CELLS", "STRATEGIES", "Cell", "Recurrent", "choose", "get_strategy", "make_cell"]
