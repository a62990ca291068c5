"""Reading a series file's table (``series_csv``): the header and rows of a CSV or TSV file,
checked for shape, and the cells of each series in a wide or a long layout.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from rnnkit.data.files.errors import DataFileError

MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none", "?")
TIME_NAMES = ("time", "timestamp", "date", "datetime", "ds", "month", "period", "year")
Rows = list[tuple[int, list[str]]]
"""``(line, fields)`` of every non-blank row after the header."""


@dataclass
class SeriesColumn:
    """A series being read: per step the line, the timestamp, the value and covariate cells."""

    name: str
    column: str
    lines: list[int]
    times: list[str]
    cells: list[list[str]]  # per step: [value, covariate 1, ...]


def read_table(path: Path) -> tuple[list[str], Rows]:
    """The header and the ``(line, fields)`` of every non-blank row, checked for shape."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            records = [(reader.line_num, row) for row in reader if any(f.strip() for f in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataFileError(path, f"cannot read the file: {error}") from None
    if not records:
        raise DataFileError(path, "empty file: expected a header row and rows of values")
    (_, header), rows = records[0], records[1:]
    header = [name.strip() for name in header]
    for index, name in enumerate(header):
        if not name:
            raise DataFileError(path, f"column {index + 1} has no name in the header", line=1)
        if name in header[:index]:
            raise DataFileError(path, f"column name {name!r} appears twice in the header", line=1)
    if not rows:
        raise DataFileError(path, "no rows of values after the header")
    for line, fields in rows:
        if len(fields) != len(header):
            raise DataFileError(
                path,
                f"expected {len(header)} fields (as the header), found {len(fields)}",
                line=line,
            )
    return header, rows


def _require(path: Path, header: list[str], name: str, option: str) -> int:
    if name not in header:
        raise DataFileError(
            path,
            f"no column {name!r} (--data.{option}); the columns are {', '.join(header)}",
            line=1,
        )
    return header.index(name)


def long_columns(
    path: Path,
    header: list[str],
    rows: Rows,
    *,
    series_column: str,
    time_column: str,
    value_column: str,
    covariates: tuple[str, ...],
) -> list[SeriesColumn]:
    """A series per name in ``series_column``, its steps in the order of the rows; every
    column must be the series', the time (``"time"`` by default), the value or a covariate."""
    names = [series_column, time_column or "time", value_column]
    options = ["series_column", "time_column", "value_column"]
    series_at, time_at, value_at = (
        _require(path, header, name, option) for name, option in zip(names, options, strict=True)
    )
    covariates_at = [_require(path, header, name, "covariates") for name in covariates]
    for name in header:
        if name not in names and name not in covariates:
            raise DataFileError(
                path,
                f"column {name!r} is not used: name it in --data.covariates or remove it "
                f"(series {names[0]!r}, time {names[1]!r}, value {names[2]!r})",
                line=1,
            )
    columns: dict[str, SeriesColumn] = {}
    for line, fields in rows:
        name = fields[series_at].strip()
        if not name:
            raise DataFileError(path, f"empty series name in column {names[0]!r}", line=line)
        column = columns.setdefault(name, SeriesColumn(name, value_column, [], [], []))
        column.lines.append(line)
        column.times.append(fields[time_at].strip())
        column.cells.append([fields[value_at]] + [fields[index] for index in covariates_at])
    return list(columns.values())


def wide_columns(
    path: Path, header: list[str], rows: Rows, *, time_column: str, covariates: tuple[str, ...]
) -> list[SeriesColumn]:
    """A series per column that is not the time (``time_column``, by default the first column
    when it is named as in ``TIME_NAMES``; ``"none"`` for none) or a covariate; its steps run
    from its first present value to its last."""
    if time_column.lower() in ("none", "-"):
        time_at = None
    elif time_column:
        time_at = _require(path, header, time_column, "time_column")
    else:
        time_at = 0 if header[0].lower() in TIME_NAMES else None
    covariates_at = [_require(path, header, name, "covariates") for name in covariates]
    used = set(covariates_at) | ({time_at} if time_at is not None else set())
    columns = []
    for index, name in enumerate(header):
        if index in used:
            continue
        cells = [[fields[index]] + [fields[at] for at in covariates_at] for _, fields in rows]
        present = [step for step, cell in enumerate(cells) if not is_missing(cell[0])]
        first, last = (present[0], present[-1] + 1) if present else (0, 0)
        times = [fields[time_at].strip() if time_at is not None else "" for _, fields in rows]
        columns.append(
            SeriesColumn(
                name,
                name,
                [line for line, _ in rows][first:last],
                times[first:last],
                cells[first:last],
            )
        )
    if not columns:
        raise DataFileError(path, "no series columns: every column is a timestamp or covariate")
    return columns


def is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_TOKENS


def check_times(path: Path, column: SeriesColumn) -> None:
    """Refuse a timestamp repeated within the series, and numeric timestamps that go back."""
    seen: dict[str, int] = {}
    previous: float | None = None
    for line, time in zip(column.lines, column.times, strict=True):
        if not time:
            continue
        if time in seen:
            raise DataFileError(
                path,
                f"timestamp {time!r} of series {column.name!r} repeats line {seen[time]}",
                line=line,
            )
        seen[time] = line
        try:
            number: float | None = float(time)
        except ValueError:
            number = None
        if number is not None and previous is not None and number < previous:
            raise DataFileError(
                path,
                f"timestamp {time} of series {column.name!r} comes after {previous:g}: rows of "
                "a series must be in time order",
                line=line,
            )
        previous = number
