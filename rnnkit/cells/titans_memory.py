"""The Titans memory as a function of flattened weights, and its loss gradient in closed form.

One memory per head, its weights flattened to ``W`` numbers (``MemoryLayout.size``):

    depth 1:  M(k) = W k                              W (d, d)
    depth 2:  M(k) = k + W_2 act(W_1 k)               W_1 (d_h, d), W_2 (d, d_h), flattened
                                                      as [W_1, W_2] row-major

and the associative loss of Behrouz, Zhong, Mirrokni 2025 ("Titans", eq. 12) with the
attentional biases of Behrouz et al. 2025 ("It's All Connected", Miras, Section 5.1), summed
over the ``d`` features of the residual ``r = M(k) - v``:

    "l2":     l = sum_i r_i^2
    "huber":  l = sum_i (r_i^2 if |r_i| <= delta else 2 delta |r_i| - delta^2)

(the Huber loss scaled by 2, so that it is the l2 loss for ``|r_i| <= delta``). Its gradient
with respect to the weights is written out (backpropagation by hand through at most two
layers), so that a strategy can take it as an ordinary, differentiable tensor expression:

    g_r = dl/dr = 2 r  (l2)  or  2 clamp(r, -delta, delta)  (huber)
    depth 1:  dl/dW = g_r k^T
    depth 2:  dl/dW_2 = g_r a^T,  dl/dW_1 = (W_2^T g_r * act'(h)) k^T,  h = W_1 k, a = act(h)

Every function broadcasts over leading dimensions: weights ``(..., W)`` against keys ``(...,
d)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

ACTIVATIONS = ("silu", "gelu")
ATTENTIONAL_BIASES = ("l2", "huber")


@dataclass(frozen=True)
class MemoryLayout:
    """The shape of one head's memory MLP."""

    depth: int  # 1 (a matrix) or 2 (an MLP with a residual)
    size: int  # d: key and value features per head
    hidden: int  # d_h: hidden units of the depth-2 MLP (unused at depth 1)
    activation: str = "silu"

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """``(rows, columns)`` of each weight matrix, in the flattened order."""
        if self.depth == 1:
            return [(self.size, self.size)]
        return [(self.hidden, self.size), (self.size, self.hidden)]

    @property
    def numel(self) -> int:
        """``W``: the numbers in one head's flattened weights."""
        return sum(rows * columns for rows, columns in self.shapes)


def unpack(weights: Tensor, layout: MemoryLayout) -> list[Tensor]:
    """``(..., W)`` -> the weight matrices ``(..., rows, columns)`` of ``layout.shapes``."""
    sizes = [rows * columns for rows, columns in layout.shapes]
    return [
        block.unflatten(-1, shape)
        for block, shape in zip(weights.split(sizes, -1), layout.shapes, strict=True)
    ]


def activation(values: Tensor, name: str) -> Tensor:
    """``act(values)``: SiLU or the exact (erf) GELU."""
    return functional.silu(values) if name == "silu" else functional.gelu(values)


def activation_derivative(values: Tensor, name: str) -> Tensor:
    """``act'(values)``: ``s (1 + x (1 - s))`` with ``s = sigmoid(x)`` for SiLU,
    ``Phi(x) + x phi(x)`` (the normal CDF and density) for GELU."""
    if name == "silu":
        sigmoid = torch.sigmoid(values)
        return sigmoid * (1 + values * (1 - sigmoid))
    cdf = 0.5 * (1 + torch.erf(values / math.sqrt(2)))
    density = torch.exp(-0.5 * values * values) / math.sqrt(2 * math.pi)
    return cdf + values * density


def matvec(matrix: Tensor, vector: Tensor) -> Tensor:
    """``(..., rows, columns) @ (..., columns) -> (..., rows)``, broadcasting."""
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def outer(left: Tensor, right: Tensor) -> Tensor:
    """``(..., rows), (..., columns) -> (..., rows, columns)``."""
    return left.unsqueeze(-1) * right.unsqueeze(-2)


