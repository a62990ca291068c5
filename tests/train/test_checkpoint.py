"""Checkpoints: tensors and JSON round trip, atomic replacement, RNG states."""

from __future__ import annotations

import json
import random

import numpy
import pytest
import torch
from torch import nn

from rnnkit.train import checkpoint as checkpoints


def test_model_optimizer_and_extra_tensors_round_trip(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    optimizer_json, optimizer_tensors = checkpoints.optimizer_parts(optimizer)
    extra = {"carry.0.h": torch.randn(2, 5)}
    checkpoints.save_checkpoint(
        tmp_path, 7, model, {**optimizer_tensors, **extra}, {"optimizer": optimizer_json}
    )
    document = checkpoints.read_checkpoint(tmp_path)
    assert document["step"] == 7
    restored = nn.Linear(3, 2)
    checkpoints.load_weights(tmp_path, document, restored)
    assert torch.equal(restored.weight, model.weight)
    tensors = checkpoints.load_training_tensors(tmp_path, document)
    assert torch.equal(tensors["carry.0.h"], extra["carry.0.h"])
    restored_optimizer = torch.optim.AdamW(restored.parameters(), lr=0.5)
    checkpoints.restore_optimizer(restored_optimizer, document["optimizer"], tensors)
    expected, actual = optimizer.state_dict(), restored_optimizer.state_dict()
    assert actual["param_groups"] == expected["param_groups"]
    for index, state in expected["state"].items():
        for name, value in state.items():
            assert torch.equal(actual["state"][index][name], value), name


def test_a_new_checkpoint_replaces_the_old_one_whole(tmp_path):
    model = nn.Linear(2, 2)
    checkpoints.save_checkpoint(tmp_path, 1, model, {}, {})
    checkpoints.save_checkpoint(tmp_path, 2, model, {}, {})
    folders = sorted(path.name for path in (tmp_path / "checkpoints").iterdir())
    assert len(folders) == 1 and folders[0].startswith("step-0000002-")
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 2
    assert not list(tmp_path.glob(".*tmp*"))


def test_rng_states_round_trip():
    checkpoints.seed_everything(3)
    document, tensors = checkpoints.capture_rng()
    document = json.loads(json.dumps(document))
    expected = (random.random(), numpy.random.rand(), torch.rand(1).item())
    checkpoints.seed_everything(99)
    checkpoints.restore_rng(document, tensors)
    assert (random.random(), numpy.random.rand(), torch.rand(1).item()) == expected


def test_missing_checkpoint_is_explained(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="no such run folder"):
        checkpoints.read_checkpoint(tmp_path / "nothing")
    with pytest.raises(checkpoints.CheckpointError, match="no checkpoint yet"):
        checkpoints.read_checkpoint(tmp_path)
