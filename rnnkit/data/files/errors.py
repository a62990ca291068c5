"""The error every file loader raises, and the report of what a loader skipped by policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class DataFileError(ValueError):
    """A malformed data file: ``path:line: problem`` (``row`` for tables, ``line`` for text).

    ``where`` is ``"line 12"``, ``"row 3"``, ``"array 'X'"`` or empty for the whole file."""

    def __init__(self, path: str | Path, problem: str, *, line: int | None = None, where: str = ""):
        self.path = Path(path)
        self.line = line
        self.problem = problem
        location = f"line {line}" if line is not None else where
        super().__init__(f"{self.path}{': ' + location if location else ''}: {problem}")


@dataclass
class LoadReport:
    """What a loader read, what it skipped and what values it filled in by policy, each
    counted with its reason."""

    path: Path
    read: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    filled: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + count

    def fill(self, reason: str, count: int = 1) -> None:
        self.filled[reason] = self.filled.get(reason, 0) + count

    def summary(self) -> str:
        """``data/train.ts: 120 sequences read`` plus ``; skipped 3 (empty series)``."""
        text = f"{self.path}: {self.read} read"
        for reason, count in self.skipped.items():
            text += f"; skipped {count} ({reason})"
        for reason, count in self.filled.items():
            text += f"; filled {count} ({reason})"
        return text
