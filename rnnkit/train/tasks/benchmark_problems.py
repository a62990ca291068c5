"""The benchmark tasks: ``rnnkit train mqar | state-tracking | icll | passkey | copy |
selective-copy | adding | sequential-digits``.

Each task trains ``rnnkit.models.SequenceModel`` (``--model.cell=NAME``: ``attention`` or any
registered cell; ``--model.recurrent.strategy=...``) on a generator of
``rnnkit.data.benchmarks`` whose every option is a ``data.*`` config field. The metrics
(``rnnkit eval RUN --json``), all on held-out sequences:

- ``mqar`` (Zoology): ``accuracy`` of the value predicted at each query.
- ``state-tracking`` (word problems on groups): ``accuracy_at_length_N`` of the running
  product after N elements, for every N up to ``test_length_factor * train_length``; lengths up
  to the training length from held-out words of the training length, longer ones from random
  words; ``accuracy`` their mean; ``accuracy_in_distribution`` the mean up to the training
  length; ``longest_length_at_90``, the longest N with every length up to it at >= 90%.
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

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data.benchmarks import adding, copying, icll, mqar, passkey, sequential_digits
from rnnkit.data.benchmarks import state_tracking as groups
from rnnkit.data.benchmarks.batches import SequenceBatch, TokenBatch
from rnnkit.models.sequence_model import SequenceModel, SequenceModelConfig
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.benchmark_task import (
    LENGTH_PREFIX,
    EvaluationConfig,
    batched_logits,
    make_definition,
    masked_token_loss,
    token_metrics,
)
from rnnkit.train.trainer import TrainerConfig

ADDING_TOLERANCE = 0.04
"""A sum read within this of the truth counts as right (``adding``'s accuracy)."""
ICLL_NGRAM_ORDERS = (1, 2, 3)
HELD_AT = 0.9


def task_trainer() -> TrainerConfig:
    """The benchmark tasks' default stopping: 2,000 steps or 5 minutes of training."""
    return TrainerConfig(max_steps=2000, time_budget_seconds=300, eval_interval_seconds=60)


def task_optimizer() -> OptimizerConfig:
    return OptimizerConfig(learning_rate=3e-3, weight_decay=0.1, warmup_steps=100)


def evaluation_sets(
    draw: Any, stream_seed: int, stream: int, config: EvaluationConfig
) -> list[Any]:
    """``draw(count, generator)`` in batches of ``config.batch_size`` up to ``sequences``."""
    generator = supervised.fixed_generator(stream_seed, stream)
    sizes = [config.batch_size] * (config.sequences // config.batch_size)
    if config.sequences % config.batch_size:
        sizes.append(config.sequences % config.batch_size)
    return [draw(size, generator) for size in sizes]


def concatenated(batches: list[Any]) -> Any:
    """The batches (NamedTuples of tensors) as one."""
    return type(batches[0])(*(torch.cat(list(parts)) for parts in zip(*batches, strict=True)))


class TokenProblem:
    """A token task scored at its batches' ``mask`` positions (MQAR, copying)."""

    unit = "token"
    input_size = None

    def __init__(self, config: Any, data: Any, draw: Any) -> None:
        self.config, self.data, self.draw = config, data, draw
        self.vocabulary_size: int | None = data.vocabulary_size
        self.output_size = data.vocabulary_size
        self._sets: dict[int, TokenBatch] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> TokenBatch:
        return self.draw(batch_size, generator, "train")

    def loss(self, model: SequenceModel, batch: TokenBatch) -> tuple[Tensor, int]:
        return masked_token_loss(model, batch.inputs, batch.targets, batch.mask)

    def held_out(self, stream: int) -> TokenBatch:
        if stream not in self._sets:
            self._sets[stream] = concatenated(
                evaluation_sets(
                    lambda count, generator: self.draw(count, generator, "test"),
                    self.config.seed,
                    stream,
                    self.config.evaluation,
                )
            )
        return self._sets[stream]

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        batch = self.held_out(stream)
        logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)
        return token_metrics(logits, batch.targets, batch.mask)

    def describe(self) -> str:
        return f"{self.data}"


# ---------------------------------------------------------------------------------- MQAR


@dataclass
class MQARTaskConfig:
    """Multi-query associative recall: every setting of a run."""

    data: mqar.MQARConfig = field(
        default_factory=lambda: mqar.MQARConfig(
            vocabulary_size=64, sequence_length=64, num_pairs=8
        )
    )
    """The generator: Zoology's shortest sequences (64 tokens, 8 pairs) over 64 tokens instead
    of 8,192, so that a CPU run learns the embeddings in minutes (attention at width 64 solves
    it in about 500 steps; with 256 tokens it is at 13% after 500)."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """The sequence model; ``--model.cell=NAME`` picks the mixer."""
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    """AdamW or Muon and the schedule."""
    trainer: TrainerConfig = field(default_factory=task_trainer)
    """Stopping, evaluation, logging."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Held-out sequences scored."""
    seed: int = 0
    """Seeds the weights and the training batches."""


class MQARProblem(TokenProblem):
    """MQAR's metrics, and ``head_accuracy`` and ``tail_accuracy``: the accuracy at queries
    whose value is in the frequent (lower ids) or rare half of the values; with
    ``data.zipf_exponent > 0`` the tail is rare in training too (Muon's tail-end claim)."""

    def __init__(self, config: MQARTaskConfig) -> None:
        def draw(count: int, generator: torch.Generator, split: Any) -> TokenBatch:
            return mqar.draw_batch(config.data, count, generator, split)

        super().__init__(config, config.data, draw)

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        batch = self.held_out(stream)
        logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)
        correct = logits.argmax(-1) == batch.targets  # (N, T)
        tail = self.data.tail_value(batch.targets) & batch.mask
        head = batch.mask & ~tail
        split = {  # a half without queries in the held-out set has no accuracy to report
            f"{name}_accuracy": float(correct[where].double().mean())
            for name, where in (("head", head), ("tail", tail))
            if where.any()
        }
        return {**token_metrics(logits, batch.targets, batch.mask), **split}


