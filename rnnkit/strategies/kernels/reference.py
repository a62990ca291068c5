"""The diagonal linear scan as a plain loop: the definition every other implementation matches.

    h_t = a_t * h_{t-1} + b_t,   h_0 = initial          (forward)
    h_t = a_t * h_{t+1} + b_t,   h_{T+1} = initial      (reverse)

``a``, ``b``: ``(B, T, N)``, real or complex; ``initial``: ``(B, N)`` or None (zeros).
Returns ``h (B, T, N)``. Differentiable through autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor


def scan_loop(a: Tensor, b: Tensor, initial: Tensor | None = None, reverse: bool = False) -> Tensor:
    """The reference loop over time (``unbind`` keeps its backward linear in T)."""
    a_steps, b_steps = a.unbind(1), b.unbind(1)
    order = range(len(a_steps) - 1, -1, -1) if reverse else range(len(a_steps))
    h = torch.zeros_like(b_steps[0]) if initial is None else initial.to(b.dtype)
    outputs: list[Tensor] = [h] * len(a_steps)
    for t in order:
        h = a_steps[t] * h + b_steps[t]
        outputs[t] = h
    return torch.stack(outputs, 1)
