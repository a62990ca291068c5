"""Decoding: sampling with temperature and top-k, greedy and beam search over any step function,
CTC decoders, and the sequence metrics they are judged by."""

from rnnkit.decoding.ctc import (
    CharacterNgramScorer,
    ExternalScorer,
    Hypothesis,
    collapse,
    ctc_loss,
    greedy_decode,
    prefix_beam_search,
)
from rnnkit.decoding.metrics import (
    edit_distance,
    exact_sequence_accuracy,
    label_error_rate,
    sequence_error_rate,
)
from rnnkit.decoding.sampling import generate, next_token
from rnnkit.decoding.search import (
    BeamSearchResult,
    Decoded,
    beam_search,
    greedy_search,
    select_rows,
)

__all__ = [
    "BeamSearchResult",
    "CharacterNgramScorer",
    "Decoded",
    "ExternalScorer",
    "Hypothesis",
    "beam_search",
    "collapse",
    "ctc_loss",
    "edit_distance",
    "exact_sequence_accuracy",
    "generate",
    "greedy_decode",
    "greedy_search",
    "label_error_rate",
    "next_token",
    "prefix_beam_search",
    "select_rows",
    "sequence_error_rate",
]
