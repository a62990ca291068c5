"""The char-LM's transformer (``model.mixer=attention``): how truncated BPTT and evaluation call
it, and its initialization from a trained deep run (``rnnkit.models.transformer_lm``).

The transformer attends within each window: ``stream_model`` runs every window from an empty
cache and carries nothing, and ``evaluate_model`` reads the validation text in windows of
``bptt.window`` (its training context) and reports the compute per token (``flops_per_token``,
the FLOPs proxy of ``rnnkit.models.depth.mixture_of_recursions``; MoR's ``mean_recursions``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import cast

from torch import Tensor

from rnnkit.data import Vocabulary
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.transformer_lm import (
    TransformerLanguageModel,
    WindowLocal,
    initialize_from_deep_model,
    vanilla_flops_per_token,
)
from rnnkit.train.tbptt import TruncatedBPTTConfig, evaluate_tokens


def stream_model(model: LanguageModel | TransformerLanguageModel) -> LanguageModel:
    """The model as truncated BPTT and ``evaluate_tokens`` call it: a transformer runs each
    window from an empty cache and carries the empty state ``()`` (``WindowLocal``), which
    they handle as a recurrent model's state."""
    if isinstance(model, TransformerLanguageModel):
        return cast(LanguageModel, WindowLocal(model))
    return model


def evaluate_model(
    model: LanguageModel | TransformerLanguageModel,
    tokens: Tensor,
    bptt: TruncatedBPTTConfig,
    resets: Tensor | None = None,
) -> dict[str, float]:
    """``evaluate_tokens``; a transformer reads windows of ``bptt.window`` (its training
    context) and adds its compute per token: ``flops_per_token`` (and MoR's
    ``mean_recursions``, routed by the causal rule of evaluation)."""
    if not isinstance(model, TransformerLanguageModel):
        return evaluate_tokens(model, tokens, bptt, resets)
    model.network.reset_depth_statistics()
    windows = replace(bptt, evaluation_window=bptt.window)
    result = evaluate_tokens(stream_model(model), tokens, windows, resets)
    statistics = model.network.depth_statistics()
    if "flops_per_token" not in statistics:
        depth = model.config.depth.max_steps if model.config.depth.recursion != "none" else 1
        flops = vanilla_flops_per_token(model.config, bptt.window) * depth
        statistics = {**statistics, "flops_per_token": flops}
    return {**result, **statistics}


def initialize_from_run(
    model: TransformerLanguageModel, config: LanguageModelConfig, vocabulary: Vocabulary
) -> None:
    """Set a relaxed recursive ``model`` from the deep run ``config.initialize_from`` by
    ``config.initialization`` (``rnnkit.models.transformer_lm.initialize_from_deep_model``)."""
    from rnnkit.train.tasks.charlm import load_trained  # charlm imports this module

    deep_config, deep, deep_vocabulary, _ = load_trained(config.initialize_from)
    if deep_vocabulary.characters != vocabulary.characters:
        raise ValueError(
            f"model.initialize_from: {config.initialize_from} was trained on another vocabulary "
            "(a different text)"
        )
    if not isinstance(deep, TransformerLanguageModel):
        raise ValueError(
            f"model.initialize_from: {config.initialize_from} is a {deep_config.model.mixer} "
            "model, expected a transformer (model.mixer=attention)"
        )
    initialize_from_deep_model(model, deep, config.initialization)
