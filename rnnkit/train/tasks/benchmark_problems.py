"""The benchmark tasks: ``rnnkit train mqar | state-tracking | icll | passkey | copy |
selective-copy | adding | sequential-digits``.

Each task trains ``rnnkit.models.SequenceModel`` (``--model.cell=NAME``: ``attention`` or any
registered cell; ``--model.recurrent.strategy=...``) on a generator of
``rnnkit.data.benchmarks`` whose every option is a ``data.*`` config field. The metrics
(``rnnkit eval RUN --json``), all on held-out sequences:

- ``mqar`` (Zoology): ``accuracy`` of the value predicted at each query; ``head_accuracy``
  and ``tail_accuracy`` at queries of the frequent and the rare half of the values.
- ``state-tracking`` (word problems on groups): ``accuracy_at_length_N`` of the running
  product after N elements, for every N up to ``test_length_factor * train_length``; lengths up
  to the training length from held-out words of the training length, longer ones from random
  words; ``accuracy`` their mean; ``accuracy_in_distribution`` the mean up to the training
  length; ``longest_length_at_90``, the longest N with every length up to it at >= 90%.
  Scored per position: the DeltaProduct code (Siems et al. 2025, after Merrill et al. 2024)
  counts a word right at length N only if every prefix up to N is right, a stricter curve.
- ``icll`` (RegBench): ``accuracy`` that the predicted next symbol is allowed by the automaton,
  ``total_variation`` to its next-symbol distribution, and the in-context n-gram baselines of
  orders 1-3 on the same sequences (``ngram_N_accuracy``, ``ngram_N_total_variation``).
- ``passkey``: ``accuracy_at_length_N`` of reading the whole key back at context length N (the
  training length times 1, 2, 4, ... up to ``test_length_factor``); ``accuracy`` their mean,
  ``digit_accuracy`` per digit.
- ``copy`` and ``selective-copy`` (Mamba): ``accuracy`` per copied token,
  ``sequence_accuracy`` of the whole string.
- ``adding`` (Hochreiter & Schmidhuber 1997): ``mse`` of the sum read at the last step (1/6 is
  the constant predictor's) and ``accuracy``, the share within 0.04 of the sum.
- ``sequential-digits``: ``accuracy`` of the digit read from the last step of 64 pixels.
"""

from __future__ import annotations

from rnnkit.data.benchmarks import sequential_digits
from rnnkit.train.tasks.benchmark_task import make_definition
from rnnkit.train.tasks.language_problems import (
    ICLLProblem,
    ICLLTaskConfig,
    StateTrackingProblem,
    StateTrackingTaskConfig,
)
from rnnkit.train.tasks.signal_problems import (
    AddingProblem,
    AddingTaskConfig,
    SequentialDigitsProblem,
    SequentialDigitsTaskConfig,
)
from rnnkit.train.tasks.token_problems import (
    CopyTaskConfig,
    MQARProblem,
    MQARTaskConfig,
    PasskeyProblem,
    PasskeyTaskConfig,
    SelectiveCopyTaskConfig,
    copy_problem,
)

DEFINITIONS = [
    make_definition(
        "mqar",
        "multi-query associative recall (Zoology) with any mixer",
        MQARTaskConfig,
        MQARProblem,
        lambda config: config.data.sequence_length,
    ),
    make_definition(
        "state-tracking",
        "word problems on groups (parity, Z_n, S3, S4, S5, A5), tested up to 4x longer",
        StateTrackingTaskConfig,
        StateTrackingProblem,
        lambda config: config.data.train_length,
    ),
    make_definition(
        "icll",
        "in-context language learning on random automata (RegBench), n-gram baselines",
        ICLLTaskConfig,
        ICLLProblem,
        lambda config: config.data.sequence_length,
    ),
    make_definition(
        "passkey",
        "passkey retrieval, trained short and tested up to 16x longer",
        PasskeyTaskConfig,
        PasskeyProblem,
        lambda config: config.data.train_length,
    ),
    make_definition(
        "copy",
        "copying a string after a delay",
        CopyTaskConfig,
        copy_problem,
        lambda config: config.data.total_length,
    ),
    make_definition(
        "selective-copy",
        "selective copying (Mamba): symbols scattered in noise, copied in order",
        SelectiveCopyTaskConfig,
        copy_problem,
        lambda config: config.data.total_length,
    ),
    make_definition(
        "adding",
        "the adding problem (Hochreiter & Schmidhuber 1997)",
        AddingTaskConfig,
        AddingProblem,
        lambda config: config.data.sequence_length,
    ),
    make_definition(
        "sequential-digits",
        "scikit-learn's 8x8 digits read pixel by pixel (sequential or permuted)",
        SequentialDigitsTaskConfig,
        SequentialDigitsProblem,
        lambda config: sequential_digits.SEQUENCE_LENGTH,
    ),
]
