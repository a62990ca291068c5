"""The scan strategy's runner for ``"chunkwise"`` cells: test-time training (Titans), chunk by
chunk, in the dual form.

The recurrence, per group (head) ``g`` of a memory made of weight matrices ``M^i`` (``rows_i x
columns_i``, flattened row-major and concatenated to ``W`` numbers):

    S_t = eta_t S_{t-1} - theta_t grad_t,    grad_t^i = l_t^i (r_t^i)^T  at M_{c(t)}
    M_t = rho_t M_{t-1} + S_t                (rho_t = 1 - alpha_t)
    y_t = R(M_t, x_t)

where ``M_{c(t)}`` is the memory at the start of the chunk of ``cell.chunk_size`` steps holding
step t. The gradient is nonlinear in the memory, but within a chunk every gradient is taken at
the same ``M_c``, and each is one outer product per weight matrix. With the decay matrices
``D[t, s] = prod_{s < i <= t} eta_i`` (and ``D^rho`` of ``rho``), ``E_t = prod_{i <= t} eta_i``
and ``P_t = prod_{i <= t} rho_i`` of the chunk (Titans, Section 3.2, eqs. 16 to 18),

    S_t = E_t S_0 - sum_{s <= t} B[t, s] l_s r_s^T,    B = D^eta diag(theta)
    M_t = P_t M_0 + F_t S_0 - sum_{s <= t} A[t, s] l_s r_s^T,    A = D^rho B,  F = D^rho E

so a read ``M_t^i x_t`` for every step of the chunk is, without ever forming ``M_t`` (the dual
form of Sun et al. 2024, "Learning to (Learn at Test Time)", https://arxiv.org/abs/2407.04620,
Section 2.5):

    M_t^i x_t = P_t M_0^i x_t + F_t S_0^i x_t - sum_s (A ∘ (X R^T))[t, s] l_s

matrix products of ``C x C`` masked scores. Only the memory at each chunk's end is formed (one
``rows x C`` by ``C x columns`` product per matrix). Chunks run one after another.

Hooks (``ChunkwiseCell``; shapes with ``G`` groups, a memory as the list of its matrices
``(B, G, rows_i, columns_i)``): ``chunk_size``; ``chunk_shapes()`` the ``(rows, columns)`` of
each weight matrix; ``chunk_initial(state) -> (M, S, M_c (B, G, W), position (B, 1))``, the
steps already taken in the chunk in progress; ``chunk_final(M, S, M_c, position) -> state``;
``chunk_terms(projected (B, T, P)) -> (log eta, log rho, theta)``, each ``(B, T, G)``;
``chunk_gradient_factors(M_c matrices, projected (B, C, P)) -> [(l (B, G, C, rows_i), r (B, G,
C, columns_i))]``; ``chunk_read(multiply, projected (B, C, P)) -> (B, C, O)`` where
``multiply(i, x (B, G, C, columns_i)) -> (B, G, C, rows_i)`` is ``M_t^i x_t``.

Alignment: row b, ``position_b`` steps into its chunk, is shifted right by that many steps so
that chunks line up across rows. Those leading steps hold the state (``eta = rho = 1, theta =
0``): ``S`` stays ``S_0`` and ``M`` grows by ``S_0`` per step, so the row starts from ``M_0 -
position_b S_0``. Steps past a row's length are computed the same way and ignored: its outputs
there are zero and its final state is the memory at its last step, as in the sequential
reference. Implementations: ``chunked`` (``auto``); others are refused with
``StrategyUnsupportedError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

import torch
from torch import Tensor

from rnnkit.cells.base import Cell, State
from rnnkit.strategies.native import StrategyUnsupportedError

Factors = list[tuple[Tensor, Tensor]]


class ChunkwiseCell(Protocol):
    """The hooks of the chunkwise form (module docstring)."""

    chunk_size: int

    def chunk_shapes(self) -> list[tuple[int, int]]: ...
    def chunk_initial(self, state: State) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...
    def chunk_final(
        self, memory: Tensor, momentum: Tensor, reference: Tensor, position: Tensor
    ) -> State: ...
    def chunk_terms(self, projected: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...
    def chunk_gradient_factors(self, reference: list[Tensor], projected: Tensor) -> Factors: ...
    def chunk_read(
        self, multiply: Callable[[int, Tensor], Tensor], projected: Tensor
    ) -> Tensor: ...


def decay_matrix(log_decay: Tensor) -> tuple[Tensor, Tensor]:
    """``log_decay (..., C)`` -> ``D (..., C, C)`` with ``D[t, s] = exp(sum_{s < i <= t}
    log_decay_i)`` for ``s <= t`` (zero above the diagonal), and ``E (..., C) = exp(sum_{i <=
    t} log_decay_i)``."""
    cumulative = log_decay.cumsum(-1)
    difference = cumulative.unsqueeze(-1) - cumulative.unsqueeze(-2)  # (..., C, C)
    steps = log_decay.shape[-1]
    lower = torch.ones(steps, steps, dtype=torch.bool, device=log_decay.device).tril()
    minus_infinity = torch.full((), float("-inf"), dtype=log_decay.dtype, device=log_decay.device)
    return torch.where(lower, difference, minus_infinity).exp(), cumulative.exp()


class ChunkCoefficients:
    """``A, B (B, G, C, C)`` and ``P, F, E (B, G, C)`` of the module docstring, one tuple per
    chunk (``chunks``), from ``log eta, log rho, theta (B, G, N, C)`` of all ``N`` chunks."""

    def __init__(self, log_momentum: Tensor, log_retention: Tensor, rate: Tensor) -> None:
        momentum_decay, momentum_start = decay_matrix(log_momentum)  # D^eta, E
        retention_decay, retention_start = decay_matrix(log_retention)  # D^rho, P
        momentum_weights = momentum_decay * rate.unsqueeze(-2)  # B
        memory_weights = retention_decay @ momentum_weights  # A
        memory_momentum = (retention_decay @ momentum_start.unsqueeze(-1)).squeeze(-1)  # F
        # unbound once: indexing chunk n in the loop would cost a full-size zero gradient each
        self.chunks = list(
            zip(
                *(
                    tensor.unbind(2)
                    for tensor in (
                        memory_weights,
                        momentum_weights,
                        retention_start,
                        memory_momentum,
                        momentum_start,
                    )
                ),
                strict=True,
            )
        )


def rows_at(coefficients: tuple[Tensor, ...], stop: Tensor) -> tuple[Tensor, ...]:
    """A chunk's ``A, B (B, G, C, C)``, ``P, F, E (B, G, C)`` at step ``stop (B,)``: ``A, B
    (B, G, C)``, ``P, F, E (B, G)``."""
    index = stop.view(-1, 1, 1).expand(-1, coefficients[0].shape[1], 1)  # (B, G, 1)
    size = coefficients[0].shape[-1]
    matrices = [
        matrix.gather(2, index.unsqueeze(-1).expand(-1, -1, 1, size)).squeeze(2)
        for matrix in coefficients[:2]
    ]
    return (*matrices, *(vector.gather(2, index).squeeze(2) for vector in coefficients[2:]))


def split_matrices(weights: Tensor, shapes: list[tuple[int, int]]) -> list[Tensor]:
    """``(B, G, W)`` -> the matrices ``(B, G, rows, columns)`` of ``shapes``."""
    sizes = [rows * columns for rows, columns in shapes]
    blocks = weights.split(sizes, -1)
    return [block.unflatten(-1, shape) for block, shape in zip(blocks, shapes, strict=True)]


def flatten_matrices(matrices: list[Tensor]) -> Tensor:
    """The inverse of ``split_matrices``: ``(B, G, W)``."""
    return torch.cat([matrix.flatten(-2) for matrix in matrices], -1)


def read_chunk(
    memory: list[Tensor],
    momentum: list[Tensor],
    factors: Factors,
    coefficients: tuple[Tensor, Tensor, Tensor],
) -> Callable[[int, Tensor], Tensor]:
    """``multiply(i, x)``: ``M_t^i x_t`` for every step of a chunk, from the matrices of
    ``M_0, S_0``, the factors and ``A (B, G, C, C), P, F (B, G, C)`` of the chunk."""
    weights, start, momentum_start = coefficients

    def multiply(index: int, vectors: Tensor) -> Tensor:  # (B, G, C, columns)
        left, right = factors[index]  # (B, G, C, rows), (B, G, C, columns)
        initial = vectors @ memory[index].transpose(-1, -2)  # (B, G, C, rows)
        carried = vectors @ momentum[index].transpose(-1, -2)
        base = torch.addcmul(start.unsqueeze(-1) * initial, momentum_start.unsqueeze(-1), carried)
        scores = weights * (vectors @ right.transpose(-1, -2))  # (B, G, C, C)
        read = torch.baddbmm(base.flatten(0, 1), scores.flatten(0, 1), left.flatten(0, 1), alpha=-1)
        return read.unflatten(0, base.shape[:2])

    return multiply


def chunk_end(
    initial: list[Tensor],
    weights: Tensor,
    start: Tensor,
    factors: Factors,
    carried: tuple[list[Tensor], Tensor] | None = None,
) -> list[Tensor]:
    """``start X_0 (+ F Y_0) - sum_s weights_s l_s r_s^T`` per matrix ``(B, G, rows, columns)``
    of ``X_0``, from ``weights (B, G, C)``, ``start (B, G)`` and ``carried = (Y_0's matrices,
    F (B, G))`` (the ``F S_0`` term of ``M``)."""
    ends = []
    for index, (matrix, (left, right)) in enumerate(zip(initial, factors, strict=True)):
        base = start[..., None, None] * matrix
        if carried is not None:
            base = torch.addcmul(base, carried[1][..., None, None], carried[0][index])
        scaled = (weights.unsqueeze(-1) * left).transpose(-1, -2)  # (B, G, rows, C)
        end = torch.baddbmm(base.flatten(0, 1), scaled.flatten(0, 1), right.flatten(0, 1), alpha=-1)
        ends.append(end.unflatten(0, base.shape[:2]))
    return ends


def run_chunkwise(
    cell: Cell, inputs: Tensor, state: State, lengths: Tensor | None, implementation: str
) -> tuple[Tensor, State]:
    """Run a ``"chunkwise"`` cell; see the module docstring."""
    if implementation not in ("auto", "chunked"):
        raise StrategyUnsupportedError(
            f"the 'chunkwise' form has the scan implementation chunked (auto: chunked), "
            f"not {implementation!r}"
        )
    hooks = cast(ChunkwiseCell, cell)
    batch_size, steps, _ = inputs.shape
    chunk_size, shapes = hooks.chunk_size, hooks.chunk_shapes()
    projected = cell.project_inputs(inputs)  # (B, T, P)
    if lengths is None:
        lengths = torch.full((batch_size,), steps, device=inputs.device)
    lengths = lengths.to(inputs.device)
    memory, momentum, reference, position = hooks.chunk_initial(state)
    offsets = position.squeeze(-1).long()  # (B,)
    aligned, coefficients = align(hooks, projected, lengths, offsets)  # (B, A, P)
    memory = memory - offsets.to(memory.dtype)[:, None, None] * momentum
    reference = torch.where((offsets == 0)[:, None, None], memory, reference)
    last = offsets + lengths - 1  # (B,) aligned step of each row's last step
    outputs: list[Tensor] = []
    final = [memory, momentum, reference]
    memories, momenta = split_matrices(memory, shapes), split_matrices(momentum, shapes)
    references = split_matrices(reference, shapes)
    # split once: slicing chunk n in the loop would cost a full-size zero gradient each
    windows = aligned.split(chunk_size, 1)  # each (B, C, P)
    for chunk, window in enumerate(windows):
        start = chunk * chunk_size
        factors = hooks.chunk_gradient_factors(references, window)
        # carry the memory at the chunk's end, or at the row's last step if it ends here
        ends_here = (last >= start) & (last < start + chunk_size)
        stop = torch.where(ends_here, last - start, chunk_size - 1)  # (B,)
        this_chunk = coefficients.chunks[chunk]
        weights, momentum_weights, *starts = rows_at(this_chunk, stop)
        pick = (this_chunk[0], this_chunk[2], this_chunk[3])  # A, P, F
        outputs.append(hooks.chunk_read(read_chunk(memories, momenta, factors, pick), window))
        new_memories = chunk_end(memories, weights, starts[0], factors, (momenta, starts[1]))
        momenta = chunk_end(momenta, momentum_weights, starts[2], factors)
        if torch.compiler.is_compiling() or bool(ends_here.any()):
            here = ends_here[:, None, None]
            now = [flatten_matrices(matrices) for matrices in (new_memories, momenta, references)]
            final = [torch.where(here, new, old) for new, old in zip(now, final, strict=True)]
        memories = references = new_memories
    result = unaligned(torch.cat(outputs, 1), offsets, lengths, steps)
    final_position = position + lengths.to(position.dtype).unsqueeze(-1)
    return result, hooks.chunk_final(final[0], final[1], final[2], final_position)


def unaligned(stacked: Tensor, offsets: Tensor, lengths: Tensor, steps: int) -> Tensor:
    """The outputs of each row's own steps from the aligned ``stacked (B, A, O)``: ``(B, T,
    O)``, zero past each row's length."""
    back = (torch.arange(steps, device=stacked.device)[None, :] + offsets[:, None]).clamp(
        max=stacked.shape[1] - 1
    )
    result = stacked.gather(1, back.unsqueeze(-1).expand(-1, -1, stacked.shape[-1]))
    valid = torch.arange(steps, device=stacked.device)[None, :, None] < lengths[:, None, None]
    return torch.where(valid, result, torch.zeros((), dtype=result.dtype))


