"""The training side of ``rnnkit train seq2seq --data PAIRS.tsv`` (``seq2seq_files``): the run's
settings, the ``TrainingTask`` with its splits, vocabularies and padded batches, and the scores
of a set of pairs by greedy decoding and beam search.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from rnnkit.data.algorithmic import BOS, EOS, Batch
from rnnkit.data.files.pairs_tsv import (
    Pair,
    PairsDataConfig,
    TokenVocabulary,
    join_tokens,
    load_splits,
)
from rnnkit.decoding.metrics import label_error_rate
from rnnkit.models.seq2seq import Seq2Seq, Seq2SeqConfig
from rnnkit.train.checkpoint import CheckpointError
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.tasks import supervised
from rnnkit.train.tasks.seq2seq_tasks import DecodingConfig, decode, token_loss
from rnnkit.train.trainer import TrainerConfig

EVALUATION_BATCH = 250


@dataclass
class Seq2SeqFilesConfig:
    """An encoder-decoder on a file of pairs: every setting of a run."""

    data: PairsDataConfig = field(default_factory=PairsDataConfig)
    """The pairs file and its splits."""
    model: Seq2SeqConfig = field(
        default_factory=lambda: Seq2SeqConfig(attention="additive", attention_style="bahdanau")
    )
    """The encoder-decoder (Bahdanau attention, as ``reverse`` and ``add``)."""
    optimizer: OptimizerConfig = field(
        default_factory=lambda: OptimizerConfig(learning_rate=3e-3, weight_decay=0.0)
    )
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(time_budget_seconds=300, batch_size=64, threads=1)
    )
    """Stopping, evaluation, logging (one thread, as the other seq2seq tasks)."""
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    """Beam search and the printed examples."""
    seed: int = 0
    """Seeds the batches and the initialization."""


class Seq2SeqFilesTask(supervised.NoCarriedTensors):
    """The ``TrainingTask``: teacher-forced cross-entropy per target token."""

    unit = "token"
    splits_batch_by_rank = True  # under torchrun each rank trains its rows (train_loss)

    def __init__(self, config: Seq2SeqFilesConfig, metadata: dict[str, Any] | None) -> None:
        self.config = config
        self._splits: dict[str, list[Pair]] | None = None
        self.summaries: list[str] = []
        if metadata is None:
            train = self.splits()["train"]
            self.source_vocabulary = TokenVocabulary.build(source for source, _ in train)
            self.target_vocabulary = TokenVocabulary.build(target for _, target in train)
            longest = max(len(target) for _, target in train)
            self.max_length = config.data.max_output_length or longest + 10
        else:  # a trained run: nothing read until a split is needed
            self.source_vocabulary = TokenVocabulary(metadata["source_vocabulary"][4:])
            self.target_vocabulary = TokenVocabulary(metadata["target_vocabulary"][4:])
            self.max_length = int(metadata["max_length"])
        self.model = Seq2Seq(config.model, len(self.source_vocabulary), len(self.target_vocabulary))

    def splits(self) -> dict[str, list[Pair]]:
        """The pairs of each split, read on first use (checked against a resumed vocabulary)."""
        if self._splits is None:
            self._splits, self.summaries = load_splits(self.config.data)
            if hasattr(self, "source_vocabulary"):
                train = self._splits["train"]
                for side, vocabulary in ((0, self.source_vocabulary), (1, self.target_vocabulary)):
                    found = TokenVocabulary.build(pair[side] for pair in train).symbols
                    if found != vocabulary.symbols:
                        raise CheckpointError(
                            f"{self.config.data.path}: its training split's vocabulary is not "
                            "the checkpoint's; resume on the same file and split"
                        )
        return self._splits

    def batch(self, pairs: Sequence[Pair], unknown: dict[str, Counter[str]] | None = None) -> Batch:
        """Encode and pad ``pairs``; unknown tokens are counted per side in ``unknown``."""
        unknown = unknown if unknown is not None else {"source": Counter(), "target": Counter()}
        sources = [self.source_vocabulary.encode(source, unknown["source"]) for source, _ in pairs]
        targets = [self.target_vocabulary.encode(target, unknown["target"]) for _, target in pairs]
        source, source_lengths = _pad(sources)
        target_input, _ = _pad([[BOS, *target] for target in targets])
        target_output, target_lengths = _pad([[*target, EOS] for target in targets])
        examples = [self.texts(pair) for pair in pairs]
        return Batch(source, source_lengths, target_input, target_output, target_lengths, examples)

    def texts(self, pair: Pair) -> tuple[str, str]:
        data = self.config.data
        return join_tokens(pair[0], data.source_tokens), join_tokens(pair[1], data.target_tokens)

    def train_loss(self, step: int) -> tuple[torch.Tensor, int]:
        train = self.splits()["train"]
        generator = supervised.batch_generator(self.config.seed, step)
        batch_size = self.config.trainer.batch_size
        rows = torch.randint(len(train), (batch_size,), generator=generator)
        rows = supervised.rank_rows(rows, batch_size)  # this rank's rows of the whole batch
        total, tokens, _ = token_loss(self.model, self.batch([train[row] for row in rows.tolist()]))
        return total / tokens, tokens

    def evaluate(self) -> dict[str, float]:
        validation = self.splits()["validation"] or self.splits()["train"][:200]
        return score_pairs(self, validation, beam=False)[0]

    def metadata(self) -> dict[str, Any]:
        return {
            "source_vocabulary": self.source_vocabulary.symbols,
            "target_vocabulary": self.target_vocabulary.symbols,
            "max_length": self.max_length,
        }

    def describe(self) -> str:
        sizes = ", ".join(f"{len(pairs)} {name}" for name, pairs in self.splits().items())
        data = self.config.data
        return (
            "\n".join(self.summaries) + f"\npairs: {sizes}; vocabularies of "
            f"{len(self.source_vocabulary)} source ({data.source_tokens}) and "
            f"{len(self.target_vocabulary)} target ({data.target_tokens}) tokens with specials\n"
            f"{self.model.describe()}\nencoder:\n{self.model.encoder.describe_strategy()}"
        )


def _pad(sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = [torch.tensor(sequence, dtype=torch.int64) for sequence in sequences]
    lengths = torch.tensor([len(sequence) for sequence in sequences], dtype=torch.int64)
    return pad_sequence(tensors, batch_first=True), lengths


@torch.no_grad()
def score_pairs(
    task: Seq2SeqFilesTask, pairs: Sequence[Pair], beam: bool
) -> tuple[dict[str, float], dict[str, list[tuple[str, ...]]]]:
    """Loss, teacher-forced token accuracy, and per decoder (greedy, and beam search when
    ``beam``) the exact accuracy and the token error rate; the unknown tokens' counts. Also
    each decoder's hypotheses."""
    task.model.eval()
    decoders = {"greedy": None, "beam": task.config.decoding} if beam else {"greedy": None}
    unknown: dict[str, Counter[str]] = {"source": Counter(), "target": Counter()}
    sums = {"loss": 0.0, "tokens": 0.0, "correct": 0.0}
    hypotheses: dict[str, list[tuple[str, ...]]] = {name: [] for name in decoders}
    for start in range(0, len(pairs), EVALUATION_BATCH):
        batch = task.batch(pairs[start : start + EVALUATION_BATCH], unknown)
        total, tokens, correct = token_loss(task.model, batch)
        sums["loss"] += float(total)
        sums["tokens"] += tokens
        sums["correct"] += correct
        for name, decoding in decoders.items():
            outputs = decode(task.model, batch, decoding, task.max_length).tolist()
            hypotheses[name] += [task.target_vocabulary.decode(output) for output in outputs]
    references = [target for _, target in pairs]
    metrics = {
        "loss": sums["loss"] / sums["tokens"],
        "token_accuracy": sums["correct"] / sums["tokens"],
        "unknown_source_tokens": float(sum(unknown["source"].values())),
        "unknown_target_tokens": float(sum(unknown["target"].values())),
    }
    for name, found in hypotheses.items():
        prefix = "" if name == "greedy" else "beam_"
        exact = sum(
            hypothesis == reference for hypothesis, reference in zip(found, references, strict=True)
        )
        metrics[prefix + "exact_accuracy"] = exact / len(pairs)
        metrics[prefix + "token_error_rate"] = label_error_rate(references, found)
    return metrics, hypotheses