# ------------------------------------------------------------------------------- copying


@dataclass
class CopyTaskConfig:
    """Copying a string after a delay: every setting of a run."""

    data: copying.CopyingConfig = field(
        default_factory=lambda: copying.CopyingConfig(
            variant="copy", num_symbols=8, string_length=10, delay=20
        )
    )
    """The generator (Arjovsky et al.'s copy-memory task with ``delay`` blanks)."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """The sequence model; ``--model.cell=NAME`` picks the mixer."""
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    """AdamW or Muon and the schedule."""
    trainer: TrainerConfig = field(default_factory=task_trainer)
    """Stopping, evaluation, logging."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Held-out sequences scored."""
    seed: int = 0
    """Seeds the weights and the training batches."""


@dataclass
class SelectiveCopyTaskConfig:
    """Mamba's selective copying: every setting of a run."""

    data: copying.CopyingConfig = field(
        default_factory=lambda: copying.CopyingConfig(
            variant="selective-copy", num_symbols=8, string_length=8, sequence_length=64
        )
    )
    """The generator (the Mamba paper uses 16 symbols in 4,096 tokens)."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """The sequence model; ``--model.cell=NAME`` picks the mixer."""
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    """AdamW or Muon and the schedule."""
    trainer: TrainerConfig = field(default_factory=task_trainer)
    """Stopping, evaluation, logging."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Held-out sequences scored."""
    seed: int = 0
    """Seeds the weights and the training batches."""


def copy_problem(config: CopyTaskConfig | SelectiveCopyTaskConfig) -> TokenProblem:
    expected = "copy" if isinstance(config, CopyTaskConfig) else "selective-copy"
    if config.data.variant != expected:
        raise ValueError(
            f"data.variant: expected {expected!r} for the {expected} task, got "
            f"{config.data.variant!r}"
        )

    def draw(count: int, generator: torch.Generator, split: Any) -> TokenBatch:
        return copying.draw_batch(config.data, count, generator, split)

    return TokenProblem(config, config.data, draw)


# ------------------------------------------------------------------------ state tracking


