"""Truncated backpropagation through time over contiguous streams.

Training reads window ``step`` of B streams (``rnnkit.data.StreamBatcher``); the recurrent state
at the end of a window starts the next one, detached so gradients stop at the window boundary
(Williams & Peng 1990; the BPTT(T, T) of Williams & Zipser 1995). The state is reset to zeros at
the start of every pass over the text and, with ``carry_state=False``, at every window. With
document starts (``resets``), the model also restarts from zeros at each of them.

Evaluation reads the whole token sequence the same way, without gradients, so every token but
the first of each stream is predicted with all the context before it in its stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data import StreamBatcher
from rnnkit.models import LanguageModel, detach_state
from rnnkit.train import ranges
from rnnkit.train.metrics import bits_per_character


@dataclass
class TruncatedBPTTConfig:
    """Windows and carried state of truncated BPTT."""

    window: int = 64
    """Time steps T per window (gradients flow back at most T steps)."""
    carry_state: bool = True
    """Carry the (detached) state from window to window; False resets it every window."""
    evaluation_streams: int = 16
    """Parallel streams B when evaluating."""
    evaluation_window: int = 256
    """Time steps per window when evaluating (does not change the result, only speed)."""

    def __post_init__(self) -> None:
        ranges.at_least("window", self.window, 1)
        ranges.at_least("evaluation_streams", self.evaluation_streams, 1)
        ranges.at_least("evaluation_window", self.evaluation_window, 1)


class TruncatedBPTT:
    """The training loss of each step, with the carried state.

    Args:
        model: maps ``tokens (B, T)`` and a state to ``logits (B, T, V)`` and a state.
        tokens: the training tokens ``(N,)``.
        batch_size: streams B.
        config: windows and carrying.
        resets: document starts ``(N,)`` bool, or None for one continuous text.
    """

    def __init__(
        self,
        model: LanguageModel,
        tokens: Tensor,
        batch_size: int,
        config: TruncatedBPTTConfig,
        resets: Tensor | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.batcher = StreamBatcher(tokens, batch_size, config.window, "training text", resets)
        self.state: tuple | None = None

    def loss(self, step: int) -> tuple[Tensor, int]:
        """Mean cross-entropy (nats per token) of window ``step`` and its token count."""
        window = self.batcher.window_at(step)
        if window.starts_epoch or not self.config.carry_state:
            self.state = None
        logits, state = self.model(window.inputs, self.state, window.resets)  # (B, T, V)
        self.state = detach_state(state) if self.config.carry_state else None
        loss = functional.cross_entropy(logits.flatten(0, 1), window.targets.flatten())
        return loss, window.targets.numel()

    def state_tensors(self) -> dict[str, Tensor]:
        """The carried state as ``carry.{layer}.{field}`` tensors (none when not carrying)."""
        if self.state is None:
            return {}
        return {
            f"carry.{layer}.{name}": value
            for layer, state in enumerate(self.state)
            for name, value in state._asdict().items()
        }

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        """Restore the state saved by ``state_tensors``."""
        cells = self.model.recurrent.layer_cells()
        if not any(key.startswith("carry.") for key in tensors):
            self.state = None
            return
        self.state = tuple(
            cell.state_type(*(tensors[f"carry.{layer}.{name}"] for name in cell.state_type._fields))
            for layer, cell in enumerate(cells)
        )


@torch.no_grad()
def evaluate_tokens(
    model: LanguageModel,
    tokens: Tensor,
    config: TruncatedBPTTConfig,
    resets: Tensor | None = None,
) -> dict[str, float]:
    """Mean cross-entropy of ``tokens (N,)`` read as streams: ``loss`` (nats), ``bpc``;
    ``resets (N,)`` bool restarts the state at document starts."""
    was_training = model.training
    model.eval()
    streams = max(1, min(config.evaluation_streams, (tokens.numel() - 1) // 2))
    window = max(1, min(config.evaluation_window, tokens.numel() // streams - 1))
    batcher = StreamBatcher(tokens, streams, window, "validation text", resets)
    total, count, state = 0.0, 0, None
    windows = list(batcher)
    tail = batcher.tail()
    if tail is not None:
        windows.append(tail)
    for current in windows:
        logits, state = model(current.inputs, state, current.resets)  # (B, T, V)
        targets = current.targets.flatten()
        total += float(functional.cross_entropy(logits.flatten(0, 1), targets, reduction="sum"))
        count += targets.numel()
    model.train(was_training)
    loss = total / count
    return {"loss": loss, "bpc": bits_per_character(loss), "tokens": count}
