"""Generated data of the synthetic benchmark tasks, one module per task family.

Token tasks (``mqar``, ``state_tracking``, ``icll``, ``passkey``, ``copying``) return a
``TokenBatch(inputs, targets, mask)`` of ``(B, T)`` tensors; ``adding`` and
``sequential_digits`` return real-valued inputs. Every generator option is a field of a frozen
config dataclass, and train and test splits are disjoint (see ``batches``).
"""

from rnnkit.data.benchmarks.batches import TokenBatch, split_generator

__all__ = ["TokenBatch", "split_generator"]
