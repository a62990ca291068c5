"""Time series from a CSV (or, by suffix, TSV) file: one or many series, wide or long.

Wide layout: a header, then one row per time step and one column per series; an optional
timestamp column (``time_column``, or by default the first column when its header is one of
``TIME_NAMES``) and covariate columns (``covariates``), shared by every series::

    date,store_a,store_b          long layout:  series,time,value,price
    2024-01,12,7                                a,2024-01,12,1.5
    2024-02,13,9                                a,2024-02,13,1.4

Long layout: one row per series and time step, with columns ``series_column``, ``time_column``
(``"time"`` by default) and ``value_column``, and one column per covariate; a series' rows are in
time order, series may interleave. ``layout="auto"`` reads a file as long when its header has
both the series and the value column, else as wide.

Refused with a ``DataFileError`` naming the file, the line and the column: an empty file or one
without data rows, a row with more or fewer fields than the header, duplicated or empty column
names, a column named by an option that the header lacks (or, long layout, a column no option
uses), a value that is not a finite number, a timestamp repeated within a series, numeric
timestamps that go back. Blank lines are ignored. In a wide file a column may start late or end
early: its empty cells before its first value and after its last are not part of that series.
Any other missing value (an empty cell or one of ``MISSING_TOKENS``) follows ``missing``:
``"error"`` (the default), ``"interpolate"`` (linearly between the neighbours in the series, the
nearest value at its ends) or ``"skip"`` (the whole series); a series shorter than
``minimum_length`` follows ``short_series``: ``"error"`` or ``"skip"``. Every skip and every
interpolated value is counted in the ``LoadReport``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rnnkit.data.files.errors import DataFileError, LoadReport

LAYOUTS = ("auto", "wide", "long")
MISSING_POLICIES = ("error", "interpolate", "skip")
SHORT_SERIES_POLICIES = ("error", "skip")
MISSING_TOKENS = ("", "na", "n/a", "nan", "null", "none", "?")
TIME_NAMES = ("time", "timestamp", "date", "datetime", "ds", "month", "period", "year")


@dataclass(frozen=True)
class SeriesFormat:
    """How to read a series file (see the module docstring)."""

    layout: str = "auto"
    time_column: str = ""
    series_column: str = "series"
    value_column: str = "value"
    covariates: tuple[str, ...] = ()
    missing: str = "error"
    short_series: str = "error"


@dataclass
class Series:
    """One series: ``values (T,)`` and ``covariates (T, C)`` float64, timestamps as text."""

    name: str
    values: Tensor
    covariates: Tensor
    timestamps: list[str] | None


@dataclass
class SeriesFile:
    series: list[Series]
    covariate_names: tuple[str, ...]
    report: LoadReport


@dataclass
class _Column:
    """A series being read: per step the line, the timestamp, the value and covariate cells."""

    name: str
    column: str
    lines: list[int]
    times: list[str]
    cells: list[list[str]]  # per step: [value, covariate 1, ...]


def load_series(
    path: str | Path, form: SeriesFormat, minimum_length: int, needed_for: str = ""
) -> SeriesFile:
    """Every series of ``path``; a series shorter than ``minimum_length`` steps is an error (or
    skipped, by ``form.short_series``) whose message adds ``needed_for`` (what needs them)."""
    path = Path(path)
    report = LoadReport(path)
    header, rows = _read_table(path)
    if form.layout == "long" or (
        form.layout == "auto" and {form.series_column, form.value_column} <= set(header)
    ):
        columns = _long_columns(path, header, rows, form)
    else:
        columns = _wide_columns(path, header, rows, form)
    kept = []
    for column in columns:
        series = _parse_series(path, column, form, report)
        if series is None:
            continue
        if len(series.values) < minimum_length:
            problem = (
                f"series {series.name!r} has {len(series.values)} steps, fewer than the "
                f"{minimum_length} needed{' for ' + needed_for if needed_for else ''}"
            )
            if form.short_series == "error":
                raise DataFileError(path, problem + "; or skip it with --data.short_series=skip")
            report.skip(f"series shorter than {minimum_length} steps")
            continue
        kept.append(series)
    if not kept:
        raise DataFileError(path, f"no series left to use ({report.summary()})")
    report.read = len(kept)
    return SeriesFile(kept, form.covariates, report)


def _read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
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


def _long_columns(
    path: Path, header: list[str], rows: list[tuple[int, list[str]]], form: SeriesFormat
) -> list[_Column]:
    names = [form.series_column, form.time_column or "time", form.value_column]
    options = ["series_column", "time_column", "value_column"]
    series_at, time_at, value_at = (
        _require(path, header, name, option) for name, option in zip(names, options, strict=True)
    )
    covariates_at = [_require(path, header, name, "covariates") for name in form.covariates]
    for name in header:
        if name not in names and name not in form.covariates:
            raise DataFileError(
                path,
                f"column {name!r} is not used: name it in --data.covariates or remove it "
                f"(series {names[0]!r}, time {names[1]!r}, value {names[2]!r})",
                line=1,
            )
    columns: dict[str, _Column] = {}
    for line, fields in rows:
        name = fields[series_at].strip()
        if not name:
            raise DataFileError(path, f"empty series name in column {names[0]!r}", line=line)
        column = columns.setdefault(name, _Column(name, form.value_column, [], [], []))
        column.lines.append(line)
        column.times.append(fields[time_at].strip())
        column.cells.append([fields[value_at]] + [fields[index] for index in covariates_at])
    return list(columns.values())


def _wide_columns(
    path: Path, header: list[str], rows: list[tuple[int, list[str]]], form: SeriesFormat
) -> list[_Column]:
    if form.time_column.lower() in ("none", "-"):
        time_at = None
    elif form.time_column:
        time_at = _require(path, header, form.time_column, "time_column")
    else:
        time_at = 0 if header[0].lower() in TIME_NAMES else None
    covariates_at = [_require(path, header, name, "covariates") for name in form.covariates]
    used = set(covariates_at) | ({time_at} if time_at is not None else set())
    columns = []
    for index, name in enumerate(header):
        if index in used:
            continue
        cells = [[fields[index]] + [fields[at] for at in covariates_at] for _, fields in rows]
        present = [step for step, cell in enumerate(cells) if not _is_missing(cell[0])]
        first, last = (present[0], present[-1] + 1) if present else (0, 0)
        times = [fields[time_at].strip() if time_at is not None else "" for _, fields in rows]
        columns.append(
            _Column(
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


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in MISSING_TOKENS


def _parse_series(
    path: Path, column: _Column, form: SeriesFormat, report: LoadReport
) -> Series | None:
    """The numbers of ``column``, its missing values handled by ``form.missing``; None when the
    series is skipped."""
    names = [column.column, *form.covariates]
    table: list[list[float | None]] = []
    missing = 0
    for line, cells in zip(column.lines, column.cells, strict=True):
        row: list[float | None] = []
        for name, cell in zip(names, cells, strict=True):
            if _is_missing(cell):
                if form.missing == "error":
                    raise DataFileError(
                        path,
                        f"missing value in column {name!r} (series {column.name!r}); fill it, "
                        "or set --data.missing=interpolate or --data.missing=skip",
                        line=line,
                    )
                missing += 1
                row.append(None)
                continue
            try:
                number = float(cell)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise DataFileError(
                    path, f"column {name!r}: expected a finite number, found {cell!r}", line=line
                )
            row.append(number)
        table.append(row)
    _check_times(path, column)
    if missing and form.missing == "skip":
        report.skip("series with missing values")
        return None
    if missing:
        report.fill("missing values interpolated", missing)
    values = torch.zeros(len(names), len(table), dtype=torch.float64)
    for index, column_values in enumerate(zip(*table, strict=True)):
        filled = _interpolate(path, column, names[index], list(column_values))
        values[index] = torch.tensor(filled, dtype=torch.float64)
    timestamps = column.times if any(column.times) else None
    return Series(column.name, values[0], values[1:].T.contiguous(), timestamps)


def _check_times(path: Path, column: _Column) -> None:
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


def _interpolate(path: Path, column: _Column, name: str, cells: list[float | None]) -> list[float]:
    """``cells`` with each None replaced linearly between its known neighbours (the nearest
    known value before the first or after the last)."""
    known = [step for step, value in enumerate(cells) if value is not None]
    if not known:
        raise DataFileError(path, f"series {column.name!r} has no value in column {name!r}")
    filled: list[float] = []
    after = 0  # index into known of the first known step at or after the current one
    for step, value in enumerate(cells):
        while known[after] < step and after + 1 < len(known):
            after += 1
        if value is not None:
            filled.append(value)
            continue
        right = known[after]
        left = known[after - 1] if after > 0 else right
        if right < step:  # past the last known value
            left = right
        if left == right:
            filled.append(float(cells[right] or 0.0))
        else:
            low, high = float(cells[left] or 0.0), float(cells[right] or 0.0)
            filled.append(low + (high - low) * (step - left) / (right - left))
    return filled
