"""Bundled corpora, text checks and vocabularies, and batching into contiguous streams."""

from rnnkit.data.corpus import (
    BUNDLED_CORPORA,
    Corpus,
    CorpusConfig,
    CorpusError,
    Vocabulary,
    bundled_path,
    load_corpus,
    read_text,
    split_text,
)
from rnnkit.data.streams import StreamBatcher, Window

__all__ = [
    "BUNDLED_CORPORA",
    "Corpus",
    "CorpusConfig",
    "CorpusError",
    "StreamBatcher",
    "Vocabulary",
    "Window",
    "bundled_path",
    "load_corpus",
    "read_text",
    "split_text",
]
