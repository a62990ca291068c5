"""``Recurrent``: any registered cell, any strategy, stacked and bidirectional."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from rnnkit.cells import CELLS, Cell, State, make_cell
from rnnkit.cells.base import check_positive_int, check_probability
from rnnkit.nn.packing import repack, unpack
from rnnkit.nn.stack import reverse_padded, run_stack, step_stack
from rnnkit.strategies import Strategy, choose, make_strategy, strategy_name
from rnnkit.strategies.validation import check_lengths, check_resets


class Recurrent(nn.Module):
    """A stack of recurrent cells run by a named strategy.

    Args:
        cell: a registered cell name (``rnnkit.cells.CELLS``), a Cell class, or a Cell instance
            (an instance only for one layer in one direction).
        input_size: features D of the inputs.
        hidden_size: hidden size H of every cell.
        num_layers: cells stacked, each reading the outputs of the one below.
        bias: whether cells have biases.
        batch_first: inputs and outputs ``(B, T, D)`` when True, else ``(T, B, D)``.
        dropout: dropout on the outputs of every layer but the last, in training.
        bidirectional: each layer also runs a second cell over the reversed sequences.
        strategy: a name in ``rnnkit.strategies.STRATEGIES`` (each cell gets a fresh object of
            it) or a strategy object such as ``NewtonStrategy(tolerance=1e-6)`` (copied per
            cell, so each cell keeps its own diagnostics, ``strategy_reports()``); ``"auto"``
            picks per cell, and ``describe_strategy()`` prints what it picks.
        strategy_options: options of a named strategy (``{"tolerance": 1e-6}``).
        **cell_options: passed to the cell's constructor (``proj_size``, ``layer_norm``, ...).

    States are a tuple of one NamedTuple per layer and direction, ordered
    ``(layer0, layer0_reverse, layer1, ...)`` as torch orders ``h_n``.
    """

    def __init__(
        self,
        cell: str | type[Cell] | Cell,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        strategy: str | Strategy = "auto",
        strategy_options: dict | None = None,
        **cell_options,
    ) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        check_probability("dropout", dropout)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.num_directions = 2 if bidirectional else 1
        self.strategy = strategy if isinstance(strategy, str) else strategy_name(strategy)
        if bidirectional and getattr(strategy, "splits_time_across_ranks", False):
            raise ValueError(
                f"strategy: {self.strategy} splits the time axis over ranks in rank order and "
                "cannot run a bidirectional layer's reverse direction; expected "
                "bidirectional=False, got True"
            )
        self.cells = nn.ModuleList(
            _build_cells(
                cell, input_size, hidden_size, num_layers, self.num_directions, bias, cell_options
            )
        )
        self.strategies: list[Strategy] = per_cell_strategies(
            strategy, strategy_options or {}, len(self.cells)
        )

    @property
    def output_size(self) -> int:
        """Features of the outputs: directions times the last layer's output size."""
        return self.num_directions * self.layer_cells()[-1].output_size

    def layer_cells(self) -> list[Cell]:
        """The cells of ``self.cells``, ordered ``[layer0, layer0_reverse, layer1, ...]``."""
        cells: list[Cell] = []
        for cell in self.cells:
            assert isinstance(cell, Cell)  # _build_cells builds nothing else
            cells.append(cell)
        return cells

    def strategy_reports(self) -> list[list]:
        """Each cell's strategy reports (``NewtonReport``s; empty for strategies without)."""
        return [list(getattr(strategy, "reports", ())) for strategy in self.strategies]

    def describe_strategy(self) -> str:
        """Which strategy runs each cell now, and why (``auto`` depends on the cell and mode)."""
        lines = []
        for index, cell in enumerate(self.layer_cells()):
            layer, direction = divmod(index, self.num_directions)
            where = f"layer {layer}" + (" reverse" if direction else "")
            if self.strategy == "auto":
                name, reason = choose(cell)
                lines.append(f"{where}: auto -> {name} ({reason})")
            else:
                lines.append(f"{where}: {strategy_name(self.strategies[index])}")
        return "\n".join(lines)

    def forward(
        self,
        inputs: Tensor | PackedSequence,
        state: Sequence[State] | None = None,
        lengths: Tensor | Sequence[int] | None = None,
        resets: Tensor | None = None,
    ) -> tuple[Tensor | PackedSequence, tuple[State, ...]]:
        """``inputs (B, T, D)`` (or ``(T, B, D)``, or a PackedSequence) -> outputs
        ``(B, T, directions * O)`` and the final states.

        ``resets``: booleans ``(B, T)`` (``(T, B)`` when not batch_first, also for a
        PackedSequence, laid out as its padded form), True where a sequence restarts from the
        zero state before that step (an episode or document boundary); ``state`` starts each
        direction's first segment only, so chunks run with the carried state equal one run.
        Every layer and direction sees the segments separately: the reverse direction restarts
        at the same boundaries in reversed time.
        """
        packed = inputs if isinstance(inputs, PackedSequence) else None
        if isinstance(inputs, PackedSequence):
            if lengths is not None:
                raise ValueError(
                    "lengths must be None when inputs is a PackedSequence (it carries its "
                    f"own), got {type(lengths).__name__}"
                )
            padded, lengths = unpack(inputs)
        elif not self.batch_first and isinstance(inputs, Tensor):
            padded = inputs.transpose(0, 1)
        else:
            padded = inputs
        if state is not None and len(state) != len(self.cells):
            raise ValueError(
                f"state must hold one state per layer and direction ({len(self.cells)}), "
                f"got {len(state)}"
            )
        strategies = self.strategies
        if resets is not None:
            resets = self._batch_first_resets(resets, padded)
            strategies = with_resets(strategies, resets, lengths, self.num_directions)
        outputs, final_states = run_stack(
            self.layer_cells(),
            self.num_directions,
            padded,
            state,
            lengths,
            strategies,
            self.dropout,
            self.training,
        )
        if packed is not None:
            assert isinstance(lengths, Tensor)  # from unpack(inputs)
            return repack(outputs, lengths, packed), final_states
        if not self.batch_first:
            outputs = outputs.transpose(0, 1)
        return outputs, final_states

    def _batch_first_resets(self, resets: Tensor, padded: Tensor) -> Tensor:
        """``resets`` checked against ``padded (B, T, D)``, as ``(B, T)``."""
        batch_size, steps = padded.shape[:2]
        if self.batch_first or not isinstance(resets, Tensor):
            return check_resets(resets, batch_size, steps)
        if tuple(resets.shape) != (steps, batch_size):
            raise ValueError(
                f"resets must have shape (time, batch) = ({steps}, {batch_size}) with "
                f"batch_first=False, got shape {tuple(resets.shape)}"
            )
        return check_resets(resets.transpose(0, 1), batch_size, steps)

    def step(
        self, inputs: Tensor, state: Sequence[State] | None = None
    ) -> tuple[Tensor, tuple[State, ...]]:
        """One time step for decoding: ``x_t (B, D)`` -> ``y_t (B, O)`` and the new states.

        Equal to ``forward`` over the sequence one step at a time. ``state=None`` starts a
        sequence: initial states, and each cell draws its per-sequence masks
        (``begin_sequence``). Unidirectional layers only: a reverse direction needs the future.
        """
        if self.bidirectional:
            raise ValueError("step needs a unidirectional layer (bidirectional=False)")
        if inputs.dim() != 2 or inputs.shape[-1] != self.input_size:
            raise ValueError(
                f"inputs must have shape (B, {self.input_size}), got {tuple(inputs.shape)}"
            )
        if state is not None and len(state) != len(self.cells):
            raise ValueError(
                f"state must hold one state per layer ({len(self.cells)}), got {len(state)}"
            )
        return step_stack(self.layer_cells(), inputs, state, self.dropout, self.training)

    def extra_repr(self) -> str:
        return (
            f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
            f"dropout={self.dropout}, batch_first={self.batch_first}, strategy={self.strategy!r}"
        )


