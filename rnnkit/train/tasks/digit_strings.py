"""Reading strings of handwritten digits: a CRNN trained with CTC (``rnnkit train digit-strings``).

Strings of 1 to 8 of scikit-learn's 8x8 digit images (``rnnkit.data.digit_strings``: random
gaps and vertical jitter; train, validation and test strings from disjoint image pools) are read
column by column by ``rnnkit.models.CRNN`` and trained with CTC (Graves et al. 2006). The loss
is in nats per digit. Validation reads with greedy (best path) decoding and reports the exact
string accuracy, the label error rate (edits per true digit) and the sequence error rate;
``rnnkit eval RUN`` reads the test strings with greedy decoding, prefix beam search (Hannun et
al. 2014) and prefix beam search with a character bigram model as external scorer. The digits of
a string are uniform and independent, so the bigram model knows nothing the network does not:
it shows the hook at work, and should neither help nor hurt much.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from rnnkit.data.digit_strings import (
    NUM_DIGITS,
    DigitStringBatch,
    DigitStringsConfig,
    draw_batch,
    draw_digits,
    draw_set,
    load_pools,
)
from rnnkit.decoding.ctc import (
    CharacterNgramScorer,
    ctc_loss,
    greedy_decode,
    prefix_beam_search,
)
from rnnkit.decoding.metrics import label_error_rate, sequence_error_rate
from rnnkit.models.crnn import BLANK, CRNN, CRNNConfig
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.task import FitResult
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tasks.digit_strings_plots import (
    PLOT_FILE,
    choose_examples,
    digits_text,
    plot_predictions,
)
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

NAME = "digit-strings"
EVALUATION_BATCH_SIZE = 250
NGRAM_TRAINING_STRINGS = 20_000
NGRAM_STREAM = 4
"""The fixed generator of the n-gram model's training strings (4 is neither a validation, a test
nor a training-step stream of ``supervised``)."""


@dataclass
class DecodingConfig:
    """How ``rnnkit eval`` and the report read strings beside greedy decoding."""

    beam_width: int = 8
    """Prefixes kept by prefix beam search."""
    label_threshold: float = -12.0
    """Beam search skips labels whose frame log-probability is below this."""
    ngram_order: int = 2
    """Order of the character n-gram model used as the beam's external scorer."""
    ngram_weight: float = 0.3
    """alpha: weight of the n-gram log-probabilities in the beam's score."""
    insertion_bonus: float = 0.7
    """beta: added per digit (0.3 log 10 = 0.69 makes up for a uniform model's cost)."""
    examples: int = 16
    """Test strings printed and drawn in predictions.png (misread ones first)."""


