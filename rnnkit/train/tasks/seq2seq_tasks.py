"""Sequence to sequence on algorithmic problems: ``rnnkit train reverse`` and ``rnnkit train add``.

An encoder-decoder with attention (``rnnkit.models.seq2seq``) learns to reverse strings or to add
two integers written in digits (``rnnkit.data.algorithmic``). Every training step draws a fresh
batch from ``batch_generator(seed, step)``; the validation set is fixed. The loss is the token
cross-entropy of teacher forcing,

    loss = -(1 / N) sum_{b, t} log p(y_{b,t} | y_{b,<t}, x_b)     over the N real target tokens

(eos included, padding excluded), in nats per token. Validation also reports the token accuracy
of teacher forcing and the exact-sequence accuracy of greedy decoding; ``rnnkit eval RUN`` adds
beam search and inputs longer than any seen in training (length generalization).

``--model.kind=transformer`` (``--model.transformer.num_layers=N``) or ``--model.kind=universal``
(Universal Transformer with ACT, ``--model.depth.max_steps=K``) replace the recurrent model by
an attention-only one; the UT's loss adds ACT's ponder cost, its metrics the mean ponder steps
per encoder and decoder position, and ``rnnkit eval`` the mean steps per difficulty bucket
(digits per operand or string length; add: carries too) and ``ponder.png`` in the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data.algorithmic import (
    BOS,
    EOS,
    PAD,
    Batch,
    draw_examples,
    make_batch,
    vocabulary_for,
)
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig, Seq2SeqModel, build_seq2seq
from rnnkit.train.checkpoint import CheckpointError
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.plots import plot_ponder_by_difficulty
from rnnkit.train.task import FitResult
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tasks.seq2seq_plots import plot_attention_weights
from rnnkit.train.tasks.supervised import (
    TEST_STREAM,
    VALIDATION_STREAM,
    NoCarriedTensors,
    batch_generator,
    fixed_generator,
    load_run,
)
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

EVALUATION_BATCH = 500
"""Examples per forward pass in evaluation."""


@dataclass
class AlgorithmicDataConfig:
    """Which inputs a run trains and is tested on."""

    min_length: int = 1
    """Shortest training input: characters (reverse) or digits per operand (add)."""
    max_length: int = 10
    """Longest training input, in the same unit."""
    longer_min_length: int = 11
    """Shortest input of the generalization test (``rnnkit eval``), longer than trained on."""
    longer_max_length: int = 15
    """Longest input of the generalization test."""
    alphabet: str = "abcdefghij"
    """reverse: the characters of the strings (add always uses digits)."""
    validation_size: int = 1000
    """Examples in the fixed validation set."""
    test_size: int = 2000
    """Examples in each test set of ``rnnkit eval`` (same lengths, and longer)."""


@dataclass
class DecodingConfig:
    """Beam search and the examples of the report."""

    beam_width: int = 4
    """Hypotheses kept per source."""
    length_penalty: float = 0.6
    """alpha of score = log p(y) / |y|^alpha (0: raw log-probability)."""
    examples: int = 6
    """Validation examples printed after training."""


def _model() -> Seq2SeqConfig:
    """Additive attention before the step (Bahdanau), which learned the alignments of add much
    faster than Luong's general attention in our runs; no dropout, as every batch is new."""
    return Seq2SeqConfig(attention="additive", attention_style="bahdanau", dropout=0.0)


def _optimizer() -> OptimizerConfig:
    return OptimizerConfig(learning_rate=1e-2, weight_decay=0.0)


def _trainer(seconds: float) -> TrainerConfig:
    """One thread: a second thread stalls whenever another process shares the cores (measured
    50x slower); on an idle machine ``--trainer.threads=0`` uses every core (BENCHMARKS.md)."""
    return TrainerConfig(time_budget_seconds=seconds, batch_size=64, threads=1)


