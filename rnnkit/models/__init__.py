"""Models built on the recurrent layers: language model, encoder-decoder with attention, pointer
network, CRNN for CTC."""

from rnnkit.models.attention import ATTENTION_KINDS, Attention
from rnnkit.models.crnn import CRNN, CRNNConfig
from rnnkit.models.language_model import LanguageModel, LanguageModelConfig, detach_state
from rnnkit.models.pointer import PointerNetwork, PointerNetworkConfig
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.models.sequence_model import (
    SequenceModel,
    SequenceModelConfig,
    build_sequence_model,
    with_mixer,
)

__all__ = [
    "ATTENTION_KINDS",
    "CRNN",
    "Attention",
    "CRNNConfig",
    "LanguageModel",
    "LanguageModelConfig",
    "PointerNetwork",
    "PointerNetworkConfig",
    "Seq2Seq",
    "Seq2SeqConfig",
    "SequenceModel",
    "SequenceModelConfig",
    "build_sequence_model",
    "with_mixer",
    "detach_state",
]
