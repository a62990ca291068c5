"""Models built on the recurrent layers: language model (classifier, seq2seq, ... later)."""

from rnnkit.models.language_model import LanguageModel, LanguageModelConfig, detach_state

__all__ = ["LanguageModel", "LanguageModelConfig", "detach_state"]