@dataclass
class ReverseConfig:
    """Reverse random strings: every setting of a run."""

    data: AlgorithmicDataConfig = field(default_factory=AlgorithmicDataConfig)
    """Lengths and alphabet of the strings."""
    model: Seq2SeqConfig = field(default_factory=_model)
    """The encoder-decoder."""
    optimizer: OptimizerConfig = field(default_factory=_optimizer)
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(default_factory=lambda: _trainer(120.0))
    """Stopping, evaluation, logging."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """Beam search and printed examples."""
    seed: int = 0
    """Seeds the batches, the fixed sets and the initialization."""


@dataclass
class AddConfig:
    """Add two integers written in digits: every setting of a run."""

    data: AlgorithmicDataConfig = field(default_factory=lambda: AlgorithmicDataConfig(1, 5, 6, 7))
    """Digits per operand."""
    model: Seq2SeqConfig = field(default_factory=_model)
    """The encoder-decoder."""
    optimizer: OptimizerConfig = field(default_factory=_optimizer)
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(default_factory=lambda: _trainer(300.0))
    """Stopping, evaluation, logging."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """Beam search and printed examples."""
    seed: int = 0
    """Seeds the batches, the fixed sets and the initialization."""


class Seq2SeqTask(NoCarriedTensors):
    """The ``TrainingTask`` of one algorithmic problem (``reverse`` or ``add``)."""

    unit = "token"

    def __init__(self, problem: str, config: ReverseConfig | AddConfig) -> None:
        self.problem, self.config = problem, config
        self.vocabulary = vocabulary_for(problem, config.data.alphabet)
        size = len(self.vocabulary)
        self.model: Seq2SeqModel = build_seq2seq(config.model, size, size)
        data = config.data
        generator = fixed_generator(config.seed, VALIDATION_STREAM)
        self.validation = self.draw(
            data.validation_size, data.min_length, data.max_length, generator
        )

    def draw(
        self, count: int, min_length: int, max_length: int, generator: torch.Generator
    ) -> list[Batch]:
        """``count`` examples in batches of at most ``EVALUATION_BATCH``."""
        examples = draw_examples(
            self.problem, count, min_length, max_length, generator, self.config.data.alphabet
        )
        return [
            make_batch(examples[start : start + EVALUATION_BATCH], self.vocabulary)
            for start in range(0, len(examples), EVALUATION_BATCH)
        ]

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        data = self.config.data
        batch = self.draw(
            self.config.trainer.batch_size,
            data.min_length,
            data.max_length,
            batch_generator(self.config.seed, step),
        )[0]
        total, tokens, _ = token_loss(self.model, batch)
        auxiliary = None if isinstance(self.model, Seq2Seq) else self.model.auxiliary_loss()
        return (total / tokens if auxiliary is None else total / tokens + auxiliary), tokens

    def evaluate(self) -> dict[str, float]:
        return evaluate_batches(self.model, self.validation)

    def metadata(self) -> dict[str, Any]:
        return {"problem": self.problem, "vocabulary": self.vocabulary.symbols}

    def describe(self) -> str:
        data, unit = self.config.data, "characters" if self.problem == "reverse" else "digits"
        strategy = (
            f"\nencoder:\n{self.model.encoder.describe_strategy()}"
            if isinstance(self.model, Seq2Seq)
            else ""
        )
        return (
            f"{self.problem}: inputs of {data.min_length}-{data.max_length} {unit}, "
            f"{data.validation_size} validation examples, vocabulary of {len(self.vocabulary)}\n"
            f"{self.model.describe()}{strategy}"
        )


def token_loss(model: Seq2SeqModel, batch: Batch) -> tuple[Tensor, int, int]:
    """Summed cross-entropy of teacher forcing, the number of target tokens and how many of
    them the argmax predicts."""
    logits = model(batch.source, batch.source_lengths, batch.target_input).logits  # (B, L, V)
    targets = batch.target_output
    total = functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=PAD, reduction="sum"
    )
    real = targets != PAD
    correct = int(((logits.argmax(-1) == targets) & real).sum())
    return total, int(real.sum()), correct


def exact_matches(tokens: Tensor, targets: Tensor) -> Tensor:
    """``(B,)`` True where decoded ``tokens (B, L)`` equal ``targets (B, L')`` (eos included;
    both padded with PAD)."""
    width = max(tokens.shape[1], targets.shape[1])
    tokens = functional.pad(tokens, (0, width - tokens.shape[1]), value=PAD)
    targets = functional.pad(targets, (0, width - targets.shape[1]), value=PAD)
    return (tokens == targets).all(dim=1)


def decode(
    model: Seq2SeqModel,
    batch: Batch,
    beam: DecodingConfig | None = None,
    max_length: int | None = None,
) -> Tensor:
    """Greedy (or, with ``beam``, beam search) outputs ``(B, L)`` of a batch, at most
    ``max_length`` tokens (default: the source's length + 2, which covers the reversal and the
    sum, plus eos)."""
    if max_length is None:
        max_length = batch.source.shape[1] + 2
    if beam is None:
        return model.greedy(batch.source, batch.source_lengths, BOS, EOS, max_length).tokens
    result = model.beam_search(
        batch.source, batch.source_lengths, BOS, EOS, max_length,
        beam.beam_width, beam.length_penalty,
    )  # fmt: skip
    return result.best().tokens


@torch.no_grad()
def evaluate_batches(
    model: Seq2SeqModel, batches: list[Batch], beam: DecodingConfig | None = None
) -> dict[str, float]:
    """Loss (nats per token), teacher-forced token accuracy, greedy exact-sequence accuracy,
    with ``beam`` the beam search's exact-sequence accuracy and, for a Universal Transformer,
    the mean ponder steps per real source and target position of teacher forcing."""
    was_training = model.training
    model.eval()
    sums = dict.fromkeys(("loss", "tokens", "correct", "exact", "beam", "examples"), 0.0)
    ponder = {"encoder": 0.0, "decoder": 0.0, "sources": 0.0}
    for batch in batches:
        total, tokens, correct = token_loss(model, batch)
        steps = None if isinstance(model, Seq2Seq) else model.ponder_steps()
        if steps is not None:  # padded positions take 0 steps
            ponder["encoder"] += float(steps[0].sum())
            ponder["decoder"] += float(steps[1][batch.target_output != PAD].sum())
            ponder["sources"] += float(batch.source_lengths.sum())
        sums["loss"] += float(total)
        sums["tokens"], sums["correct"] = sums["tokens"] + tokens, sums["correct"] + correct
        sums["exact"] += int(exact_matches(decode(model, batch), batch.target_output).sum())
        if beam is not None:
            sums["beam"] += int(
                exact_matches(decode(model, batch, beam), batch.target_output).sum()
            )
        sums["examples"] += len(batch.examples)
    model.train(was_training)
    result = {
        "loss": sums["loss"] / sums["tokens"],
        "token_accuracy": sums["correct"] / sums["tokens"],
        "exact_accuracy": sums["exact"] / sums["examples"],
    }
    if beam is not None:
        result["beam_exact_accuracy"] = sums["beam"] / sums["examples"]
    if ponder["sources"]:
        result["ponder_steps_encoder"] = ponder["encoder"] / ponder["sources"]
        result["ponder_steps_decoder"] = ponder["decoder"] / sums["tokens"]
    return result


def carries(source: str) -> int:
    """The carries of the column addition of ``source`` ("a+b")."""
    first, second = (operand[::-1] for operand in source.split("+"))
    count = carry = 0
    for index in range(max(len(first), len(second))):
        column = sum(int(digits[index]) for digits in (first, second) if index < len(digits))
        carry = int(column + carry >= 10)
        count += carry
    return count


@torch.no_grad()
def ponder_by_difficulty(
    problem: str, model: Seq2SeqModel, batches: list[Batch]
) -> dict[str, float]:
    """A Universal Transformer's mean ponder steps per example (teacher forcing), encoder and
    decoder, by difficulty: ``ponder_{side}_by_length_N`` (digits of the longer operand, or
    characters) and for add ``ponder_{side}_by_carries_N``; empty for other models."""
    if isinstance(model, Seq2Seq):
        return {}
    model.eval()
    buckets: dict[str, list[float]] = {}
    for batch in batches:
        model(batch.source, batch.source_lengths, batch.target_input)
        steps = model.ponder_steps()
        if steps is None:
            return {}
        encoder = steps[0].sum(1) / batch.source_lengths
        real = batch.target_output != PAD
        decoder = (steps[1] * real).sum(1) / real.sum(1)
        for index, (source, _) in enumerate(batch.examples):
            keys = [f"length_{max(map(len, source.split('+')))}"]
            keys += [f"carries_{carries(source)}"] if problem == "add" else []
            for key in keys:
                for side, values in (("encoder", encoder), ("decoder", decoder)):
                    buckets.setdefault(f"ponder_{side}_by_{key}", []).append(float(values[index]))
    return {key: sum(values) / len(values) for key, values in sorted(buckets.items())}


def plot_ponder(problem: str, metrics: dict[str, float], path: Path) -> Path | None:
    """``ponder.png``: the ``ponder_*_by_*`` metrics, one panel per difficulty."""
    panels = []
    for difficulty, label in (("length", "digits per operand" if problem == "add" else
                                "characters"), ("carries", "carries")):  # fmt: skip
        series = {
            side: sorted(
                (int(key.rsplit("_", 1)[1]), value)
                for key, value in metrics.items()
                if key.startswith(f"ponder_{side}_by_{difficulty}_")
            )
            for side in ("encoder", "decoder")
        }
        if series["encoder"]:
            panels.append((label, series))
    return plot_ponder_by_difficulty(panels, path, f"{problem}: ACT ponder steps")


def builder(problem: str):
    """The ``build(config, metadata)`` of ``problem``."""

    def build(config: ReverseConfig | AddConfig, metadata: dict[str, Any] | None) -> Seq2SeqTask:
        task = Seq2SeqTask(problem, config)
        if metadata is not None and metadata.get("vocabulary") != task.vocabulary.symbols:
            raise CheckpointError(
                f"the checkpoint's vocabulary {metadata.get('vocabulary')} is not this "
                f"config's {task.vocabulary.symbols}"
            )
        return task

    return build


def report(task: Seq2SeqTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
    """Final metrics, a few validation predictions, ``attention.png``."""
    if result.evaluation:
        metrics = result.evaluation
        stream.write(
            f"final validation loss {metrics['loss']:.4f} nats/token, token accuracy "
            f"{metrics['token_accuracy']:.4f}, exact sequences (greedy) "
            f"{metrics['exact_accuracy']:.4f} after {result.step} steps "
            f"({result.train_seconds:.0f} s of training)\n"
        )
    write_examples(task, stream)
    path = plot_attention(task, run_dir)
    if path is not None:
        stream.write(f"attention of a validation example: {path}\n")


@torch.no_grad()
def write_examples(task: Seq2SeqTask, stream: TextIO) -> None:
    """The greedy predictions of the first validation examples."""
    count = task.config.decoding.examples
    if count <= 0:
        return
    batch = make_batch(task.validation[0].examples[:count], task.vocabulary)
    task.model.eval()
    predictions = decode(task.model, batch).tolist()
    stream.write("validation examples (greedy):\n")
    for (source, target), tokens in zip(batch.examples, predictions, strict=True):
        predicted = task.vocabulary.decode(tokens)
        verdict = "ok" if predicted == target else f"wrong, expected {target}"
        stream.write(f"  {source} -> {predicted}  ({verdict})\n")


@torch.no_grad()
def plot_attention(task: Seq2SeqTask, run_dir: Path) -> Path | None:
    """``attention.png``: the attention weights of the longest of the first 20 validation
    examples while the model decodes it greedily (None without attention)."""
    if task.model.attention is None:
        return None
    examples = task.validation[0].examples[:20]
    longest = max(examples, key=lambda example: len(example[0]))
    task.model.eval()
    predicted, weights = greedy_attention(task.model, make_batch([longest], task.vocabulary))
    symbols = task.vocabulary.symbols
    return plot_attention_weights(
        weights,
        list(longest[0]),
        [symbols[token] for token in predicted.tolist()],
        f"{task.problem}: attention",
        run_dir / "attention.png",
    )


@torch.no_grad()
def greedy_attention(
    model: Seq2Seq, batch: Batch, max_length: int | None = None
) -> tuple[Tensor, Tensor]:
    """The greedy prediction ``(L,)`` of a one-example batch (up to eos or ``max_length``) and
    the attention weights ``(L, S)`` while the model decodes it; the model must attend."""
    predicted = decode(model, batch, max_length=max_length)[0]
    predicted = predicted[: int((predicted != PAD).sum())]  # up to eos (or max_length)
    target_input = torch.cat([torch.tensor([BOS]), predicted[:-1]]).unsqueeze(0)
    attention = model(batch.source, batch.source_lengths, target_input).attention
    assert attention is not None  # callers check model.attention
    return predicted, attention[0]


def format_test(config: ReverseConfig | AddConfig, metrics: dict[str, float], step: int) -> str:
    data = config.data
    lines = [f"test set of {data.test_size} examples (model at step {step}):"]
    for prefix, low, high in (
        ("", data.min_length, data.max_length),
        ("longer_", data.longer_min_length, data.longer_max_length),
    ):
        lines.append(
            f"  lengths {low}-{high}: loss {metrics[prefix + 'loss']:.4f} nats/token, token "
            f"accuracy {metrics[prefix + 'token_accuracy']:.4f}, exact sequences greedy "
            f"{metrics[prefix + 'exact_accuracy']:.4f}, beam "
            f"{metrics[prefix + 'beam_exact_accuracy']:.4f} (width {config.decoding.beam_width})"
        )
    return "\n".join(lines) + "\n"


def evaluation_runner(problem: str, config_type: type):
    """The ``evaluate_run(run_dir, stream)`` of ``problem``."""

    @restoring_threads
    def evaluate_run(run_dir: str | Path, stream: TextIO) -> dict[str, float]:
        config, task, step = load_run(run_dir, problem, config_type, builder(problem))
        data = config.data
        generator = fixed_generator(config.seed, TEST_STREAM)
        test = task.draw(data.test_size, data.min_length, data.max_length, generator)
        longer = task.draw(
            data.test_size, data.longer_min_length, data.longer_max_length, generator
        )
        metrics = evaluate_batches(task.model, test, config.decoding)
        longer_metrics = evaluate_batches(task.model, longer, config.decoding)
        metrics.update({f"longer_{key}": value for key, value in longer_metrics.items()})
        stream.write(format_test(config, metrics, step))
        ponder = ponder_by_difficulty(problem, task.model, test + longer)
        if ponder:
            metrics.update(ponder)
            path = plot_ponder(problem, ponder, Path(run_dir) / "ponder.png")
            stream.write(f"mean ponder steps by difficulty: {path}\n")
        return metrics

    return evaluate_run


def next_steps(run_dir: Path) -> str:
    return f"evaluate with\n  rnnkit eval {run_dir}\n"


DEFINITIONS = [
    TaskDefinition(
        name="reverse",
        description="encoder-decoder with attention that reverses random strings",
        config_type=ReverseConfig,
        build=builder("reverse"),
        report=report,
        evaluate_run=evaluation_runner("reverse", ReverseConfig),
        next_steps=next_steps,
    ),
    TaskDefinition(
        name="add",
        description="encoder-decoder with attention that adds two integers written in digits",
        config_type=AddConfig,
        build=builder("add"),
        report=report,
        evaluate_run=evaluation_runner("add", AddConfig),
        next_steps=next_steps,
    ),
]
