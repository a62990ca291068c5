"""The scan strategy's runner for ``"chunkwise"`` cells: test-time training (Titans), chunk by
chunk.

The recurrence, per group (head) ``g`` of a memory of ``W`` weights:

    S_t = eta_t S_{t-1} - theta_t grad_t,    grad_t = G(M_{c(t)}, x_t)
    M_t = rho_t M_{t-1} + S_t                (rho_t = 1 - alpha_t)
    y_t = R(M_t, x_t)

where ``M_{c(t)}`` is the memory at the start of the chunk of ``cell.chunk_size`` steps holding
step t. The gradient is nonlinear in the memory, but within a chunk every gradient is taken at
the same ``M_c``, so a chunk is: all its gradients at once (``chunk_gradients``), then ``S`` and
``M`` at every step of it by the decay matrices ``D[t, s] = prod_{s < i <= t} eta_i`` (and
``rho``), as the chunked linear attention kernels do,

    S_t = E_t S_0 - sum_{s <= t} D^eta[t, s] theta_s grad_s,    E_t = prod_{i <= t} eta_i
    M_t = P_t M_0 + sum_{s <= t} D^rho[t, s] S_s,              P_t = prod_{i <= t} rho_i

and every read-out at once (``chunk_readout``). Chunks run one after another, ``T / C`` steps.

Hooks (shapes with ``G`` groups): ``chunk_size``; ``chunk_initial(state) -> (M, S, M_c (B, G,
W), position (B, 1))``, the steps already taken in the chunk in progress; ``chunk_final(M, S,
M_c, position) -> state``; ``chunk_terms(projected (B, T, P)) -> (log eta, log rho, theta)``,
each ``(B, T, G)``; ``chunk_gradients(M_c (B, G, W), projected (B, C, P)) -> (B, C, G, W)``;
``chunk_readout(memories (B, C, G, W), projected (B, C, P)) -> (B, C, O)``.

Alignment: row b, ``position_b`` steps into its chunk, is shifted right by that many steps so
that chunks line up across rows. Those leading steps hold the state (``eta = rho = 1, theta =
0``): ``S`` stays ``S_0`` and ``M`` grows by ``S_0`` per step, so the row starts from ``M_0 -
position_b S_0``. Steps past a row's length are computed the same way and ignored: its outputs
there are zero and its final state is gathered at its last step, as in the sequential reference.
Implementations: ``chunked`` (``auto``); others are refused with ``StrategyUnsupportedError``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.native import StrategyUnsupportedError


def decay_matrix(log_decay: Tensor) -> tuple[Tensor, Tensor]:
    """``log_decay (B, C, G)`` -> ``D (B, G, C, C)`` with ``D[t, s] = exp(sum_{s < i <= t}
    log_decay_i)`` for ``s <= t`` (zero above the diagonal), and ``E (B, G, C) = exp(sum_{i <=
    t} log_decay_i)``."""
    cumulative = log_decay.cumsum(1).transpose(1, 2)  # (B, G, C)
    difference = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2)  # (B, G, C, C)
    steps = log_decay.shape[1]
    lower = torch.ones(steps, steps, dtype=torch.bool, device=log_decay.device).tril()
    minus_infinity = torch.full((), float("-inf"), dtype=log_decay.dtype, device=log_decay.device)
    return torch.where(lower, difference, minus_infinity).exp(), cumulative.exp()


def apply_decay(decay: Tensor, start: Tensor, values: Tensor, initial: Tensor) -> Tensor:
    """``X_t = start_t X_0 + sum_s decay[t, s] values_s``: ``decay (B, G, C, C)``, ``start (B,
    G, C)``, ``values (B, C, G, W)``, ``X_0 = initial (B, G, W)`` -> ``(B, C, G, W)``."""
    summed = torch.einsum("bgts,bsgw->btgw", decay, values)
    return summed + start.transpose(1, 2).unsqueeze(-1) * initial.unsqueeze(1)


def aligned_steps(lengths: Tensor, offsets: Tensor, steps: int, chunk_size: int) -> Tensor:
    """``(B, A)`` source step of each aligned step (``A`` a multiple of ``chunk_size``):
    ``a - offsets_b``, -1 where row b has no step there (before its start, past its length)."""
    span = int((offsets + lengths).max())
    total = -(-span // chunk_size) * chunk_size
    source = torch.arange(total, device=lengths.device)[None, :] - offsets[:, None]
    inside = (source >= 0) & (source < lengths[:, None])
    return torch.where(inside, source, -1)


def run_chunkwise(
    cell: Cell, inputs: Tensor, state: State, lengths: Tensor | None, implementation: str
) -> tuple[Tensor, State]:
    """Run a ``"chunkwise"`` cell; see the module docstring."""
    if implementation not in ("auto", "chunked"):
        raise StrategyUnsupportedError(
            f"the 'chunkwise' form has the scan implementation chunked (auto: chunked), "
            f"not {implementation!r}"
        )
    batch_size, steps, _ = inputs.shape
    chunk_size = cell.chunk_size
    projected = cell.project_inputs(inputs)  # (B, T, P)
    if lengths is None:
        lengths = torch.full((batch_size,), steps, device=inputs.device)
    lengths = lengths.to(inputs.device)
    memory, momentum, reference, position = cell.chunk_initial(state)
    offsets = position.squeeze(-1).long()  # (B,)
    source = aligned_steps(lengths, offsets, steps, chunk_size)  # (B, A)
    active = (source >= 0).unsqueeze(-1)  # (B, A, 1)
    index = source.clamp(min=0).unsqueeze(-1)
    aligned = projected.gather(1, index.expand(-1, -1, projected.shape[-1]))  # (B, A, P)
    zero = torch.zeros((), dtype=projected.dtype, device=projected.device)
    log_momentum, log_retention, rate = (
        torch.where(active, term, zero) for term in cell.chunk_terms(aligned)
    )
    memory = memory - offsets.to(memory.dtype)[:, None, None] * momentum
    reference = torch.where((offsets == 0)[:, None, None], memory, reference)
    last = offsets + lengths - 1  # (B,) aligned step of each row's last step
    outputs, final = [], (memory, momentum, reference)
    for start in range(0, source.shape[1], chunk_size):
        window = slice(start, start + chunk_size)
        gradients = cell.chunk_gradients(reference, aligned[:, window])  # (B, C, G, W)
        updates = -rate[:, window].unsqueeze(-1) * gradients
        decay, decay_start = decay_matrix(log_momentum[:, window])
        momenta = apply_decay(decay, decay_start, updates, momentum)  # S_t, (B, C, G, W)
        decay, decay_start = decay_matrix(log_retention[:, window])
        memories = apply_decay(decay, decay_start, momenta, memory)  # M_t
        outputs.append(cell.chunk_readout(memories, aligned[:, window]))  # (B, C, O)
        ends_here = ((last >= start) & (last < start + chunk_size))[:, None, None]
        within = (last - start).clamp(0, chunk_size - 1)
        final = (
            torch.where(ends_here, select_steps(memories, within), final[0]),
            torch.where(ends_here, select_steps(momenta, within), final[1]),
            torch.where(ends_here, reference, final[2]),
        )
        memory, momentum = memories[:, -1], momenta[:, -1]
        reference = memory
    stacked = torch.cat(outputs, 1)  # (B, A, O)
    back = (torch.arange(steps, device=inputs.device)[None, :] + offsets[:, None]).clamp(
        max=stacked.shape[1] - 1
    )
    result = stacked.gather(1, back.unsqueeze(-1).expand(-1, -1, stacked.shape[-1]))
    valid = torch.arange(steps, device=inputs.device)[None, :, None] < lengths[:, None, None]
    result = torch.where(valid, result, torch.zeros((), dtype=result.dtype))
    final_position = position + lengths.to(position.dtype).unsqueeze(-1)
    return result, cell.chunk_final(*final, final_position)


def select_steps(values: Tensor, steps: Tensor) -> Tensor:
    """``values (B, C, G, W)`` at step ``steps[b]`` of each row: ``(B, G, W)``."""
    index = steps[:, None, None, None].expand(-1, 1, *values.shape[2:])
    return values.gather(1, index).squeeze(1)