def _build_cells(
    cell: str | type[Cell] | Cell,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    num_directions: int,
    bias: bool,
    options: dict,
) -> list[Cell]:
    if isinstance(cell, Cell):
        if num_layers != 1 or num_directions != 1 or options:
            raise ValueError(
                "a Cell instance builds one layer in one direction without cell options; pass "
                "the cell's name or class for num_layers > 1, bidirectional or options"
            )
        if (cell.input_size, cell.hidden_size) != (input_size, hidden_size):
            raise ValueError(
                f"cell has input_size={cell.input_size}, hidden_size={cell.hidden_size}; "
                f"expected input_size={input_size}, hidden_size={hidden_size}"
            )
        return [cell]
    cell_options = {"bias": bias, **options}  # every registered cell takes bias
    if isinstance(cell, str):

        def factory(size: int) -> Cell:
            return make_cell(cell, size, hidden_size, **cell_options)
    elif isinstance(cell, type) and issubclass(cell, Cell):

        def factory(size: int) -> Cell:
            return cell(size, hidden_size, **cell_options)
    else:
        raise TypeError(
            f"cell must be a name in {sorted(CELLS)}, a Cell class or a Cell instance, "
            f"got {type(cell).__name__}"
        )
    cells: list[Cell] = []
    for layer in range(num_layers):
        for _ in range(num_directions):
            size = input_size if layer == 0 else num_directions * cells[0].output_size
            cells.append(factory(size))
    return cells


def reversed_resets(resets: Tensor, lengths: Tensor | None) -> Tensor:
    """The boundaries of ``resets (B, T)`` in each sequence reversed within its length.

    A reset at step t is a boundary between t - 1 and t; reversed, the sequence restarts at the
    reversed position of t - 1.
    """
    ends = torch.zeros_like(resets)  # True at the last step of a segment that is followed by one
    ends[:, :-1] = resets[:, 1:]
    return reverse_padded(ends.unsqueeze(-1), lengths).squeeze(-1)


def with_resets(
    strategies: Sequence[Strategy],
    resets: Tensor,
    lengths: Tensor | Sequence[int] | None,
    num_directions: int,
) -> list[Strategy]:
    """Each cell's strategy bound to its resets: ``resets (B, T)`` in the forward direction,
    ``reversed_resets`` in the reverse one (cells ordered ``[layer0, layer0_reverse, ...]``)."""
    if lengths is not None:
        lengths = check_lengths(lengths, resets.shape[0], resets.shape[1])
    backward = reversed_resets(resets, lengths) if num_directions == 2 else resets
    return [
        partial(strategy, resets=backward if index % num_directions else resets)
        for index, strategy in enumerate(strategies)
    ]


def per_cell_strategies(strategy: str | Strategy, options: dict, count: int) -> list[Strategy]:
    """One strategy object per cell: fresh ones for a name, copies of an object."""
    if isinstance(strategy, str):
        return [make_strategy(strategy, **options) for _ in range(count)]
    if options:
        raise ValueError("strategy_options must be empty when strategy is a strategy object")
    make_strategy(strategy)  # checks it is a strategy
    return [strategy] + [copy.deepcopy(strategy) for _ in range(count - 1)]
