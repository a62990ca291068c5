"""torch-compatible layers (drop-ins for torch.nn) and ``Recurrent`` (any cell, any strategy)."""

from rnnkit.nn.recurrent import Recurrent
from rnnkit.nn.torch_cells import GRUCell, LSTMCell, RNNCell
from rnnkit.nn.torch_compat import GRU, LSTM, RNN

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "Recurrent"]
