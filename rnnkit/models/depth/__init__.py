"""Recurrence in depth: adaptive computation time, Universal Transformers, and the ``depth``
group of the sequence model's config.

The modules here never import ``rnnkit.models.sequence_model`` (which imports this package): a
depth recursion is given the blocks it runs."""

from rnnkit.models.depth.act import AdaptiveComputationTime, Halting
from rnnkit.models.depth.act_cell import AdaptiveCellOutput, AdaptiveComputationCell
from rnnkit.models.depth.config import RECURSIONS, DepthConfig, DepthRecursion, build_depth
from rnnkit.models.depth.mixture_of_recursions import (
    MixtureOfRecursions,
    MixtureOfRecursionsConfig,
)
from rnnkit.models.depth.recursive import RecursiveConfig, RelaxedRecursion
from rnnkit.models.depth.universal import UniversalState, UniversalTransformer
from rnnkit.models.depth.universal_encoder_decoder import UniversalEncoderDecoder

__all__ = [
    "RECURSIONS",
    "AdaptiveCellOutput",
    "AdaptiveComputationCell",
    "AdaptiveComputationTime",
    "DepthConfig",
    "DepthRecursion",
    "Halting",
    "MixtureOfRecursions",
    "MixtureOfRecursionsConfig",
    "RecursiveConfig",
    "RelaxedRecursion",
    "UniversalEncoderDecoder",
    "UniversalState",
    "UniversalTransformer",
    "build_depth",
]