def align(
    hooks: ChunkwiseCell, projected: Tensor, lengths: Tensor, offsets: Tensor
) -> tuple[Tensor, ChunkCoefficients]:
    """``projected (B, T, P)`` with row b shifted right by ``offsets[b]`` steps and padded to
    whole chunks, ``(B, A, P)``, and the coefficients of every chunk, ``eta = rho = 1, theta =
    0`` at the steps a row does not have."""
    chunk_size = hooks.chunk_size
    source = aligned_steps(lengths, offsets, chunk_size, projected.shape[1])  # (B, A)
    active = (source >= 0).unsqueeze(-1)  # (B, A, 1)
    index = source.clamp(min=0).unsqueeze(-1)
    aligned = projected.gather(1, index.expand(-1, -1, projected.shape[-1]))  # (B, A, P)
    zero = torch.zeros((), dtype=projected.dtype, device=projected.device)
    coefficients = ChunkCoefficients(
        *(  # each (B, G, N, C): N chunks of C steps
            torch.where(active, term, zero).transpose(1, 2).unflatten(-1, (-1, chunk_size))
            for term in hooks.chunk_terms(aligned)
        )
    )
    return aligned, coefficients


def aligned_steps(
    lengths: Tensor, offsets: Tensor, chunk_size: int, steps: int | None = None
) -> Tensor:
    """``(B, A)`` source step of each aligned step (``A`` a multiple of ``chunk_size``):
    ``a - offsets_b``, -1 where row b has no step there (before its start, past its length)."""
    # under torch.compile the bound (offsets < chunk_size, lengths <= steps) instead of the host
    # value: the extra steps are inactive in every row and change no number
    if torch.compiler.is_compiling() and steps is not None:
        span = chunk_size - 1 + steps
    else:
        span = int((offsets + lengths).max())
    total = -(-span // chunk_size) * chunk_size
    source = torch.arange(total, device=lengths.device)[None, :] - offsets[:, None]
    inside = (source >= 0) & (source < lengths[:, None])
    return torch.where(inside, source, -1)