@dataclass
class StateTrackingTaskConfig:
    """Word problems on a group: every setting of a run."""

    data: groups.StateTrackingConfig = field(default_factory=groups.StateTrackingConfig)
    """The group and the training and test lengths."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """The sequence model; ``--model.cell=NAME`` picks the mixer."""
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    """AdamW or Muon and the schedule."""
    trainer: TrainerConfig = field(default_factory=task_trainer)
    """Stopping, evaluation, logging."""
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    """Held-out words scored (at the training length and at the longest test length)."""
    seed: int = 0
    """Seeds the weights and the training batches."""


class StateTrackingProblem:
    """Training words have the training length L: every prefix is scored, so each word
    trains every length up to L."""

    unit = "token"
    input_size = None

    def __init__(self, config: StateTrackingTaskConfig) -> None:
        self.config, self.data = config, config.data
        self.vocabulary_size: int | None = config.data.vocabulary_size
        self.output_size = config.data.vocabulary_size
        self._sets: dict[int, tuple[TokenBatch, TokenBatch]] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> TokenBatch:
        return groups.draw_batch(self.data, batch_size, self.data.train_length, generator)

    def loss(self, model: SequenceModel, batch: TokenBatch) -> tuple[Tensor, int]:
        return masked_token_loss(model, batch.inputs, batch.targets, batch.mask)

    def held_out(self, stream: int) -> tuple[TokenBatch, TokenBatch]:
        """Held-out words of the training length, and random words of the longest length."""
        if stream not in self._sets:
            self._sets[stream] = tuple(  # type: ignore[assignment]
                concatenated(
                    evaluation_sets(
                        lambda count, generator, length=length: groups.draw_batch(
                            self.data, count, length, generator, "test"
                        ),
                        self.config.seed,
                        stream,
                        self.config.evaluation,
                    )
                )
                for length in (self.data.train_length, self.data.max_test_length)
            )
        return self._sets[stream]

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        short, long = self.held_out(stream)
        size, length = self.config.evaluation.batch_size, self.data.train_length
        short_logits = batched_logits(model, short.inputs, size)
        long_logits = batched_logits(model, long.inputs, size)
        per_position = torch.cat(
            [
                (short_logits.argmax(-1) == short.targets).double().mean(0),
                (long_logits.argmax(-1) == long.targets).double().mean(0)[length:],
            ]
        )  # (4L,): accuracy after 1, 2, ... elements
        held = per_position >= HELD_AT
        longest = len(held) if bool(held.all()) else int(held.long().argmin())
        loss = functional.cross_entropy(short_logits.flatten(0, 1), short.targets.flatten())
        return {
            "loss": float(loss),
            "accuracy": float(per_position.mean()),
            "accuracy_in_distribution": float(per_position[:length].mean()),
            "longest_length_at_90": float(longest),
            **{
                f"{LENGTH_PREFIX}{index + 1}": float(value)
                for index, value in enumerate(per_position)
            },
        }

    def describe(self) -> str:
        group = self.data.group if self.data.group != "cyclic" else f"Z_{self.data.cyclic_order}"
        return (
            f"word problems on {group} ({self.data.vocabulary_size} elements), trained at length "
            f"{self.data.train_length}, tested up to {self.data.max_test_length}"
        )


# ---------------------------------------------------------------------------------- ICLL


@dataclass
class ICLLTaskConfig:
    """In-context language learning on random automata: every setting of a run."""

    data: icll.ICLLConfig = field(default_factory=lambda: icll.ICLLConfig(sequence_length=128))
    """The automata and the sequences (RegBench's defaults but 128 tokens per sequence)."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """The sequence model; ``--model.cell=NAME`` picks the mixer."""
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    """AdamW or Muon and the schedule."""
    trainer: TrainerConfig = field(default_factory=task_trainer)
    """Stopping, evaluation, logging."""
    evaluation: EvaluationConfig = field(
        default_factory=lambda: EvaluationConfig(sequences=128, batch_size=128)
    )
    """Held-out sequences scored (each of its own test automaton)."""
    seed: int = 0
    """Seeds the weights and the training batches."""


class ICLLProblem:
    """Next-token prediction over strings of one automaton per sequence."""

    unit = "token"
    input_size = None

    def __init__(self, config: ICLLTaskConfig) -> None:
        self.config, self.data = config, config.data
        self.vocabulary_size: int | None = config.data.vocabulary_size
        self.output_size = config.data.vocabulary_size
        self._sets: dict[int, tuple[icll.ICLLBatch, dict[str, float]]] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> icll.ICLLBatch:
        return icll.draw_batch(self.data, batch_size, generator, "train")

    def loss(self, model: SequenceModel, batch: icll.ICLLBatch) -> tuple[Tensor, int]:
        return masked_token_loss(model, batch.inputs, batch.targets, batch.mask)

    def held_out(self, stream: int) -> tuple[icll.ICLLBatch, dict[str, float]]:
        """The held-out sequences and the n-gram baselines' metrics on them."""
        if stream not in self._sets:
            batch = concatenated(
                evaluation_sets(
                    lambda count, generator: icll.draw_batch(self.data, count, generator, "test"),
                    self.config.seed,
                    stream,
                    self.config.evaluation,
                )
            )
            baselines = {}
            for order in ICLL_NGRAM_ORDERS:
                metrics = icll.ngram_baseline(batch, order, self.data.vocabulary_size)
                baselines[f"ngram_{order}_accuracy"] = metrics["allowed_accuracy"]
                baselines[f"ngram_{order}_total_variation"] = metrics["total_variation"]
            self._sets[stream] = (batch, baselines)
        return self._sets[stream]

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        batch, baselines = self.held_out(stream)
        logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)
        loss = functional.cross_entropy(logits[batch.mask], batch.targets[batch.mask])
        return {
            "loss": float(loss),
            "accuracy": icll.allowed_accuracy(logits.argmax(-1), batch),
            "total_variation": icll.total_variation(logits.softmax(-1), batch),
            **baselines,
        }

    def describe(self) -> str:
        data = self.data
        return (
            f"random automata ({data.min_states}-{data.max_states} states, alphabets of "
            f"{data.min_alphabet_size}-{data.max_alphabet_size} of {data.num_symbols} symbols), "
            f"{data.sequence_length} tokens per sequence, test automata held out"
        )


