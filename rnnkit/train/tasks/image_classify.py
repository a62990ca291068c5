"""``rnnkit train image-classify``: scikit-learn's 8x8 digits as images, classified by pLSTM
layers over the pixel grid (``--model.cell=plstm``, the default) or by any registered cell
reading the image one row per step (``--model.cell=lstm``).

The images and the train/test split are those of ``sequential-digits``
(``rnnkit.data.benchmarks.sequential_digits``: ``sklearn.datasets.load_digits``, bundled, no
download; intensities scaled to [0, 1]; ``split_seed`` and ``test_fraction``), as ``(8, 8, 1)``
grids. Training step ``s`` draws its images from ``supervised.batch_generator(seed, s)``, so a
resumed run sees the batches of the uninterrupted one. Validation and ``rnnkit eval`` both score
the first ``evaluation.sequences`` test images (validation only watches training): ``loss``
(nats per image) and ``accuracy``, with ``parameter_count``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor
from torch.nn import functional

from rnnkit.data.benchmarks import sequential_digits
from rnnkit.data.benchmarks.batches import Split
from rnnkit.models.image_classifier import ImageClassifier, ImageClassifierConfig, batched_logits
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.task import FitResult
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.benchmark_task import EvaluationConfig, task_optimizer
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.threads import restoring_threads
from rnnkit.train.trainer import TrainerConfig

NAME = "image-classify"
IMAGE_SHAPE = (8, 8, 1)


@dataclass
class DigitImagesConfig:
    """Which images are held out."""

    split_seed: int = 0
    """Seed of the train/test assignment of the images."""
    test_fraction: float = 0.2
    """Share of the images in the test split, in (0, 1)."""

    def source(self) -> sequential_digits.SequentialDigitsConfig:
        """The same split, row-major, as ``sequential-digits`` data."""
        return sequential_digits.SequentialDigitsConfig(
            split_seed=self.split_seed, test_fraction=self.test_fraction
        )

    def __post_init__(self) -> None:
        self.source()  # its range checks


def default_trainer() -> TrainerConfig:
    """1,000 steps of 32 images or 5 minutes of training, evaluated each minute."""
    return TrainerConfig(max_steps=1000, time_budget_seconds=300, eval_interval_seconds=60)


@dataclass
class ImageClassifyConfig:
    """Digit images classified by pLSTM over the grid or a cell over the rows: every setting
    of a run."""

    data: DigitImagesConfig = field(default_factory=DigitImagesConfig)
    model: ImageClassifierConfig = field(default_factory=ImageClassifierConfig)
    optimizer: OptimizerConfig = field(default_factory=task_optimizer)
    trainer: TrainerConfig = field(default_factory=default_trainer)
    evaluation: EvaluationConfig = field(default_factory=lambda: EvaluationConfig(sequences=360))
    seed: int = 0


def load_images(config: DigitImagesConfig, split: Split) -> tuple[Tensor, Tensor]:
    """``images (N, 8, 8, 1)`` float32 and ``labels (N,)`` int64 of ``"train"`` or ``"test"``."""
    whole = sequential_digits.load_split(config.source(), split)
    return whole.inputs.reshape(-1, *IMAGE_SHAPE), whole.targets


class ImageClassifyTask(supervised.NoCarriedTensors):
    """The ``TrainingTask``: cross-entropy of the digit, per image."""

    unit = "image"

    def __init__(self, config: ImageClassifyConfig) -> None:
        self.config = config
        self.model = ImageClassifier(config.model, IMAGE_SHAPE, sequential_digits.NUM_CLASSES)
        self.train_images, self.train_labels = load_images(config.data, "train")
        images, labels = load_images(config.data, "test")
        count = min(config.evaluation.sequences, len(labels))
        self.test_images, self.test_labels = images[:count], labels[:count]

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        generator = supervised.batch_generator(self.config.seed, step)
        batch_size = self.config.trainer.batch_size
        rows = torch.randint(len(self.train_labels), (batch_size,), generator=generator)
        logits = self.model(self.train_images[rows])
        return functional.cross_entropy(logits, self.train_labels[rows]), batch_size

    def evaluate(self) -> dict[str, float]:
        logits = batched_logits(self.model, self.test_images, self.config.evaluation.batch_size)
        return {
            "loss": float(functional.cross_entropy(logits, self.test_labels)),
            "accuracy": float((logits.argmax(-1) == self.test_labels).double().mean()),
            "parameter_count": float(self.model.parameter_count()),
        }

    def metadata(self) -> dict[str, Any]:
        return {}

    def describe(self) -> str:
        return (
            f"data: scikit-learn's 8x8 digits as images, {len(self.train_labels)} training, "
            f"{len(self.test_labels)} scored\nmodel: {self.model.describe()}, width "
            f"{self.config.model.hidden_size}; {self.model.parameter_count():,} parameters"
        )


def build(config: ImageClassifyConfig, metadata: dict[str, Any] | None) -> ImageClassifyTask:
    return ImageClassifyTask(config)


def format_metrics(metrics: dict[str, float]) -> str:
    return f"loss {metrics['loss']:.4f}, accuracy {metrics['accuracy']:.4f}"


def report(task: ImageClassifyTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
    task.model.eval()
    stream.write(
        f"after {result.step} steps ({result.train_seconds:.0f} s of training), "
        f"test set: {format_metrics(task.evaluate())}\n"
    )


@restoring_threads
def evaluate_run(run_dir: Path, stream: TextIO) -> dict[str, float]:
    _, task, step = supervised.load_run(run_dir, NAME, ImageClassifyConfig, build)
    metrics = task.evaluate()
    stream.write(
        f"{NAME} test set (model at step {step}, {int(metrics['parameter_count']):,} "
        f"parameters): {format_metrics(metrics)}\n"
    )
    return metrics


def next_steps(run_dir: Path) -> str:
    return (
        f"test-set metrics (as JSON with --json):\n  rnnkit eval {run_dir}\n"
        f"the row-by-row baseline:\n  rnnkit train {NAME} --model.cell=lstm\n"
    )


DEFINITIONS = [
    TaskDefinition(
        name=NAME,
        description="8x8 digit images classified by pLSTM over the grid or a cell over rows",
        config_type=ImageClassifyConfig,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
    )
]
