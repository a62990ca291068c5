"""Sampling from a recurrent language model, one token at a time.

The prompt is read once; after that every step feeds only the last token with the carried
state, so generating N tokens costs N single steps, never a re-run of the prompt. The next token
is drawn from ``softmax(logits / temperature)`` restricted to the ``top_k`` most likely tokens;
temperature 0 is greedy decoding (argmax).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor


def next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Draw one token per row of ``logits (B, V)`` -> ``(B,)`` int64.

    ``temperature`` 0 picks the argmax; ``top_k`` 0 keeps every token.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    if temperature == 0:
        return logits.argmax(-1)
    scaled = logits.float() / temperature
    if 0 < top_k < scaled.shape[-1]:
        threshold = scaled.topk(top_k, dim=-1).values[..., -1:]  # (B, 1)
        scaled = scaled.masked_fill(scaled < threshold, float("-inf"))
    probabilities = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


class SteppingModel(Protocol):
    """What ``generate`` samples from, as ``rnnkit.models.LanguageModel`` provides it."""

    def __call__(self, tokens: Tensor) -> tuple[Tensor, Any]:
        """``tokens (B, T)`` -> ``logits (B, T, V)`` and the state after them."""
        ...

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Any]:
        """``tokens (B,)`` and a state -> ``logits (B, V)`` and the new state."""
        ...

    def eval(self) -> Any:
        """Put the model in evaluation mode."""
        ...


@torch.no_grad()
def generate(
    model: SteppingModel,
    prompt: Tensor,
    length: int,
    temperature: float = 1.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Yield ``length`` tokens after ``prompt (P,)``, one step at a time.

    ``model`` maps ``tokens (B, T)`` and a state to ``logits (B, T, V)`` and a state, and its
    ``step`` maps ``tokens (B,)`` and a state to ``logits (B, V)`` and a state (as
    ``rnnkit.models.LanguageModel``); it is put in evaluation mode.
    """
    if prompt.dim() != 1 or prompt.numel() == 0:
        raise ValueError(
            f"prompt must be a non-empty 1-D tensor of tokens, got {tuple(prompt.shape)}"
        )
    model.eval()
    logits, state = model(prompt.unsqueeze(0))  # (1, P, V): the prompt, read once
    for _ in range(length):
        token = next_token(logits[:, -1], temperature, top_k, generator)  # (1,)
        yield int(token)
        logits, state = model.step(token, state)  # (1, V): one layer step, no forward
        logits = logits.unsqueeze(1)  # (1, 1, V)
