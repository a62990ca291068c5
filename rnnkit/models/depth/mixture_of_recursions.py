"""Mixture-of-Recursions: a router gives each token its own number of passes through a shared
recursion unit.

Mixture-of-Recursions (Bae et al. 2025, https://arxiv.org/abs/2507.10524). The sequence model's
blocks (attention mixers) form one shared unit ``F``, applied up to ``N_r = depth.max_steps``
times. With ``H^0`` the embedded inputs ``(B, T, D)`` and ``A^r`` the tokens active at
recursion ``r = 1 .. N_r``:

    H^r_t = H^(r-1)_t + g^r_t (F_r(H^(r-1))_t - H^(r-1)_t)     t in A^r
    H^r_t = H^(r-1)_t                                           otherwise

where ``F_r`` runs the unit with attention restricted to the active tokens: a query at ``t``
attends to the keys ``s <= t`` with ``s in A^r`` (itself always). (We gate the unit's update
rather than its output, so ``g = 1`` is exactly the looped model.) Routing:

- expert-choice (``routing=expert``): at each recursion a router ``g^r_t = sigmoid(theta_r .
  H^(r-1)_t)`` and the top ``k_r = max(1, floor(c_r T))`` tokens of ``A^(r-1)`` go on
  (hierarchical filtering, ``A^r`` within ``A^(r-1)``), with the capacity schedule
  ``c_r = (N_r - r + 1) / N_r`` (3/3, 2/3, 1/3 for 3 recursions). Top-k over the sequence reads
  future tokens, so it is not causal; the paper's two remedies, both here
  (``expert_sampling``):
  ``aux_loss``: the auxiliary loss ``BCE(theta_r . H_t, [t in top-k])`` trains the router
  itself to say 1 for the selected tokens, and decoding keeps a token when ``g^r_t >= 1/2``;
  ``aux_router``: a second linear router ``phi_r`` is trained with that BCE on ``stop_grad(H)``,
  and decoding keeps a token when ``sigmoid(phi_r . H_t) >= 1/2``.
  In training mode the top-k routes; in eval mode the causal rule does.
- token-choice (``routing=token``): one router on the embedded token, ``p_t = softmax(W H^0_t)``
  over ``N_r`` depths; token ``t`` takes ``i_t = argmax p_t`` recursions, the last one gated by
  ``g = p_t,i_t`` (the others by 1), causal by construction. The balancing loss (Switch-style)
  is ``N_r sum_j f_j P_j``, ``f_j`` the fraction of tokens given depth j and ``P_j`` their mean
  probability of j.

The auxiliary losses, times ``auxiliary_weight``, are ``auxiliary_loss()``.

Recursion-wise KV caching: at recursion r only the tokens of ``A^r`` write keys and values to the
cache of depth r (here: every position is stored with an ``active`` flag, which keeps the batch
rectangular), and a token at depth r attends only to that cache, so decoding one token at a time
(``step``) equals the full forward for the same routing (eval mode).

In the sequence model: ``--model.cell=attention --model.depth.recursion=mor
--model.depth.max_steps=3 --model.depth.mixture.routing=token``; in the char-LM
``--model.mixer=attention --model.transformer.depth.recursion=mor``
(``rnnkit.models.transformer_lm``).

Compute per token (``statistics()``, over the real tokens since ``reset_statistics``):
``mean_recursions``; ``flops_per_token``, a proxy: ``2 P`` per token per recursion (P the unit's
matrix parameters) plus ``4 D`` per attended (query, key) pair per block, counted as an
implementation that gathers the active tokens would compute (this one computes every position
and masks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as functional
from torch import Tensor, nn

from rnnkit.models.causal_attention import CausalSelfAttention

ROUTINGS = ("expert", "token")
EXPERT_SAMPLINGS = ("aux_loss", "aux_router")


@dataclass
class MixtureOfRecursionsConfig:
    """Routing of Mixture-of-Recursions (``--model.depth.mixture.*``); ``depth.max_steps`` is
    N_r, the most recursions."""

    routing: str = "expert"
    """``expert`` (top-k tokens go on at each recursion) or ``token`` (a depth per token)."""
    expert_sampling: str = "aux_loss"
    """Causal routing of expert-choice at inference: ``aux_loss`` or ``aux_router``."""
    auxiliary_weight: float = 0.01
    """Weight of the auxiliary loss: expert's BCE, token's balancing loss."""

    def __post_init__(self) -> None:
        """Option checks; errors name the option, the value and what is allowed."""
        if self.routing not in ROUTINGS:
            raise ValueError(
                f"routing: expected one of {', '.join(ROUTINGS)}, got {self.routing!r}"
            )
        if self.expert_sampling not in EXPERT_SAMPLINGS:
            raise ValueError(
                f"expert_sampling: expected one of {', '.join(EXPERT_SAMPLINGS)}, got "
                f"{self.expert_sampling!r}"
            )
        if self.auxiliary_weight < 0:
            raise ValueError(f"auxiliary_weight: expected 0 or more, got {self.auxiliary_weight}")


class RecursionCache(NamedTuple):
    """One block's cache at one recursion depth: rotated keys and values ``(B, heads, S, d)``
    and ``active (B, S)``, whether the position reached this depth (wrote a real entry)."""

    keys: Tensor
    values: Tensor
    active: Tensor


def capacities(max_recursions: int) -> list[float]:
    """The expert-choice capacity schedule ``c_r = (N_r - r + 1) / N_r``, r = 1 .. N_r."""
    return [(max_recursions - step) / max_recursions for step in range(max_recursions)]


def masked_attention(
    attention: CausalSelfAttention, inputs: Tensor, active: Tensor, cache: RecursionCache | None
) -> tuple[Tensor, RecursionCache]:
    """``attention``'s weights over ``inputs (B, T, D)`` after the cached positions, a query
    attending to the earlier keys of active positions and to itself; ``active (B, T)``."""
    length = inputs.shape[1]
    past = 0 if cache is None else cache.keys.shape[2]
    queries, keys, values, positions = attention.rotated_projections(inputs, past)
    key_active = active
    if cache is not None:
        keys = torch.cat((cache.keys, keys), dim=2)  # (B, heads, S + T, d)
        values = torch.cat((cache.values, values), dim=2)
        key_active = torch.cat((cache.active, active), dim=1)  # (B, S + T)
    key_positions = torch.arange(past + length, device=inputs.device)
    causal = key_positions[None, :] <= positions[:, None]  # (T, S + T)
    itself = key_positions[None, :] == positions[:, None]
    allowed = causal & (key_active[:, None, :] | itself)  # (B, T, S + T)
    attended = functional.scaled_dot_product_attention(
        queries, keys, values, attn_mask=allowed[:, None]
    )
    return attention.merge_heads(attended), RecursionCache(keys, values, key_active)


def real_positions(inputs: Tensor, lengths: Tensor | None) -> Tensor:
    """``(B, T)`` bool, True before each sequence's length (all True without ``lengths``)."""
    batch, length = inputs.shape[:2]
    if lengths is None:
        return torch.ones(batch, length, dtype=torch.bool, device=inputs.device)
    lengths = torch.as_tensor(lengths, device=inputs.device)
    return torch.arange(length, device=inputs.device)[None, :] < lengths[:, None]


