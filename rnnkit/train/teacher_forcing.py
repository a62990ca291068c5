"""Generalized teacher forcing (GTF) for training recurrent models of dynamical systems.

Hess, Monfared, Brenner, Durstewitz 2023, "Generalized Teacher Forcing for Learning Chaotic
Dynamics", ICML, https://arxiv.org/abs/2306.04406 (after Doya 1992). Each step the model's state
is pulled towards the state inferred from the data,

    z_t     = F(z~_{t-1}, s_t)                     (the prediction, scored against x_t)
    z~_t    = (1 - alpha) z_t + alpha z^_t          (what the next step reads)

with z^_t the data-inferred state. The observation model is the identity on the first N latent
units (x_t = z_t[:N], the "identity teacher forcing" of the DurstewitzLab code), so only those
units are forced, z^_t[:N] = x_t, and the other units run free (the reference ``GTFRecur``).
alpha = 1 is pure (identity) teacher forcing, alpha = 0 a free-running rollout. The gradient
through the mix is scaled by (1 - alpha) per step, which is how GTF bounds exploding gradients
on chaotic systems. With a forcing ``interval`` tau > 1 the state is mixed only after every
tau-th prediction and runs free in between: with alpha = 1 the sparse identity teacher forcing
of Mikhaeil et al. 2022 / Brenner et al. 2022 that the reference ALRNN-DSR code trains the
AL-RNN with (``teacher_forcing_interval`` = 16, ``src/training/tfrecur.jl``: forced when
``(t - 1) % tau == 0``, i.e. after predictions tau, 2 tau, ...).

The forcing acts on the state field the cell outputs (``cell.output_field``: z for the PLRNN,
h for Elman, GRU or LSTM), so any registered cell with an output field can be trained this way.
``DynamicsModel`` is such a model: one recurrent layer, the identity observation of its first N
units, and the initial state z_0 = (x_0, L x_0) with a learned ``L (M - N, N)`` (the reference
code's ``init_state``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnkit.cells.base import Cell, State
from rnnkit.models.recurrent_config import RecurrentConfig


def forced_field(cell: Cell) -> int:
    """The index of the state field GTF forces: the one ``y_t`` is (``output_field``)."""
    if cell.output_field is None:
        raise ValueError(
            f"cell {type(cell).__name__} has no output field (y_t is not a field of its state), "
            "so generalized teacher forcing cannot force it; use a cell such as plrnn, alrnn, "
            "elman, gru or lstm"
        )
    return list(cell.state_type._fields).index(cell.output_field)


def force(state: State, field: int, observed: Tensor, alpha: float) -> State:
    """``state`` with its first ``N`` units of ``field`` mixed ``(1 - alpha) z + alpha x`` with
    ``observed (B, N)``."""
    values = list(state)
    latent = values[field]
    size = observed.shape[-1]
    mixed = (1 - alpha) * latent[:, :size] + alpha * observed
    values[field] = torch.cat((mixed, latent[:, size:]), -1)
    return type(state)(*values)


def gtf_rollout(
    cell: Cell,
    inputs: Tensor,
    initial_state: State,
    observed: Tensor,
    alpha: float,
    interval: int = 1,
) -> tuple[Tensor, State]:
    """Run ``cell`` over ``inputs (B, T, D)`` from ``initial_state`` with GTF towards
    ``observed (B, T, N)`` (x_1..x_T): returns the predictions ``(B, T, O)`` (the outputs
    before forcing, output t predicts x_t) and the final forced state. The state is forced
    after every ``interval``-th prediction only (x_interval, x_2 interval, ...; 1: every step),
    free in between: sparse teacher forcing."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"teacher forcing alpha must be in [0, 1], got {alpha}")
    if interval < 1:
        raise ValueError(f"teacher forcing interval must be at least 1, got {interval}")
    if observed.shape[:2] != inputs.shape[:2]:
        raise ValueError(
            f"observed {tuple(observed.shape)} and inputs {tuple(inputs.shape)} differ in (B, T)"
        )
    field = forced_field(cell)
    cell.begin_sequence(inputs.shape[0], device=inputs.device, dtype=inputs.dtype)
    projected = cell.project_inputs(inputs)  # (B, T, P)
    state = initial_state
    predictions = []
    steps = zip(projected.unbind(1), observed.unbind(1), strict=True)
    for step, (projected_step, observed_step) in enumerate(steps, 1):
        output, state = cell.recur(projected_step, state)
        predictions.append(output)
        if alpha and step % interval == 0:
            state = force(state, field, observed_step, alpha)
    return torch.stack(predictions, 1), state