@dataclass
class DigitStringsTaskConfig:
    """Digit strings read by a CRNN with CTC: every setting of a run."""

    data: DigitStringsConfig = field(default_factory=DigitStringsConfig)
    """The strings and the split of the images."""
    model: CRNNConfig = field(default_factory=CRNNConfig)
    """The convolutional front end and the bidirectional reader."""
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(learning_rate=1.5e-3, weight_decay=0.01)
    )
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_steps=1500, time_budget_seconds=600, threads=1)
    )
    """Stopping, evaluation, logging. 1,500 steps take about 4 minutes on one free core; the
    10-minute budget caps runs on busy machines. One thread: this model's small convolutions and
    LSTM steps gain little from a second one and lose much when other processes share the cores."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """Beam search and its n-gram scorer."""
    seed: int = 0
    """Seeds the weights and the training strings: runs stopped by steps repeat exactly."""


@dataclass
class Readings:
    """What a decoder read from a set of strings, beside the truth."""

    references: list[tuple[int, ...]]
    hypotheses: list[tuple[int, ...]]
    seconds: float

    def metrics(self) -> dict[str, float]:
        error_rate = sequence_error_rate(self.references, self.hypotheses)
        return {
            "exact_accuracy": 1.0 - error_rate,
            "label_error_rate": label_error_rate(self.references, self.hypotheses),
            "sequence_error_rate": error_rate,
        }


class DigitStringsTask(supervised.NoCarriedTensors):
    """The ``TrainingTask`` of reading digit strings."""

    unit = "digit"

    def __init__(self, config: DigitStringsTaskConfig) -> None:
        self.config = config
        self.pools = load_pools(config.data)
        self.model = CRNN(config.model, NUM_DIGITS + 1, config.data.height)
        self._validation: list[DigitStringBatch] | None = None

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        generator = supervised.batch_generator(self.config.seed, step)
        batch = draw_batch(
            self.pools["train"], self.config.trainer.batch_size, self.config.data, generator
        )
        loss = self.model.loss(batch.images, batch.widths, batch.digits + 1, batch.digit_counts)
        return loss, int(batch.digit_counts.sum())

    def fixed_set(self, split: str, size: int, stream: int) -> list[DigitStringBatch]:
        generator = supervised.fixed_generator(self.config.seed, stream)
        return draw_set(self.pools[split], size, EVALUATION_BATCH_SIZE, self.config.data, generator)

    def evaluate(self) -> dict[str, float]:
        if self._validation is None:
            size = self.config.data.validation_strings
            self._validation = self.fixed_set("validation", size, supervised.VALIDATION_STREAM)
        batches = self._validation
        log_probs, loss = read_log_probs(self.model, [ctc_batch(batch) for batch in batches])
        return {"loss": loss, **read_greedy(log_probs, references_of(batches)).metrics()}

    def metadata(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        sizes = ", ".join(f"{len(pool.digits)} {split}" for split, pool in self.pools.items())
        model = self.config.model
        return (
            f"digit images: {sizes} (disjoint pools); strings of "
            f"{self.config.data.min_digits}-{self.config.data.max_digits} digits, "
            f"{self.config.data.height} rows\nmodel: {self.model.num_parameters():,} parameters, "
            f"{model.conv_layers} conv x {model.channels}, {model.recurrent.num_layers} x "
            f"{'bidirectional ' if model.recurrent.bidirectional else ''}{model.recurrent.cell} "
            f"(hidden {model.recurrent.hidden_size})\n"
            + self.model.recurrent.describe_strategy()
        )


def build(config: DigitStringsTaskConfig, metadata: dict[str, Any] | None) -> DigitStringsTask:
    return DigitStringsTask(config)


def ctc_batch(batch: DigitStringBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(images, widths, CTC classes (B, L), label counts)`` of a batch of strings."""
    return batch.images, batch.widths, batch.digits + 1, batch.digit_counts


def read_log_probs(
    model: CRNN, batches: list[tuple[Tensor, Tensor, Tensor, Tensor]]
) -> tuple[list[tuple[Tensor, Tensor]], float]:
    """Per batch ``(images, widths, CTC classes (B, L), label counts (B,))`` (``ctc_batch``):
    ``(log_probs (B, T, C), lengths (B,))``, and the CTC loss in nats per label."""
    outputs, total_loss, total_digits = [], 0.0, 0
    with torch.no_grad():
        for images, widths, classes, counts in batches:
            log_probs, lengths = model(images, widths)
            digits = int(counts.sum())
            loss = ctc_loss(log_probs, lengths, classes, counts, BLANK)
            total_loss += float(loss) * digits
            total_digits += digits
            outputs.append((log_probs, lengths))
    return outputs, total_loss / total_digits


def references_of(batches: list[DigitStringBatch]) -> list[tuple[int, ...]]:
    return [
        tuple(int(digit) for digit in string) for batch in batches for string in batch.strings()
    ]


def to_digits(labels: tuple[int, ...]) -> tuple[int, ...]:
    """CTC classes (1-10, 0 the blank) to digits (0-9); in general class c to label c - 1."""
    return tuple(label - 1 for label in labels)


def read_greedy(
    outputs: list[tuple[Tensor, Tensor]], references: list[tuple[int, ...]]
) -> Readings:
    """Greedy readings of ``outputs`` (``read_log_probs``) beside their ``references``."""
    started = time.perf_counter()
    hypotheses = [
        to_digits(labels)
        for log_probs, lengths in outputs
        for labels in greedy_decode(log_probs, lengths, BLANK)
    ]
    return Readings(references, hypotheses, time.perf_counter() - started)


def read_beam(
    outputs: list[tuple[Tensor, Tensor]],
    references: list[tuple[int, ...]],
    decoding: DecodingConfig,
    scorer: CharacterNgramScorer | None = None,
) -> Readings:
    started = time.perf_counter()
    hypotheses = []
    for log_probs, lengths in outputs:
        beams = prefix_beam_search(
            log_probs,
            lengths,
            decoding.beam_width,
            BLANK,
            scorer,
            decoding.ngram_weight,
            decoding.insertion_bonus if scorer is not None else 0.0,
            decoding.label_threshold,
        )
        hypotheses += [to_digits(beam[0].labels) for beam in beams]
    return Readings(references, hypotheses, time.perf_counter() - started)


