"""Fault injection on checkpoints: re-saves never delete the live folder, damage is one error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnkit.train import checkpoint
from rnnkit.train.checkpoint import CheckpointError


def _save(run_dir: Path, step: int, model: nn.Module) -> Path:
    return checkpoint.save_checkpoint(run_dir, step, model, {"extra": torch.zeros(2)}, {})


def test_resaving_the_same_step_keeps_the_live_folder_until_replaced(tmp_path, monkeypatch):
    model = nn.Linear(3, 2)
    _save(tmp_path, 5, model)
    live = tmp_path / checkpoint.read_checkpoint(tmp_path)["tensors"]

    def killed(*arguments):  # a kill -9 at the rename of the new tensor folder
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(checkpoint.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, 5, model)
    monkeypatch.undo()
    document = checkpoint.read_checkpoint(tmp_path)
    assert tmp_path / document["tensors"] == live and live.is_dir()
    restored = nn.Linear(3, 2)
    checkpoint.load_weights(tmp_path, document, restored)
    torch.testing.assert_close(restored.weight, model.weight)


def test_temporary_names_are_unique_per_process(tmp_path):
    first = _save(tmp_path, 1, nn.Linear(3, 2))
    assert str(os.getpid()) in first.name


@pytest.mark.parametrize("damage", ["bad-json", "list-json", "missing-weights", "truncated"])
def test_damaged_checkpoint_is_one_clear_error(tmp_path, damage):
    model = nn.Linear(3, 2)
    _save(tmp_path, 2, model)
    document = checkpoint.read_checkpoint(tmp_path)
    weights = tmp_path / document["tensors"] / "model.safetensors"
    if damage == "bad-json":
        (tmp_path / checkpoint.CHECKPOINT_FILE).write_text('{"format": 1, ')
    elif damage == "list-json":
        (tmp_path / checkpoint.CHECKPOINT_FILE).write_text(json.dumps([1]))
    elif damage == "missing-weights":
        weights.unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:20])
    with pytest.raises(CheckpointError, match=r"checkpoint\.json|model\.safetensors"):
        checkpoint.load_weights(tmp_path, checkpoint.read_checkpoint(tmp_path), model)


def test_wrong_shapes_are_a_checkpoint_error(tmp_path):
    _save(tmp_path, 2, nn.Linear(3, 2))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        checkpoint.load_weights(tmp_path, checkpoint.read_checkpoint(tmp_path), nn.Linear(4, 2))
