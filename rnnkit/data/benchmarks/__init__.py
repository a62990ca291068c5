"""Generated data of the synthetic benchmark tasks, one module per task family.

Token tasks (``mqar``, ``state_tracking``, ``icll``, ``passkey``, ``copying``) return a
``TokenBatch(inputs, targets, mask)`` of ``(B, T)`` tensors; ``adding`` and
``sequential_digits`` return real-valued inputs. Every generator option is a field of a frozen
config dataclass, and train and test splits are disjoint (see ``batches``).
"""

from rnnkit.data.benchmarks.adding import AddingConfig
from rnnkit.data.benchmarks.batches import SequenceBatch, TokenBatch, split_generator
from rnnkit.data.benchmarks.copying import CopyingConfig
from rnnkit.data.benchmarks.icll import ICLLBatch, ICLLConfig
from rnnkit.data.benchmarks.mqar import MQARConfig
from rnnkit.data.benchmarks.passkey import PasskeyConfig
from rnnkit.data.benchmarks.sequential_digits import SequentialDigitsConfig
from rnnkit.data.benchmarks.state_tracking import StateTrackingConfig

__all__ = [
    "AddingConfig",
    "CopyingConfig",
    "ICLLBatch",
    "ICLLConfig",
    "MQARConfig",
    "PasskeyConfig",
    "SequenceBatch",
    "SequentialDigitsConfig",
    "StateTrackingConfig",
    "TokenBatch",
    "split_generator",
]