def fit_ngram(config: DigitStringsTaskConfig) -> CharacterNgramScorer:
    """The n-gram scorer fitted on the digits of training strings (as CTC classes 1-10)."""
    generator = supervised.fixed_generator(config.seed, NGRAM_STREAM)
    strings = [draw_digits(config.data, generator) for _ in range(NGRAM_TRAINING_STRINGS)]
    scorer = CharacterNgramScorer(config.decoding.ngram_order, range(1, NUM_DIGITS + 1))
    return scorer.fit([[digit + 1 for digit in string] for string in strings])


def read_test_set(
    task: DigitStringsTask, with_beams: bool
) -> tuple[list[DigitStringBatch], float, dict[str, Readings]]:
    """The test strings, their loss and each decoder's readings."""
    batches = task.fixed_set("test", task.config.data.test_strings, supervised.TEST_STREAM)
    outputs, loss = read_log_probs(task.model, [ctc_batch(batch) for batch in batches])
    references = references_of(batches)
    readings = {"greedy": read_greedy(outputs, references)}
    if with_beams:
        decoding = task.config.decoding
        readings["beam"] = read_beam(outputs, references, decoding)
        readings["beam_ngram"] = read_beam(outputs, references, decoding, fit_ngram(task.config))
    return batches, loss, readings


def write_readings(
    stream: TextIO, loss: float, readings: dict[str, Readings], unit: str = "digit"
) -> None:
    stream.write(f"  loss {loss:.4f} nats/{unit}\n")
    for name, reading in readings.items():
        metrics = reading.metrics()
        stream.write(
            f"  {name:<10} exact {metrics['exact_accuracy']:.4f} | "
            f"label error rate {metrics['label_error_rate']:.4f} | "
            f"sequence error rate {metrics['sequence_error_rate']:.4f} "
            f"({reading.seconds:.2f} s)\n"
        )


def report(task: DigitStringsTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
    """Final validation metrics, test metrics with greedy decoding, examples, the plot."""
    if result.evaluation:
        evaluation = result.evaluation
        stream.write(
            f"final validation (greedy) after {result.step} steps "
            f"({result.train_seconds:.0f} s of training): loss {evaluation['loss']:.4f} "
            f"nats/digit, exact {evaluation['exact_accuracy']:.4f}, "
            f"label error rate {evaluation['label_error_rate']:.4f}\n"
        )
    task.model.eval()
    batches, loss, readings = read_test_set(task, with_beams=False)
    stream.write(f"test strings ({task.config.data.test_strings}, unseen images):\n")
    write_readings(stream, loss, readings)
    greedy = readings["greedy"]
    chosen = choose_examples(greedy.references, greedy.hypotheses, task.config.decoding.examples)
    for index in chosen:
        true, read = digits_text(greedy.references[index]), digits_text(greedy.hypotheses[index])
        stream.write(f"  true {true:<8} read {read:<8} {'' if true == read else 'MISREAD'}\n")
    images = [
        image[:, :width]
        for batch in batches
        for image, width in zip(batch.images, batch.widths, strict=True)
    ]
    plot_predictions(images, greedy.references, greedy.hypotheses, chosen, run_dir / PLOT_FILE)




@restoring_threads
def evaluate_run(run_dir: Path, stream: TextIO) -> dict[str, float]:
    """Test metrics of a trained run with greedy, beam and beam + n-gram decoding."""
    config, task, step = supervised.load_run(run_dir, NAME, DigitStringsTaskConfig, build)
    _, loss, readings = read_test_set(task, with_beams=True)
    stream.write(
        f"test strings: {config.data.test_strings} from the {len(task.pools['test'].digits)} "
        f"test images (model at step {step}; beam width {config.decoding.beam_width}, "
        f"{config.decoding.ngram_order}-gram weight {config.decoding.ngram_weight})\n"
    )
    write_readings(stream, loss, readings)
    results = {"loss": loss}
    for name, reading in readings.items():
        results.update({f"{name}_{key}": value for key, value in reading.metrics().items()})
    return results


def next_steps(run_dir: Path) -> str:
    return f"evaluate (greedy, beam search, beam + n-gram) with\n  rnnkit eval {run_dir}\n"


DEFINITIONS = [
    TaskDefinition(
        name=NAME,
        description="CRNN + CTC reading strings of handwritten 8x8 digits (scikit-learn's)",
        config_type=DigitStringsTaskConfig,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
    )
]