# ------------------------------------------------------------------------------- passkey


@dataclass
class PasskeyTaskConfig:
    """Passkey retrieval, trained short and tested long: every setting of a run."""

    data: passkey.PasskeyConfig = field(
        default_factory=lambda: passkey.PasskeyConfig(train_length=64, test_length_factor=16)
    )
    """The key, the filler, the training length and how far the test lengths go."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """The sequence model; ``--model.cell=NAME`` picks the mixer."""
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    """AdamW or Muon and the schedule."""
    trainer: TrainerConfig = field(default_factory=task_trainer)
    """Stopping, evaluation, logging."""
    evaluation: EvaluationConfig = field(
        default_factory=lambda: EvaluationConfig(sequences=64, batch_size=64)
    )
    """Held-out keys scored at every test length."""
    seed: int = 0
    """Seeds the weights and the training batches."""


def passkey_lengths(data: passkey.PasskeyConfig) -> list[int]:
    """The training length times 1, 2, 4, ... up to ``test_length_factor``, and the last."""
    longest = data.train_length * data.test_length_factor
    lengths, length = [], data.train_length
    while length < longest:
        lengths.append(length)
        length *= 2
    return [*lengths, longest]


class PasskeyProblem:
    """The key is scored at the last ``key_digits`` positions (teacher forcing)."""

    unit = "token"
    input_size = None

    def __init__(self, config: PasskeyTaskConfig) -> None:
        self.config, self.data = config, config.data
        self.vocabulary_size: int | None = config.data.vocabulary_size
        self.output_size = config.data.vocabulary_size
        self._sets: dict[int, list[TokenBatch]] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> TokenBatch:
        return passkey.draw_batch(self.data, batch_size, self.data.train_length, generator)

    def loss(self, model: SequenceModel, batch: TokenBatch) -> tuple[Tensor, int]:
        return masked_token_loss(model, batch.inputs, batch.targets, batch.mask)

    def held_out(self, stream: int) -> list[TokenBatch]:
        """Held-out keys at each test length."""
        if stream not in self._sets:
            self._sets[stream] = [
                concatenated(
                    evaluation_sets(
                        lambda count, generator, length=length: passkey.draw_batch(
                            self.data, count, length, generator, "test"
                        ),
                        self.config.seed,
                        stream,
                        self.config.evaluation,
                    )
                )
                for length in passkey_lengths(self.data)
            ]
        return self._sets[stream]

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        by_length, digits, losses = {}, [], []
        for length, batch in zip(passkey_lengths(self.data), self.held_out(stream), strict=True):
            logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)
            metrics = token_metrics(logits, batch.targets, batch.mask)
            by_length[f"{LENGTH_PREFIX}{length}"] = metrics["sequence_accuracy"]
            digits.append(metrics["accuracy"])
            losses.append(metrics["loss"])
        return {
            "loss": losses[0],
            "accuracy": sum(by_length.values()) / len(by_length),
            "digit_accuracy": sum(digits) / len(digits),
            **by_length,
        }

    def describe(self) -> str:
        lengths = passkey_lengths(self.data)
        return (
            f"{self.data.key_digits}-digit passkeys in {self.data.filler} filler, trained at "
            f"{self.data.train_length} tokens, tested at {', '.join(map(str, lengths))}"
        )


# -------------------------------------------------------------------------------- adding


@dataclass
class AddingTaskConfig:
    """The adding problem: every setting of a run."""

    data: adding.AddingConfig = field(default_factory=lambda: adding.AddingConfig(100))
    """The sequence length (the papers go to 1,000) and where the markers sit."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """The sequence model; ``--model.cell=NAME`` picks the mixer."""
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    """AdamW or Muon and the schedule."""
    trainer: TrainerConfig = field(default_factory=task_trainer)
    """Stopping, evaluation, logging."""
    evaluation: EvaluationConfig = field(
        default_factory=lambda: EvaluationConfig(sequences=1024, batch_size=256)
    )
    """Held-out sequences scored."""
    seed: int = 0
    """Seeds the weights and the training batches."""


class AddingProblem:
    """The sum is read from the model's output at the last step."""

    unit = "sequence"
    vocabulary_size = None
    input_size: int | None = 2
    output_size = 1

    def __init__(self, config: AddingTaskConfig) -> None:
        self.config, self.data = config, config.data
        self._sets: dict[int, SequenceBatch] = {}

    def train_batch(self, batch_size: int, generator: torch.Generator) -> SequenceBatch:
        return adding.draw_batch(self.data, batch_size, generator)

    def loss(self, model: SequenceModel, batch: SequenceBatch) -> tuple[Tensor, int]:
        outputs, _ = model(batch.inputs)  # (B, T, 1)
        return functional.mse_loss(outputs[:, -1, 0], batch.targets), len(batch.targets)

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        if stream not in self._sets:
            self._sets[stream] = concatenated(
                evaluation_sets(
                    lambda count, generator: adding.draw_batch(self.data, count, generator),
                    self.config.seed,
                    stream,
                    self.config.evaluation,
                )
            )
        batch = self._sets[stream]
        read = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)[:, -1, 0]
        error = read - batch.targets
        mse = float(error.square().mean())
        return {
            "loss": mse,
            "mse": mse,
            "accuracy": float((error.abs() < ADDING_TOLERANCE).double().mean()),
        }

    def describe(self) -> str:
        return (
            f"adding problem, T = {self.data.sequence_length}, markers "
            f"{self.data.marker_placement} (the constant 1 scores mse 0.167)"
        )


