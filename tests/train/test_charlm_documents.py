"""The char-LM on packed documents: reset positions, windows, the per-document oracle, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional

from rnnkit import cli
from rnnkit.data import CorpusConfig, CorpusError, StreamBatcher, Vocabulary, bundled_path
from rnnkit.data.corpus import decode_separator, document_starts, load_corpus
from rnnkit.models import LanguageModel, LanguageModelConfig
from rnnkit.models.recurrent_config import RecurrentConfig
from rnnkit.train.config import ConfigError, apply_overrides
from rnnkit.train.tasks.charlm import CharLMConfig
from rnnkit.train.tbptt import TruncatedBPTT, TruncatedBPTTConfig, evaluate_tokens

DOCUMENTS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "All:\nSpeak, speak.",
    "First Citizen:\nYou are all resolved rather to die than to famish?",
    "All:\nResolved. resolved.",
    "First Citizen:\nFirst, you know Caius Marcius is chief enemy to the people.",
]
TEXT = "\n\n".join(DOCUMENTS * 4)

TINY = [
    "--model.embedding_size=8",
    "--model.recurrent.hidden_size=16",
    "--trainer.batch_size=4",
    "--bptt.window=16",
    "--bptt.evaluation_streams=4",
    "--sample.length=20",
]


def tiny_model(vocabulary_size: int) -> LanguageModel:
    """A seeded LSTM language model without dropout, so losses are deterministic."""
    torch.manual_seed(0)
    recurrent = RecurrentConfig(cell="lstm", hidden_size=16, dropout=0.0)
    config = LanguageModelConfig(embedding_size=8, recurrent=recurrent, dropout=0.0)
    return LanguageModel(config, vocabulary_size)


@torch.no_grad()
def oracle_losses(model: LanguageModel, row: torch.Tensor, resets: torch.Tensor) -> torch.Tensor:
    """Per-token losses ``(L - 1,)`` of one stream ``row (L,)``, each document run on its own
    from the zero state (the reference the resets must reproduce)."""
    inputs, targets, flags = row[:-1], row[1:], resets[:-1]
    starts = [0, *flags.nonzero().flatten().tolist(), inputs.numel()]
    losses = []
    for start, stop in zip(starts[:-1], starts[1:], strict=True):
        if stop > start:
            logits, _ = model(inputs[start:stop][None])  # (1, segment, V)
            segment = targets[start:stop]
            losses.append(functional.cross_entropy(logits[0], segment, reduction="none"))
    return torch.cat(losses)


def write_text(tmp_path, text: str = TEXT):
    path = tmp_path / "documents.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_resets_are_true_right_after_each_separator():
    vocabulary = Vocabulary.from_text("ab\n\ncd\n\n\nef")
    tokens = vocabulary.encode("ab\n\ncd\n\n\nef")
    resets = document_starts(tokens, vocabulary.encode("\n\n"))
    # occurrences overlap: "\n\n\n" holds two, ending at the third newline and at "e"
    assert resets.nonzero().flatten().tolist() == [4, 8, 9]
    assert document_starts(tokens, vocabulary.encode("\n\n\n")).nonzero().flatten().tolist() == [9]
    assert resets.dtype == torch.bool and resets.shape == tokens.shape


def test_corpus_carries_resets_split_with_the_text(tmp_path):
    corpus = load_corpus(CorpusConfig(str(write_text(tmp_path)), document_separator="\\n\\n"))
    text = corpus.vocabulary.decode(torch.cat([corpus.train, corpus.validation]))
    assert text == TEXT
    resets = torch.cat([corpus.train_resets, corpus.validation_resets]).nonzero().flatten()
    expected, position = [], 0
    for document in (DOCUMENTS * 4)[:-1]:
        position += len(document) + 2
        expected.append(position)
    assert resets.tolist() == expected
    plain = load_corpus(CorpusConfig(str(write_text(tmp_path))))
    assert plain.train_resets is None and plain.validation_resets is None
    assert torch.equal(plain.train, corpus.train)


def test_stream_windows_carry_the_resets_of_their_inputs():
    tokens = torch.arange(43)
    batcher = StreamBatcher(tokens, batch_size=3, window=4, resets=tokens % 5 == 0)
    windows = [*batcher, batcher.tail()]
    for window in windows:
        assert window.resets is not None and window.resets.shape == window.inputs.shape
        assert torch.equal(window.resets, window.inputs % 5 == 0)
    assert StreamBatcher(tokens, batch_size=3, window=4).window_at(0).resets is None
    with pytest.raises(ValueError, match="resets must have the shape of tokens"):
        StreamBatcher(tokens, batch_size=3, window=4, resets=torch.zeros(5, dtype=torch.bool))


def test_training_windows_equal_documents_run_one_by_one(tmp_path):
    corpus = load_corpus(CorpusConfig(str(write_text(tmp_path)), document_separator="\\n\\n"))
    model = tiny_model(len(corpus.vocabulary))
    config = TruncatedBPTTConfig(window=16)
    bptt = TruncatedBPTT(model, corpus.train, 2, config, corpus.train_resets)
    batcher = bptt.batcher
    assert batcher.resets is not None and batcher.resets[:, : 5 * 16].sum() >= 2
    rows = zip(batcher.streams, batcher.resets, strict=True)
    expected = torch.stack([oracle_losses(model, row, flags) for row, flags in rows])  # (B, L - 1)
    for step in range(5):  # carried state across windows, and resets inside them
        loss, count = bptt.loss(step)
        reference = expected[:, step * 16 : (step + 1) * 16].mean()
        torch.testing.assert_close(loss.detach(), reference, msg=f"loss of window {step}")
        assert count == 2 * 16


def test_evaluation_equals_documents_run_one_by_one(tmp_path):
    corpus = load_corpus(CorpusConfig(str(write_text(tmp_path)), document_separator="\\n\\n"))
    model = tiny_model(len(corpus.vocabulary))
    tokens, resets = corpus.train, corpus.train_resets
    # windows of 40: a document starts at 400, the first token of a window (the carried state
    # must not cross that boundary)
    assert resets[400]
    config = TruncatedBPTTConfig(evaluation_streams=1, evaluation_window=40)
    result = evaluate_tokens(model, tokens, config, resets)
    expected = oracle_losses(model, tokens, resets)
    assert result["tokens"] == expected.numel()
    assert result["loss"] == pytest.approx(float(expected.mean()), rel=1e-6)
    continuous = evaluate_tokens(model, tokens, config)["loss"]
    assert abs(result["loss"] - continuous) > 1e-5  # the resets changed the numbers


def test_without_a_separator_the_numbers_are_unchanged(tmp_path):
    """Losses recorded with the code before document separators existed, same seed and text."""
    text = bundled_path().read_text(encoding="utf-8")[:3000]
    corpus = load_corpus(CorpusConfig(str(write_text(tmp_path, text))))
    model = tiny_model(len(corpus.vocabulary))
    config = TruncatedBPTTConfig(window=16, evaluation_streams=4, evaluation_window=32)
    bptt = TruncatedBPTT(model, corpus.train, 4, config, corpus.train_resets)
    losses = [float(bptt.loss(step)[0].detach()) for step in range(3)]
    assert losses == pytest.approx([4.014322757720947, 4.033353328704834, 4.031805038452148])
    validation = evaluate_tokens(model, corpus.validation, config, corpus.validation_resets)
    assert validation["loss"] == pytest.approx(4.041463645728859)


def test_separator_escapes_are_decoded_and_unknown_ones_refused():
    assert decode_separator("\\n\\n") == "\n\n"
    assert decode_separator("<doc>\\t\\\\") == "<doc>\t\\"
    assert decode_separator("\n") == "\n"  # a real newline (from a JSON or YAML config)
    with pytest.raises(ValueError, match=r"document_separator .*unknown escape \(\\q\)"):
        CorpusConfig(document_separator="\\q")
    with pytest.raises(ValueError, match="document_separator .*lone backslash"):
        CorpusConfig(document_separator="end\\")
    with pytest.raises(ConfigError, match="data: document_separator"):
        apply_overrides(CharLMConfig(), [("data.document_separator", "\\x")])


def test_a_separator_that_never_occurs_names_the_field_and_the_file(tmp_path):
    path = write_text(tmp_path)
    with pytest.raises(CorpusError, match=f"document_separator '<doc>' never occurs in {path}"):
        load_corpus(CorpusConfig(str(path), document_separator="<doc>"))


def test_cli_trains_on_documents_and_resumes(tmp_path, capsys):
    text = write_text(tmp_path)
    command = ["train", "charlm", "--data", str(text), "--steps", "3", "--run-dir"]
    separator = ["--data.document_separator=\\n\\n"]
    assert cli.main(command + [str(tmp_path / "run")] + separator + TINY) == 0
    output = capsys.readouterr().out
    assert "training documents" in output and "final validation loss" in output
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["data"]["document_separator"] == "\\n\\n"
    resume = ["train", "charlm", "--resume", str(tmp_path / "run"), "--steps", "5"]
    assert cli.main(resume) == 0
    output = capsys.readouterr().out
    assert "continuing from step 3" in output and "training documents" in output


@pytest.mark.parametrize(
    "separator, message",
    [
        ("\\q", "unknown escape (\\q)"),
        ("<doc>", "document_separator '<doc>' never occurs in "),
    ],
    ids=["unknown-escape", "never-occurs"],
)
def test_cli_refuses_a_bad_separator_with_its_message(tmp_path, separator, message, capsys):
    text = write_text(tmp_path)
    command = ["train", "charlm", "--data", str(text), "--steps", "1", "--runs-root"]
    arguments = [str(tmp_path / "runs"), f"--data.document_separator={separator}"]
    assert cli.main(command + arguments + TINY) == 1
    assert message in capsys.readouterr().err
