"""One owner per run folder: ``run.lock`` holds the owner's pid, host and start time.

The lock is created with ``O_CREAT | O_EXCL``, so of two runs started into one folder exactly
one gets it; the other is refused with the owner's details. A lock left by a process that died
(kill -9, a crash) on this host is reported and taken over; a lock from another host is never
taken over, because its pid cannot be checked from here.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import TextIO

LOCK_FILE = "run.lock"


class RunFolderBusy(ValueError):
    """The run folder is owned by another live run (or cannot be checked); the message says who."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _create(path: Path) -> bool:
    """Create the lock file with our details; False when it already exists."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    with os.fdopen(descriptor, "w") as handle:
        json.dump(owner, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return True


def _read_owner(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


class RunLock:
    """Context manager owning ``run_dir`` for the duration of a run; stale locks are reported
    on ``stream`` and taken over."""

    def __init__(self, run_dir: Path, stream: TextIO) -> None:
        self.path = run_dir / LOCK_FILE
        self.stream = stream

    def __enter__(self) -> RunLock:
        if _create(self.path):
            return self
        owner = _read_owner(self.path)
        if owner is None and self.path.exists():
            # A lock being written by a run that started this instant, or a damaged one.
            time.sleep(0.2)
            owner = _read_owner(self.path)
        self._refuse_unless_stale(owner)
        self.path.unlink(missing_ok=True)
        if not _create(self.path):
            raise RunFolderBusy(f"{self.path}: another run took this folder at the same moment")
        return self

    def _refuse_unless_stale(self, owner: dict | None) -> None:
        if owner is None:
            raise RunFolderBusy(
                f"{self.path}: an unreadable lock file; if no run uses this folder, delete it"
            )
        pid, host = owner.get("pid"), owner.get("host")
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("started", 0)))
        if host != socket.gethostname() or not isinstance(pid, int) or _alive(pid):
            raise RunFolderBusy(
                f"{self.path.parent} is in use by process {pid} on {host} (started {started}, "
                f"lock {self.path}); wait for it to finish, or choose another --run-dir"
            )
        self.stream.write(
            f"taking over a stale lock of process {pid} (started {started}, no longer running)\n"
        )

    def __exit__(self, *exception: object) -> None:
        owner = _read_owner(self.path)
        if owner is not None and owner.get("pid") == os.getpid():  # never another run's lock
            self.path.unlink(missing_ok=True)
