"""A user's trajectories of a dynamical system as CSV (or TSV, by the ``.tsv`` suffix).

The first row names the columns; every other row is one time step. Each column is one observed
dimension, except an optional trajectory id column (``trajectory`` by default): rows with the
same id form one trajectory, in file order, and a trajectory's rows must be contiguous (an id
that comes back after another one is an error: a shuffled or concatenated-twice file). Without
the id column the whole file is one trajectory. Time steps are assumed equally spaced.

    trajectory,x,y,z
    0,1.0,2.0,20.5
    0,1.3,2.4,20.1
    1,-5.2,0.4,17.0

Refused with a ``DataFileError`` naming the row: an empty file, a header without rows, an empty
or repeated column name, no observed column, a row with a different number of fields than the
header, a value that is not a finite number, an empty trajectory id, non-contiguous ids, a
trajectory shorter than ``min_length`` steps, and (with ``expected_columns``) columns other
than those a model was trained on. Blank lines are skipped and counted in the ``LoadReport``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rnnkit.data.files.errors import DataFileError, LoadReport

ID_COLUMN = "trajectory"


@dataclass
class Trajectories:
    """The trajectories of one file: ``values[i] (T_i, N)`` float64, with their ids."""

    columns: list[str]  # the observed dimensions, in file order
    ids: list[str]
    values: list[Tensor]
    report: LoadReport


def delimiter_of(path: Path) -> str:
    return "\t" if path.suffix.lower() == ".tsv" else ","


def read_trajectories(
    path: str | Path,
    *,
    id_column: str = ID_COLUMN,
    min_length: int = 2,
    expected_columns: list[str] | None = None,
) -> Trajectories:
    """The trajectories of ``path`` (module docstring); raises ``DataFileError``."""
    path = Path(path)
    if not path.is_file():
        raise DataFileError(path, "no such file")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter_of(path)))
    report = LoadReport(path)
    numbered = []
    for number, row in enumerate(rows, start=1):
        if not any(field.strip() for field in row):
            report.skip("blank lines")
        else:
            numbered.append((number, [field.strip() for field in row]))
    if not numbered:
        raise DataFileError(path, "the file is empty: expected a header row and data rows")
    header_line, header = numbered[0]
    id_index = check_header(path, header_line, header, id_column, expected_columns)
    columns = [name for index, name in enumerate(header) if index != id_index]
    if len(numbered) == 1:
        raise DataFileError(path, "a header but no data rows", line=header_line)
    groups: dict[str, list[list[float]]] = {}
    last_id: str | None = None
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise DataFileError(
                path, f"{len(row)} fields, expected {len(header)} (as the header)", line=line
            )
        key = "0" if id_index is None else row[id_index]
        if not key:
            raise DataFileError(path, f"empty {id_column!r}", line=line)
        if key != last_id and key in groups:
            raise DataFileError(
                path,
                f"trajectory {key!r} continues after another one: the rows of a trajectory "
                "must be contiguous",
                line=line,
            )
        last_id = key
        fields = [row[index] for index in range(len(row)) if index != id_index]
        groups.setdefault(key, []).append(
            [
                parse_value(path, line, name, text)
                for name, text in zip(columns, fields, strict=True)
            ]
        )
    for key, steps in groups.items():
        if len(steps) < min_length:
            raise DataFileError(
                path, f"trajectory {key!r} has {len(steps)} steps, expected at least {min_length}"
            )
    report.read = sum(len(steps) for steps in groups.values())
    values = [torch.tensor(steps, dtype=torch.float64) for steps in groups.values()]
    return Trajectories(columns, list(groups), values, report)


def check_header(
    path: Path,
    line: int,
    header: list[str],
    id_column: str,
    expected_columns: list[str] | None,
) -> int | None:
    """The index of the id column (None without one), after the header's checks."""
    for index, name in enumerate(header, start=1):
        if not name:
            raise DataFileError(path, f"column {index} of the header has no name", line=line)
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataFileError(path, f"repeated column names {repeated}", line=line)
    id_index = header.index(id_column) if id_column in header else None
    columns = [name for index, name in enumerate(header) if index != id_index]
    if not columns:
        raise DataFileError(path, "no observed columns besides the trajectory id", line=line)
    if expected_columns is not None and columns != expected_columns:
        raise DataFileError(
            path,
            f"columns {columns}, expected {expected_columns} (those the model was trained on)",
            line=line,
        )
    return id_index


def parse_value(path: Path, line: int, column: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataFileError(
            path, f"column {column!r}: expected a number, found {text!r}", line=line
        ) from None
    if not math.isfinite(value):
        raise DataFileError(
            path, f"column {column!r}: expected a finite number, found {text!r}", line=line
        )
    return value


def write_trajectories(
    path: str | Path, columns: list[str], ids: list[str], values: list[Tensor]
) -> int:
    """Write ``values[i] (T_i, N)`` as ``trajectory,step,<columns>`` rows (CSV, or TSV by the
    suffix); returns the rows written. ``step`` counts from 1 after the end of the input."""
    path = Path(path)
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter_of(path))
        writer.writerow([ID_COLUMN, "step", *columns])
        for key, trajectory in zip(ids, values, strict=True):
            for step, point in enumerate(trajectory.tolist(), start=1):
                writer.writerow([key, step, *(repr(float(value)) for value in point)])
                rows += 1
    return rows