def apply_memory(weights: Tensor, keys: Tensor, layout: MemoryLayout) -> Tensor:
    """``M(keys)``: weights ``(..., W)``, keys ``(..., d)`` -> ``(..., d)``."""
    matrices = unpack(weights, layout)
    return memory_forward(lambda index, vectors: matvec(matrices[index], vectors), keys, layout)


def memory_forward(
    multiply: Callable[[int, Tensor], Tensor], keys: Tensor, layout: MemoryLayout
) -> Tensor:
    """``M(keys)`` with ``multiply(i, x)`` the product of weight matrix i (``layout.shapes``)
    with ``x (..., columns)``: how a strategy reads a memory it never materializes."""
    if layout.depth == 1:
        return multiply(0, keys)
    return keys + multiply(1, activation(multiply(0, keys), layout.activation))


def residual_gradient(residual: Tensor, attentional_bias: str, huber_delta: float) -> Tensor:
    """``dl/dr`` of the loss named ``attentional_bias`` at ``r (..., d)``."""
    if attentional_bias == "l2":
        return 2 * residual
    return 2 * residual.clamp(-huber_delta, huber_delta)


def memory_loss(
    weights: Tensor,
    keys: Tensor,
    values: Tensor,
    layout: MemoryLayout,
    attentional_bias: str = "l2",
    huber_delta: float = 1.0,
) -> Tensor:
    """``l(M; k, v)`` summed over features: ``(...)``. The function the gradient below is of."""
    residual = apply_memory(weights, keys, layout) - values
    if attentional_bias == "l2":
        return (residual * residual).sum(-1)
    size = residual.abs()
    linear = 2 * huber_delta * size - huber_delta**2
    return torch.where(size <= huber_delta, residual * residual, linear).sum(-1)


def gradient_factors(
    multiply: Callable[[int, Tensor], Tensor],
    multiply_transposed: Callable[[int, Tensor], Tensor],
    keys: Tensor,
    values: Tensor,
    layout: MemoryLayout,
    attentional_bias: str = "l2",
    huber_delta: float = 1.0,
) -> list[tuple[Tensor, Tensor]]:
    """``dl(M; k, v)/dW`` as one outer product ``left right^T`` per weight matrix, from
    ``multiply(i, x)`` and ``multiply_transposed(i, y)``, the products of weight matrix i and
    of its transpose with vectors: keys and values ``(..., d)`` -> ``[(left (..., rows), right
    (..., columns))]`` in the order of ``layout.shapes`` (module docstring)."""
    if layout.depth == 1:
        residual = multiply(0, keys) - values
        return [(residual_gradient(residual, attentional_bias, huber_delta), keys)]
    hidden = multiply(0, keys)  # (..., d_h)
    activated = activation(hidden, layout.activation)
    residual = keys + multiply(1, activated) - values
    gradient = residual_gradient(residual, attentional_bias, huber_delta)  # (..., d)
    hidden_gradient = multiply_transposed(1, gradient)
    hidden_gradient = hidden_gradient * activation_derivative(hidden, layout.activation)
    return [(hidden_gradient, keys), (gradient, activated)]


def memory_gradient(
    weights: Tensor,
    keys: Tensor,
    values: Tensor,
    layout: MemoryLayout,
    attentional_bias: str = "l2",
    huber_delta: float = 1.0,
) -> Tensor:
    """``dl(M; k, v)/dW`` in closed form: weights ``(..., W)``, keys and values ``(..., d)`` ->
    ``(..., W)`` over the broadcast leading dimensions (module docstring)."""
    matrices = unpack(weights, layout)
    factors = gradient_factors(
        lambda index, vectors: matvec(matrices[index], vectors),
        lambda index, vectors: matvec(matrices[index].transpose(-1, -2), vectors),
        keys,
        values,
        layout,
        attentional_bias,
        huber_delta,
    )
    return torch.cat([outer(left, right).flatten(-2) for left, right in factors], -1)
