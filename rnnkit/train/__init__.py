"""Training: the loop, truncated BPTT, checkpoints, configs, metrics and plots."""

from rnnkit.train.config import ConfigError, apply_overrides, from_dict, parse_duration, to_dict
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.task import FitResult, TrainingDiverged, TrainingTask
from rnnkit.train.tbptt import TruncatedBPTT, TruncatedBPTTConfig, evaluate_tokens
from rnnkit.train.trainer import Trainer, TrainerConfig

__all__ = [
    "ConfigError",
    "FitResult",
    "OptimizerConfig",
    "Trainer",
    "TrainerConfig",
    "TrainingDiverged",
    "TrainingTask",
    "TruncatedBPTT",
    "TruncatedBPTTConfig",
    "apply_overrides",
    "evaluate_tokens",
    "from_dict",
    "parse_duration",
    "to_dict",
]