def adaptive_alpha(cell: Cell, projected: Tensor, states: Tensor) -> float:
    """Hess et al. 2023's adaptive alpha (the reference's "product upper bound" rule):
    ``alpha = max(0, 1 - 1 / G)``, G the largest over the batch of the geometric mean along time
    of the spectral norms ``||d s_t / d s_{t-1}||_2``, the Jacobians taken at the data-inferred
    states ``states (B, T, S)`` (flattened state layout) with ``projected (B, T, P)``. Cells
    whose state is one field (z or h)."""
    if len(cell.state_sizes()) != 1:
        raise ValueError(
            f"adaptive teacher forcing needs a cell whose state is one field; "
            f"{type(cell).__name__} has {len(cell.state_sizes())}"
        )

    def step(projected_step: Tensor, state: Tensor) -> Tensor:
        new_state = cell.recur(projected_step[None], cell.unflatten_state(state[None]))[1]
        return cell.flatten_state(new_state)[0]

    with torch.no_grad():
        jacobian = torch.func.vmap(torch.func.jacrev(step, argnums=1))
        jacobians = jacobian(projected.flatten(0, 1), states.flatten(0, 1))  # (B T, S, S)
        norms = torch.linalg.matrix_norm(jacobians, ord=2).reshape(states.shape[:2])
        largest = float(norms.clamp_min(1e-12).log().mean(1).exp().max())
    return max(0.0, 1.0 - 1.0 / largest)


class DynamicsModel(nn.Module):
    """A one-layer recurrent model observed through its first ``observed_size`` units."""

    def __init__(self, config: RecurrentConfig, observed_size: int) -> None:
        super().__init__()
        if config.hidden_size < observed_size:
            raise ValueError(
                f"model.recurrent.hidden_size ({config.hidden_size}) must be at least the "
                f"observed dimensions ({observed_size})"
            )
        self.observed_size = observed_size
        self.layer = config.build(1)  # inputs: one zero feature (the systems are autonomous)
        self.field = forced_field(self.cell)
        self.hidden_from_observed = nn.Linear(
            observed_size, config.hidden_size - observed_size, bias=False
        )

    @property
    def cell(self) -> Cell:
        """The layer's one cell (not registered twice, so the weights are saved once)."""
        return self.layer.layer_cells()[0]

    def initial_state(self, observed: Tensor) -> Any:
        """z_0 = (x_0, L x_0) for ``observed (B, N)`` (other state fields zero)."""
        state = list(self.cell.initial_state(observed.shape[0], dtype=observed.dtype))
        state[self.field] = torch.cat((observed, self.hidden_from_observed(observed)), -1)
        return self.cell.state_type(*state)

    def adaptive_alpha(self, observed: Tensor) -> float:
        """``adaptive_alpha`` at the data-inferred states (x_t, L x_t) of ``observed (B, T, N)``."""
        inferred = self.initial_state(observed.flatten(0, 1))[self.field]
        states = inferred.reshape(*observed.shape[:2], -1)  # (B, T, M)
        projected = self.cell.project_inputs(self.zeros(observed, observed.shape[1]))
        return adaptive_alpha(self.cell, projected, states)

    def zeros(self, like: Tensor, steps: int) -> Tensor:
        """The ``(B, steps, 1)`` zero inputs of an autonomous run."""
        return like.new_zeros(like.shape[0], steps, 1)

    def forced(self, observed: Tensor, alpha: float, interval: int = 1) -> tuple[Tensor, Any]:
        """GTF over ``observed (B, T + 1, N)`` from x_0, forcing every ``interval`` steps:
        predictions ``(B, T, N)`` of x_1..x_T and the final state."""
        state = self.initial_state(observed[:, 0])
        targets = observed[:, 1:]
        outputs, final = gtf_rollout(
            self.cell, self.zeros(targets, targets.shape[1]), state, targets, alpha, interval
        )
        return outputs[..., : self.observed_size], final

    def free_run(self, state: Any, steps: int) -> Tensor:
        """``(B, steps, N)`` generated from ``state`` under the layer's strategy."""
        field = state[self.field]
        outputs, _ = self.layer(self.zeros(field, steps), [state])
        assert isinstance(outputs, Tensor)
        return outputs[..., : self.observed_size]

    def warmed_state(self, prefix: Tensor, alpha: float, interval: int = 1) -> Any:
        """The state after GTF with ``alpha`` every ``interval`` steps through ``prefix
        (B, W + 1, N)`` (z_0 when W = 0), forced on its last step whatever the interval (so
        the free run starts from the data).

        Use the forcing the model trained with: a model trained with alpha = 0.1 every step
        never saw its observed units pinned to the data, and under alpha = 1 its unobserved
        units can run off (measured: to 1e2 in 20 steps, where alpha = 0.1 kept them near 0.2)."""
        if prefix.shape[1] == 1:
            return self.initial_state(prefix[:, 0])
        _, state = self.forced(prefix, alpha, interval)
        if (prefix.shape[1] - 1) % interval:
            state = force(state, self.field, prefix[:, -1], alpha)
        return state

    def generate(self, prefix: Tensor, steps: int, alpha: float, interval: int = 1) -> Tensor:
        """``(B, steps, N)``: the data ``prefix (B, W + 1, N)``, through which the state is
        forced with ``alpha`` every ``interval`` steps (a warm-up that settles the unobserved
        units), then a free run of ``steps - W - 1``."""
        state = self.warmed_state(prefix, alpha, interval)
        generated = self.free_run(state, steps - prefix.shape[1])
        return torch.cat((prefix, generated), 1)
