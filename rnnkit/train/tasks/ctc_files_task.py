"""The training side of ``rnnkit train ctc --data FEATURES.npz`` (``ctc_files``): the run's
settings, the ``TrainingTask`` with its splits and padded batches, and the readings of a set of
examples by every decoder (greedy, beam search, beam search with the n-gram scorer fitted on
the training labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from rnnkit.data.files import DataFileError
from rnnkit.data.files.ctc_npz import CTCExamples, check_alignable, load_ctc_npz
from rnnkit.data.files.pairs_tsv import split_indices
from rnnkit.decoding.ctc import CharacterNgramScorer
from rnnkit.models.crnn import CRNN, CRNNConfig
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.digit_strings import (
    DecodingConfig,
    Readings,
    read_beam,
    read_greedy,
    read_log_probs,
)
from rnnkit.train.trainer import TrainerConfig

EVALUATION_BATCH = 250


@dataclass
class FeaturesDataConfig:
    """Where the feature sequences are and how they are split."""

    path: str = ""
    """The ``.npz`` file (``--data FILE``)."""
    validation_fraction: float = 0.1
    """Share of the examples held out for validation during training."""
    test_fraction: float = 0.1
    """Share held out for the test (0 when ``test`` names a file)."""
    test: str = ""
    """A separate test file (else the test split of ``path``)."""
    split_seed: int = 0
    """Seed of the shuffle that holds the splits out."""


@dataclass
class CTCFilesConfig:
    """A convolutional recurrent reader trained with CTC on a file: every setting of a run."""

    data: FeaturesDataConfig = field(default_factory=FeaturesDataConfig)
    """The file and its splits."""
    model: CRNNConfig = field(default_factory=CRNNConfig)
    """The convolutional front end and the bidirectional reader."""
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(learning_rate=1.5e-3, weight_decay=0.01)
    )
    """AdamW and its schedule (as ``digit-strings``)."""
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_steps=1500, time_budget_seconds=600, threads=1)
    )
    """Stopping, evaluation, logging."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """Beam search and its n-gram scorer."""
    seed: int = 0
    """Seeds the batches and the initialization."""


class CTCFilesTask(supervised.NoCarriedTensors):
    """The ``TrainingTask``: CTC loss per label."""

    unit = "label"
    # Not split by rank: the CRNN's BatchNorm normalizes by the statistics of the batch it sees,
    # so ranks training on their rows would not equal one process on the whole batch.
    splits_batch_by_rank = False

    def __init__(self, config: CTCFilesConfig, metadata: dict[str, Any] | None) -> None:
        self.config = config
        self._splits: dict[str, CTCExamples] | None = None
        self.summaries: list[str] = []
        if metadata is None:
            train = self.splits()["train"]
            self.alphabet, self.feature_size = train.alphabet, int(train.features.shape[2])
        else:  # a trained run: nothing read until a split is needed
            self.alphabet, self.feature_size = metadata["alphabet"], metadata["feature_size"]
        self.model = CRNN(config.model, len(self.alphabet) + 1, self.feature_size)

    def splits(self) -> dict[str, CTCExamples]:
        """The examples of each split, read on first use (checked against a resumed run)."""
        if self._splits is None:
            data = self.config.data
            if not data.path:
                raise ValueError("ctc needs a file of feature sequences: --data FEATURES.npz")
            # a resumed run reads its file with the checkpoint's alphabet and feature count
            resumed = getattr(self, "alphabet", None), getattr(self, "feature_size", None)
            whole = self.load(Path(data.path), *resumed)
            test_fraction = 0.0 if data.test else data.test_fraction
            indices = split_indices(
                len(whole), data.validation_fraction, test_fraction, data.split_seed
            )
            splits = dict(zip(("train", "validation", "test"), indices, strict=True))
            self._splits = {name: whole.subset(rows) for name, rows in splits.items()}
            if data.test:
                test = self.load(Path(data.test), whole.alphabet, whole.features.shape[2])
                self._splits["test"] = test
        return self._splits

    def load(
        self,
        path: Path,
        alphabet: list[str] | None,
        feature_size: int | None = None,
        require_labels: bool = True,
    ) -> CTCExamples:
        """A file read with ``alphabet`` (None: the file's), checked against the features the
        model reads and the frames it sees; its summary joins ``summaries``."""
        examples, report = load_ctc_npz(path, alphabet, require_labels)
        self.summaries.append(report.summary())
        if feature_size is not None and examples.features.shape[2] != feature_size:
            raise DataFileError(
                path, f"expected {feature_size} features per frame (as in training), found "
                f"{examples.features.shape[2]}", where="array 'X'",
            )  # fmt: skip
        if examples.labels is not None:  # the front end may halve the frames
            check_alignable(path, examples.labels, self.output_lengths(examples.lengths))
        return examples

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Frames the reader sees: ``lengths``, halved when ``model.halve_width``."""
        halved = self.config.model.halve_width and self.config.model.height_poolings > 0
        return lengths // 2 if halved else lengths

    def batches(self, examples: CTCExamples) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """``(images (B, D, T), lengths, classes (B, L), label counts)`` of ``EVALUATION_BATCH``
        examples each (``digit_strings.read_log_probs``'s input)."""
        return [
            self.batch(examples, list(range(start, min(start + EVALUATION_BATCH, len(examples)))))
            for start in range(0, len(examples), EVALUATION_BATCH)
        ]

    def batch(
        self, examples: CTCExamples, rows: list[int]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        lengths = examples.lengths[rows]
        images = examples.features[rows, : int(lengths.max())].transpose(1, 2)  # (B, D, T)
        labels = examples.labels or [()] * len(examples)
        sequences = [torch.tensor(labels[row], dtype=torch.int64) + 1 for row in rows]
        counts = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
        if int(counts.max()) == 0:  # no labels: a placeholder column that CTC ignores
            return images.contiguous(), lengths, torch.ones(len(rows), 1, dtype=torch.int64), counts
        classes = pad_sequence(sequences, batch_first=True)  # (B, L)
        return images.contiguous(), lengths, classes, counts

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        train = self.splits()["train"]
        generator = supervised.batch_generator(self.config.seed, step)
        rows = torch.randint(len(train), (self.config.trainer.batch_size,), generator=generator)
        images, lengths, classes, counts = self.batch(train, rows.tolist())
        return self.model.loss(images, lengths, classes, counts), int(counts.sum())

    def evaluate(self) -> dict[str, float]:
        validation = self.splits()["validation"]
        if not len(validation):
            validation = self.splits()["train"].subset(range(min(200, len(self.splits()["train"]))))
        loss, readings = read_examples(self, validation, with_beams=False)
        return {"loss": loss, **readings["greedy"].metrics()}

    def metadata(self) -> dict[str, Any]:
        return {"alphabet": self.alphabet, "feature_size": self.feature_size}

    def describe(self) -> str:
        sizes = ", ".join(f"{len(examples)} {name}" for name, examples in self.splits().items())
        model = self.config.model
        return (
            "\n".join(self.summaries) + f"\nexamples: {sizes}; {self.feature_size} features per "
            f"frame; alphabet of {len(self.alphabet)}: {' '.join(self.alphabet)}\n"
            f"model: {self.model.num_parameters():,} parameters, {model.conv_layers} conv x "
            f"{model.channels}, {model.recurrent.num_layers} x "
            f"{'bidirectional ' if model.recurrent.bidirectional else ''}{model.recurrent.cell} "
            f"(hidden {model.recurrent.hidden_size})\n" + self.model.recurrent.describe_strategy()
        )


def fit_ngram(task: CTCFilesTask) -> CharacterNgramScorer:
    """The n-gram scorer fitted on the training labels (as CTC classes 1..K)."""
    labels = task.splits()["train"].labels or []
    scorer = CharacterNgramScorer(
        task.config.decoding.ngram_order, range(1, len(task.alphabet) + 1)
    )
    return scorer.fit([[label + 1 for label in sequence] for sequence in labels])


@torch.no_grad()
def read_examples(
    task: CTCFilesTask, examples: CTCExamples, with_beams: bool
) -> tuple[float, dict[str, Readings]]:
    """The CTC loss (nats per label) and each decoder's readings of labelled ``examples``."""
    task.model.eval()
    outputs, loss = read_log_probs(task.model, task.batches(examples))
    references = examples.labels or []
    readings = {"greedy": read_greedy(outputs, references)}
    if with_beams:
        decoding = task.config.decoding
        readings["beam"] = read_beam(outputs, references, decoding)
        readings["beam_ngram"] = read_beam(outputs, references, decoding, fit_ngram(task))
    return loss, readings
