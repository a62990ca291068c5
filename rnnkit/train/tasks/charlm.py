"""Character-level language modelling: a text file in, a model that writes like it out.

The text (bundled Tiny Shakespeare unless ``data.path`` names a file) is split into the first
90% for training and the last 10% for validation; the vocabulary is every character of the
file and is saved with each checkpoint. Training is truncated BPTT over contiguous streams;
losses are nats per character, also reported in bits per character (bpc). With
``data.document_separator`` the text is packed documents: the state restarts from zero after
each separator, in training and evaluation (the resets are recomputed from the text, so a
resumed run gets the same ones).

With ``model.mixer=attention`` the model is a decoder-only transformer with optional recurrence
in depth (``rnnkit.models.transformer_lm``): it attends within each window only (training and
evaluation windows of ``bptt.window``), MoR's router loss joins the training loss, evaluation
reports the compute per token, and ``model.initialize_from`` starts a relaxed recursive model
from a trained deep run.

Under torchrun each rank trains its share of the B streams (``rank_streams``) and carries their
state; a checkpoint holds the state of all B streams, gathered in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import Tensor

from rnnkit.data import Corpus, CorpusConfig, Vocabulary, load_corpus
from rnnkit.decoding import generate
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.language_model import build_language_model
from rnnkit.models.transformer_lm import TransformerLanguageModel
from rnnkit.train import checkpoint as checkpoints
from rnnkit.train import distributed, ranges
from rnnkit.train.config import from_dict
from rnnkit.train.optimization import OptimizerConfig
from rnnkit.train.task import FitResult
from rnnkit.train.tasks.charlm_transformer import evaluate_model, initialize_from_run, stream_model
from rnnkit.train.tasks.definition import TaskDefinition
from rnnkit.train.tbptt import TruncatedBPTT, TruncatedBPTTConfig
from rnnkit.train.trainer import TrainerConfig

NAME = "charlm"


@dataclass
class SampleConfig:
    """The sample printed at the end of training."""

    prompt: str = "\n"
    """Text the sample continues."""
    length: int = 300
    """Characters generated."""
    temperature: float = 0.8
    """Softmax temperature (0: greedy)."""
    top_k: int = 40
    """Draw among the k most likely characters (0: all)."""

    def __post_init__(self) -> None:
        ranges.at_least("length", self.length, 0)
        ranges.at_least("temperature", self.temperature, 0)
        ranges.at_least("top_k", self.top_k, 0)


@dataclass
class CharLMConfig:
    """Character-level language model on a text file: every setting of a run."""

    data: CorpusConfig = field(default_factory=CorpusConfig)
    """The text and its split."""
    model: LanguageModelConfig = field(default_factory=LanguageModelConfig)
    """The recurrent language model."""
    bptt: TruncatedBPTTConfig = field(default_factory=TruncatedBPTTConfig)
    """Windows and carried state."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """AdamW and its schedule."""
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    """Stopping, evaluation, logging."""
    sample: SampleConfig = field(default_factory=SampleConfig)
    """The sample printed at the end."""
    seed: int = 0
    """Seeds Python, NumPy and torch: runs stopped by steps repeat exactly."""


class CharLMTask:
    """The ``TrainingTask`` of character-level language modelling."""

    unit = "char"
    splits_batch_by_rank = True  # each rank trains its own streams (rnnkit.train.distributed)

    def __init__(self, config: CharLMConfig, corpus: Corpus, fresh: bool = True) -> None:
        self.config = config
        self.corpus = corpus
        self.model = build_language_model(config.model, len(corpus.vocabulary))
        if isinstance(self.model, TransformerLanguageModel):
            if corpus.train_resets is not None:
                raise ValueError(
                    "data.document_separator: the transformer (model.mixer=attention) reads one "
                    "text; remove the separator"
                )
            if config.model.initialize_from and fresh:
                initialize_from_run(self.model, config.model, corpus.vocabulary)
        self.ranks = distributed.current()
        tokens, resets, streams = rank_streams(
            corpus.train, corpus.train_resets, config.trainer.batch_size, self.ranks
        )
        self.bptt = TruncatedBPTT(stream_model(self.model), tokens, streams, config.bptt, resets)

    def train_loss(self, step: int) -> tuple[Tensor, int]:
        loss, count = self.bptt.loss(step)
        if isinstance(self.model, TransformerLanguageModel):
            auxiliary = self.model.auxiliary_loss()  # MoR's router loss
            if auxiliary is not None:
                loss = loss + auxiliary
        return loss, count

    def evaluate(self) -> dict[str, float]:
        corpus = self.corpus
        return evaluate_model(
            self.model, corpus.validation, self.config.bptt, corpus.validation_resets
        )

    def training_tensors(self) -> dict[str, Tensor]:
        """The carried state of all B streams ``(B, ...)`` (every rank must call this)."""
        state = self.bptt.state_tensors()
        return {key: self.ranks.gather_rows(value) for key, value in sorted(state.items())}

    def load_training_tensors(self, tensors: dict[str, Tensor]) -> None:
        """This rank's rows of the carried state saved by ``training_tensors``."""
        if isinstance(self.model, TransformerLanguageModel):
            return  # nothing is carried between windows
        rows = self.ranks.rows(self.config.trainer.batch_size)
        self.bptt.load_state_tensors(
            {
                key: value[rows] if key.startswith("carry.") else value
                for key, value in tensors.items()
            }
        )

    def metadata(self) -> dict[str, Any]:
        return {"vocabulary": self.corpus.vocabulary.characters, "corpus": self.corpus.name}

    def describe(self) -> str:
        corpus = self.corpus
        if isinstance(self.model, TransformerLanguageModel):
            return (
                f"corpus {corpus.name}: {corpus.train.numel():,} training and "
                f"{corpus.validation.numel():,} validation characters, vocabulary of "
                f"{len(corpus.vocabulary)}\nmodel: {self.model.num_parameters():,} parameters, "
                f"{self.model.describe()}, attending within windows of {self.config.bptt.window}"
            )
        return (
            f"corpus {corpus.name}: {corpus.train.numel():,} training and "
            f"{corpus.validation.numel():,} validation characters, vocabulary of "
            f"{len(corpus.vocabulary)}{_documents(corpus)}\n"
            f"model: {self.model.num_parameters():,} parameters, "
            f"{self.config.model.recurrent.num_layers} x {self.config.model.recurrent.cell} "
            f"(hidden {self.config.model.recurrent.hidden_size})\n"
            + self.model.recurrent.describe_strategy()
        )


