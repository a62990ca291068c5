"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically.

A run folder holds::

    checkpoint.json                 step, config, task metadata (vocabulary), optimizer
                                    hyper-parameters, schedule, clocks, Python and NumPy RNGs,
                                    and the name of the tensor folder below
    checkpoints/step-000123/
        model.safetensors           the model's weights (tied weights stored once)
        training.safetensors        optimizer moments, carried recurrent state, torch RNG

The tensor folder is written under a temporary name and renamed to a fresh name unique to this
save (never the folder ``checkpoint.json`` names, even when the same step is saved again), then
``checkpoint.json`` is written to a temporary file and renamed over the old one, and only then
are older tensor folders removed: an interruption at any point leaves the previous checkpoint whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

from rnnkit.train.optimization import Optimizer

CHECKPOINT_FILE = "checkpoint.json"
CHECKPOINT_FOLDER = "checkpoints"
TENSOR_FILES = ("model.safetensors", "training.safetensors")
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A run folder without a usable checkpoint."""


def save_checkpoint(
    run_dir: Path, step: int, model: nn.Module, tensors: dict[str, Tensor], info: dict[str, Any]
) -> Path:
    """Write the checkpoint of ``step``: weights, ``tensors`` (training state) and ``info``."""
    folder = run_dir / CHECKPOINT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    # A fresh name per save: re-saving the same step never touches the folder that
    # checkpoint.json still names, and two processes never share a temporary name.
    name = f"step-{step:07d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    temporary = folder / f".tmp-{name}"
    temporary.mkdir()
    save_model(model, str(temporary / "model.safetensors"))
    save_file(
        {key: value.detach().contiguous() for key, value in tensors.items()},
        str(temporary / "training.safetensors"),
    )
    checksums: dict[str, dict[str, str] | str] = {}
    for file_name in TENSOR_FILES:
        _fsync_path(temporary / file_name)
        # Hashed as read back from disk: what a later load will see, not what we meant to write.
        written = load_file(str(temporary / file_name))
        checksums[file_name] = {key: tensor_checksum(value) for key, value in written.items()}
    checksums["config"] = config_checksum(info.get("config"))
    final = folder / name
    os.replace(temporary, final)
    _fsync_path(folder)
    document = {
        "format": FORMAT_VERSION,
        "step": step,
        "tensors": f"{CHECKPOINT_FOLDER}/{name}",
        "checksums": checksums,
    }
    # Last, over everything else: a valid-JSON edit anywhere (step, vocabulary, RNG) is caught.
    checksums["document"] = config_checksum({**document, **info, "checksums": checksums})
    write_json_atomically(run_dir / CHECKPOINT_FILE, {**document, **info})
    for old in folder.iterdir():
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def tensor_checksum(tensor: Tensor) -> str:
    """sha256 of a tensor's bytes, dtype and shape."""
    digest = hashlib.sha256(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def config_checksum(config: Any) -> str:
    """sha256 of a config dict as canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def _verified_tensors(path: Path, document: dict[str, Any]) -> dict[str, Tensor]:
    """The tensors of ``path``, each checked against the checksum ``document`` stores for it
    (checkpoints written before checksums existed are loaded unchecked)."""
    tensors = load_file(str(path))
    expected = document.get("checksums", {}).get(path.name)
    if expected is None:
        return tensors
    if set(expected) != set(tensors):
        missing = sorted(set(expected) ^ set(tensors))
        raise CheckpointError(f"{path}: tensors differ from the checkpoint's list: {missing[:5]}")
    for key, tensor in tensors.items():
        if tensor_checksum(tensor) != expected[key]:
            raise CheckpointError(
                f"{path}: tensor {key!r} does not match its checksum (the file is damaged)"
            )
    return tensors


def _fsync_path(path: Path) -> None:
    """Flush ``path`` (a file or a folder) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write ``document`` to ``path`` through a temporary file (unique per process) and a rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_path(path.parent)


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The JSON part of the latest checkpoint of ``run_dir``."""
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir}: no checkpoint yet ({CHECKPOINT_FILE} is missing); the run stopped "
            "before its first checkpoint"
        )
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable checkpoint ({error})") from error
    if not isinstance(document, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(document).__name__}")
    if document.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint format {document.get('format')!r}")
    checksums = document.get("checksums")
    checksums = checksums if isinstance(checksums, dict) else {}
    expected = checksums.get("config")
    if expected is not None and config_checksum(document.get("config")) != expected:
        raise CheckpointError(f"{path}: the config does not match its checksum (edited or damaged)")
    expected = checksums.get("document")
    if expected is not None and _document_checksum(document, checksums) != expected:
        raise CheckpointError(f"{path}: the file does not match its checksum (edited or damaged)")
    return document


def _document_checksum(document: dict[str, Any], checksums: dict[str, Any]) -> str:
    """The checksum of a checkpoint.json over every entry but the document checksum itself."""
    others = {key: value for key, value in checksums.items() if key != "document"}
    return config_checksum({**document, "checksums": others})


def load_weights(run_dir: str | Path, document: dict[str, Any], model: nn.Module) -> None:
    """Load the checkpoint's weights into ``model`` (its shapes must match)."""
    path = Path(run_dir) / str(document.get("tensors")) / "model.safetensors"
    try:
        _verified_tensors(path, document)
        load_model(model, str(path))
    except CheckpointError:
        raise
    except Exception as error:  # safetensors and torch raise several unrelated types
        raise CheckpointError(f"{path}: cannot load the weights ({_one_line(error)})") from error


def load_training_tensors(run_dir: str | Path, document: dict[str, Any]) -> dict[str, Tensor]:
    """The checkpoint's optimizer, carried-state and RNG tensors."""
    path = Path(run_dir) / str(document.get("tensors")) / "training.safetensors"
    try:
        return _verified_tensors(path, document)
    except CheckpointError:
        raise
    except Exception as error:  # safetensors raises several unrelated types
        raise CheckpointError(
            f"{path}: cannot load the training state ({_one_line(error)})"
        ) from error


def _one_line(error: Exception) -> str:
    """An error's message on one line (torch's size-mismatch message has one line per tensor)."""
    return " ".join(str(error).split())


def optimizer_parts(optimizer: Optimizer) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Split the optimizer's state into JSON (hyper-parameters) and tensors (moments)."""
    state = optimizer.state_dict()
    tensors = {}
    for index, parameter_state in state["state"].items():
        for key, value in parameter_state.items():
            tensors[f"optimizer.{index}.{key}"] = value
    return {"param_groups": state["param_groups"]}, tensors


def restore_optimizer(
    optimizer: Optimizer, document: dict[str, Any], tensors: dict[str, Tensor]
) -> None:
    """Load the optimizer state split by ``optimizer_parts``."""
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    groups = document["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def capture_rng() -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The Python, NumPy (JSON) and torch (tensor) random number generator states."""
    version, internal, gauss = random.getstate()
    state = numpy.random.get_state(legacy=True)
    assert isinstance(state, tuple)  # the legacy form of the global MT19937 generator
    kind, keys, position, has_gauss, cached = state
    document = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
    }
    return document, {"rng.torch": torch.get_rng_state()}


def restore_rng(document: dict[str, Any], tensors: dict[str, Tensor]) -> None:
    """Restore the states captured by ``capture_rng``."""
    version, internal, gauss = document["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = document["numpy"]
    numpy.random.set_state(
        (kind, numpy.array(keys, dtype=numpy.uint32), position, has_gauss, cached)
    )
    torch.set_rng_state(tensors["rng.torch"])


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    numpy.random.seed(seed % 2**32)
    torch.manual_seed(seed)
