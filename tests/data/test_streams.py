"""Contiguous streams: windows follow each other, targets are inputs shifted by one."""

from __future__ import annotations

import pytest
import torch

from rnnkit.data import CorpusError, StreamBatcher


def test_windows_are_contiguous_within_each_stream():
    tokens = torch.arange(103)
    batcher = StreamBatcher(tokens, batch_size=4, window=6)
    # 4 streams of 25 tokens: stream b is tokens [25 b, 25 b + 25)
    assert batcher.streams.shape == (4, 25)
    assert len(batcher) == 4  # (25 - 1) // 6
    first, second = batcher.window_at(0), batcher.window_at(1)
    assert first.starts_epoch and not second.starts_epoch
    assert torch.equal(first.inputs[1], torch.arange(25, 31))
    assert torch.equal(first.targets, first.inputs + 1)
    assert torch.equal(second.inputs[:, 0], first.targets[:, -1])
    assert torch.equal(second.targets, second.inputs + 1)


def test_epochs_repeat_the_windows():
    batcher = StreamBatcher(torch.arange(100), batch_size=2, window=7)
    again = batcher.window_at(len(batcher))
    assert again.starts_epoch
    assert torch.equal(again.inputs, batcher.window_at(0).inputs)


def test_iteration_and_tail_cover_every_target_once():
    tokens = torch.arange(64)
    batcher = StreamBatcher(tokens, batch_size=2, window=5)
    targets = [window.targets for window in batcher] + [batcher.tail().targets]
    covered = torch.cat(targets, dim=1)  # (B, L - 1)
    assert torch.equal(covered[0], torch.arange(1, 32))
    assert torch.equal(covered[1], torch.arange(33, 64))


def test_text_too_short_for_the_batch_says_what_is_needed():
    with pytest.raises(CorpusError, match="at least 132 needed.*batch_size"):
        StreamBatcher(torch.arange(100), batch_size=4, window=32, name="training text")