# --------------------------------------------------------------------- sequential digits


@dataclass
class SequentialDigitsTaskConfig:
    """8x8 digits read one pixel per step: every setting of a run."""

    data: sequential_digits.SequentialDigitsConfig = field(
        default_factory=sequential_digits.SequentialDigitsConfig
    )
    """Pixel order (``data.permuted``) and the split of the 1,797 images."""
    model: SequenceModelConfig = field(default_factory=SequenceModelConfig)
    """The sequence model; ``--model.cell=NAME`` picks the mixer."""
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    """AdamW or Muon and the schedule."""
    trainer: TrainerConfig = field(default_factory=task_trainer)
    """Stopping, evaluation, logging."""
    evaluation: EvaluationConfig = field(
        default_factory=lambda: EvaluationConfig(sequences=360, batch_size=360)
    )
    """Test images scored (the test split has 359 with the default 20%: all of them)."""
    seed: int = 0
    """Seeds the weights and the training batches."""


class SequentialDigitsProblem:
    """The digit is read from the model's output at the last pixel. Validation and test both
    score the held-out images (validation only watches training)."""

    unit = "sequence"
    vocabulary_size = None
    input_size: int | None = 1
    output_size = sequential_digits.NUM_CLASSES

    def __init__(self, config: SequentialDigitsTaskConfig) -> None:
        self.config, self.data = config, config.data
        self._test: SequenceBatch | None = None

    def train_batch(self, batch_size: int, generator: torch.Generator) -> SequenceBatch:
        return sequential_digits.draw_batch(self.data, batch_size, generator, "train")

    def loss(self, model: SequenceModel, batch: SequenceBatch) -> tuple[Tensor, int]:
        outputs, _ = model(batch.inputs)  # (B, 64, 10)
        return functional.cross_entropy(outputs[:, -1], batch.targets), len(batch.targets)

    def evaluate(self, model: SequenceModel, stream: int) -> dict[str, float]:
        if self._test is None:
            whole = sequential_digits.load_split(self.data, "test")
            count = min(self.config.evaluation.sequences, len(whole.targets))
            self._test = SequenceBatch(whole.inputs[:count], whole.targets[:count])
        batch = self._test
        logits = batched_logits(model, batch.inputs, self.config.evaluation.batch_size)[:, -1]
        return {
            "loss": float(functional.cross_entropy(logits, batch.targets)),
            "accuracy": float((logits.argmax(-1) == batch.targets).double().mean()),
        }

    def describe(self) -> str:
        order = "a fixed random pixel order" if self.data.permuted else "row by row"
        return f"scikit-learn's 8x8 digits read one pixel per step ({order}), T = 64"


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
        "word problems on groups (parity, Z_n, S3, S5, A5), tested up to 4x longer",
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