def run_unit(
    blocks: Sequence[Any], hidden: Tensor, active: Tensor, caches: Sequence[Any] | None
) -> tuple[Tensor, tuple[RecursionCache, ...]]:
    """The shared unit ``F_r``: each pre-norm block (``sequence_model.Block``) with attention
    restricted to ``active``; ``(B, T, D)`` -> ``(B, T, D)`` and each block's cache."""
    new_caches = []
    for index, block in enumerate(blocks):
        mixed, cache = masked_attention(
            block.mixer, block.mixer_norm(hidden), active, None if caches is None else caches[index]
        )
        hidden = hidden + block.dropout(mixed)
        hidden = hidden + block.dropout(block.mlp(block.mlp_norm(hidden)))
        new_caches.append(cache)
    return hidden, tuple(new_caches)


class MixtureOfRecursions(nn.Module):
    """Routes each token through up to ``max_recursions`` passes of the blocks (module
    docstring); the ``DepthRecursion`` protocol of ``rnnkit.models.depth.config``.

    Args:
        config: routing and auxiliary loss.
        model_size: features D.
        max_recursions: N_r.
    """

    def __init__(
        self, config: MixtureOfRecursionsConfig, model_size: int, max_recursions: int
    ) -> None:
        super().__init__()
        self.config = config
        self.max_recursions = max_recursions
        self.capacities = capacities(max_recursions)
        expert = config.routing == "expert"
        self.routers = nn.ModuleList(
            nn.Linear(model_size, 1) for _ in range(max_recursions if expert else 0)
        )
        self.auxiliary_routers = nn.ModuleList(
            nn.Linear(model_size, 1)
            for _ in range(
                max_recursions if expert and config.expert_sampling == "aux_router" else 0
            )
        )
        self.depth_router = nn.Linear(model_size, max_recursions) if not expert else None
        self.last_depths: Tensor | None = None
        """``(B, T)`` recursions each position took in the latest forward (0: padding)."""
        self._auxiliary: Tensor | None = None
        self.reset_statistics()

    def forward(
        self,
        blocks: Sequence[Any],
        inputs: Tensor,
        state: Sequence[Any] | None = None,
        lengths: Tensor | None = None,
    ) -> tuple[Tensor, tuple[tuple[RecursionCache, ...], ...]]:
        """``(B, T, D)`` -> ``(B, T, D)`` and per recursion depth the blocks' caches."""
        for block in blocks:
            if not isinstance(block.mixer, CausalSelfAttention):
                raise ValueError(
                    "depth.recursion: 'mor' expects attention blocks (model.mixer=attention), "
                    f"got a {block.mixer_name} block"
                )
        if state is not None and len(state) != self.max_recursions:
            raise ValueError(
                f"state: expected one entry per recursion ({self.max_recursions}), got {len(state)}"
            )
        real = real_positions(inputs, lengths)  # (B, T)
        losses: list[Tensor] = []
        token_routing = self._token_routing(inputs, real, losses)
        hidden, active, depths = inputs, real, torch.zeros_like(real, dtype=torch.long)
        new_state = []
        for step in range(self.max_recursions):
            if token_routing is None:
                active, gate = self._expert_routing(step, hidden, active, losses)
            else:
                gate, depth = token_routing
                active = active & (depth > step)
                gate = torch.where(depth == step + 1, gate, torch.ones_like(gate))
            caches = None if state is None else state[step]
            updated, step_caches = run_unit(blocks, hidden, active, caches)
            weight = (gate * active).unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            hidden = hidden + weight * (updated - hidden)
            depths = depths + active.long()
            new_state.append(step_caches)
            self._count(blocks, active, step_caches[0].active, inputs.shape[-1])
        self.last_depths = depths
        self._tokens += float(real.sum())
        scale = self.config.auxiliary_weight
        self._auxiliary = scale * torch.stack(losses).mean() if losses else None
        return hidden, tuple(new_state)

    def step(
        self, blocks: Sequence[Any], inputs: Tensor, state: Sequence[Any] | None = None
    ) -> tuple[Tensor, tuple[tuple[RecursionCache, ...], ...]]:
        """One position ``(B, D)`` -> ``(B, D)`` and the extended caches (use eval mode)."""
        hidden, new_state = self.forward(blocks, inputs[:, None], state)
        return hidden[:, 0], new_state

    def _expert_routing(
        self, step: int, hidden: Tensor, active: Tensor, losses: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """``A^r`` and ``g^r`` of expert-choice; in training the BCE joins ``losses``."""
        logits = self.routers[step](hidden).squeeze(-1)  # (B, T)
        gate = torch.sigmoid(logits)
        if not self.training:
            decider = self.auxiliary_routers[step] if self.auxiliary_routers else None
            decision = logits if decider is None else decider(hidden).squeeze(-1)
            return active & (decision >= 0), gate
        top = max(1, int(self.capacities[step] * hidden.shape[1]))
        scores = gate.detach().masked_fill(~active, -1.0)
        chosen = torch.zeros_like(active)
        chosen.scatter_(1, scores.topk(min(top, hidden.shape[1]), dim=1).indices, True)
        chosen = chosen & active
        if self.auxiliary_routers:  # the auxiliary router learns the top-k on stop_grad(H)
            logits = self.auxiliary_routers[step](hidden.detach()).squeeze(-1)
        candidates = active.float()
        bce = functional.binary_cross_entropy_with_logits(
            logits, chosen.to(logits.dtype), weight=candidates.to(logits.dtype), reduction="sum"
        )
        losses.append(bce / candidates.sum().clamp(min=1.0))
        return chosen, gate

    def _token_routing(
        self, inputs: Tensor, real: Tensor, losses: list[Tensor]
    ) -> tuple[Tensor, Tensor] | None:
        """Token-choice: each position's gate ``p_t,i_t`` and depth ``i_t`` ``(B, T)``, and
        the balancing loss in ``losses``; None for expert-choice."""
        if self.depth_router is None:
            return None
        probabilities = torch.softmax(self.depth_router(inputs), dim=-1)  # (B, T, N_r)
        gate, choice = probabilities.max(dim=-1)
        if self.training:
            weights = real.to(probabilities.dtype)[..., None]
            count = weights.sum().clamp(min=1.0)
            assigned = functional.one_hot(choice, self.max_recursions).to(weights.dtype)
            fractions = (assigned * weights).sum((0, 1)) / count  # f_j
            mean_probabilities = (probabilities * weights).sum((0, 1)) / count  # P_j
            losses.append(self.max_recursions * (fractions * mean_probabilities).sum())
        return gate, choice + 1

    def _count(
        self, blocks: Sequence[Any], active: Tensor, key_active: Tensor, model_size: int
    ) -> None:
        """Add one recursion's active tokens and FLOPs proxy to the statistics."""
        matrices = sum(
            parameter.numel()
            for block in blocks
            for parameter in block.parameters()
            if parameter.dim() == 2
        )
        past = key_active.shape[1] - active.shape[1]
        seen = key_active.long().cumsum(1)[:, past:]  # active keys up to each query
        pairs = float((seen * active.long()).sum())
        steps = float(active.sum())
        self._steps += steps
        self._flops += 2.0 * matrices * steps + 4.0 * model_size * len(blocks) * pairs

    def auxiliary_loss(self) -> Tensor | None:
        """The weighted auxiliary loss of the latest training forward (None in eval mode)."""
        return self._auxiliary

    def statistics(self) -> dict[str, float]:
        """``mean_recursions`` and ``flops_per_token`` over the real tokens since the reset."""
        tokens = max(self._tokens, 1.0)
        return {"mean_recursions": self._steps / tokens, "flops_per_token": self._flops / tokens}

    def reset_statistics(self) -> None:
        """Start counting the statistics afresh."""
        self._tokens = self._steps = self._flops = 0.0