def rank_streams(
    tokens: Tensor, resets: Tensor | None, batch_size: int, ranks: distributed.Ranks
) -> tuple[Tensor, Tensor | None, int]:
    """This rank's streams of the B streams over ``tokens (N,)``: its tokens, document starts and
    stream count. Stream b is ``tokens[b * L : (b + 1) * L]`` with ``L = N // B``
    (``StreamBatcher``), so a rank's streams are one contiguous span, read the same by a
    ``StreamBatcher`` of B / world_size streams. One process: every stream."""
    if not ranks.active:  # the whole text, so a too-short one is reported as it is
        return tokens, resets, batch_size
    rows = ranks.rows(batch_size)
    length = tokens.numel() // batch_size
    span = slice(rows.start * length, rows.stop * length)
    return tokens[span], None if resets is None else resets[span], rows.stop - rows.start


def _documents(corpus: Corpus) -> str:
    """The count of training documents (``, N training documents``); "" for one text."""
    if corpus.train_resets is None:
        return ""
    return f", {int(corpus.train_resets.sum()) + 1:,} training documents"


def build(config: CharLMConfig, metadata: dict[str, Any] | None) -> CharLMTask:
    """The task for ``config``; ``metadata`` (from a checkpoint) fixes the vocabulary."""
    vocabulary = None if metadata is None else Vocabulary(metadata["vocabulary"])
    return CharLMTask(config, load_corpus(config.data, vocabulary), fresh=metadata is None)


def report(task: CharLMTask, result: FitResult, stream: TextIO, run_dir: Path) -> None:
    """Print the final validation loss and a sample (the loss plot is the trainer's)."""
    config = task.config.sample
    if result.evaluation:
        loss = result.evaluation["loss"]
        stream.write(
            f"final validation loss {loss:.4f} nats/char, "
            f"{result.evaluation['bpc']:.4f} bits/char after {result.step} steps "
            f"({result.train_seconds:.0f} s of training)\n"
        )
    vocabulary = task.corpus.vocabulary
    prompt = config.prompt if not vocabulary.unknown(config.prompt) else vocabulary.characters[0]
    generator = torch.Generator().manual_seed(task.config.seed)
    stream.write(f"sample (temperature {config.temperature}, top-k {config.top_k}):\n")
    stream.write(prompt)
    for token in generate(
        task.model,
        vocabulary.encode(prompt),
        config.length,
        config.temperature,
        config.top_k,
        generator,
    ):
        stream.write(vocabulary.characters[token])
        stream.flush()
    stream.write("\n")


def load_trained(
    run_dir: str | Path,
) -> tuple[CharLMConfig, LanguageModel | TransformerLanguageModel, Vocabulary, int]:
    """The config, model (weights loaded, in eval mode), vocabulary and step of a run."""
    document = checkpoints.read_checkpoint(run_dir)
    if document.get("task") != NAME:
        raise checkpoints.CheckpointError(
            f"{run_dir}: a {document.get('task')!r} run, not a {NAME!r} one"
        )
    config = from_dict(CharLMConfig, document["config"])
    vocabulary = Vocabulary(document["metadata"]["vocabulary"])
    model = build_language_model(config.model, len(vocabulary))
    checkpoints.load_weights(run_dir, document, model)
    model.eval()
    return config, model, vocabulary, int(document["step"])


def evaluate_run(
    run_dir: str | Path,
    stream: TextIO,
    data_path: str | None = None,
    split: str = "validation",
) -> dict[str, float]:
    """The loss of a trained run on its validation text (or ``data_path``'s, or the train split)."""
    config, model, vocabulary, step = load_trained(run_dir)
    data = config.data if data_path is None else replace(config.data, path=data_path)
    corpus = load_corpus(data, vocabulary)
    if split == "validation":
        tokens, resets = corpus.validation, corpus.validation_resets
    else:
        tokens, resets = corpus.train, corpus.train_resets
    result = evaluate_model(model, tokens, config.bptt, resets)
    stream.write(
        f"{split} loss {result['loss']:.4f} nats/char, {result['bpc']:.4f} bits/char "
        f"({result['tokens']:,} characters of {corpus.name}, model at step {step})\n"
    )
    return result


def next_steps(run_dir: Path) -> str:
    return f'sample with\n  rnnkit sample {run_dir} --prompt "ROMEO:" --length 500\n'


DEFINITIONS = [
    TaskDefinition(
        name=NAME,
        description="character-level language model on a text file (default Tiny Shakespeare)",
        config_type=CharLMConfig,
        build=build,
        report=report,
        evaluate_run=evaluate_run,
        next_steps=next_steps,
        shortcuts={"data": "data.path"},
    )
]
