"""Time series from a CSV (or, by suffix, TSV) file: one or many series, wide or long.

Wide layout: a header, then one row per time step and one column per series; an optional
timestamp column (``time_column``, or by default the first column when its header is one of
``series_table.TIME_NAMES``) and covariate columns (``covariates``), shared by every series::

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
Any other missing value (an empty cell or one of ``series_table.MISSING_TOKENS``) follows
``missing``: ``"error"`` (the default), ``"interpolate"`` (linearly between the neighbours in
the series, the nearest value at its ends) or ``"skip"`` (the whole series); a series shorter
than ``minimum_length`` follows ``short_series``: ``"error"`` or ``"skip"``. Every skip and
every interpolated value is counted in the ``LoadReport``.

Reading the table and the cells of each series: ``series_table``; here, their numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from rnnkit.data.files.errors import DataFileError, LoadReport
from rnnkit.data.files.series_table import (
    SeriesColumn,
    check_times,
    is_missing,
    long_columns,
    read_table,
    wide_columns,
)

LAYOUTS = ("auto", "wide", "long")
MISSING_POLICIES = ("error", "interpolate", "skip")
SHORT_SERIES_POLICIES = ("error", "skip")


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


def load_series(
    path: str | Path, form: SeriesFormat, minimum_length: int, needed_for: str = ""
) -> SeriesFile:
    """Every series of ``path``; a series shorter than ``minimum_length`` steps is an error (or
    skipped, by ``form.short_series``) whose message adds ``needed_for`` (what needs them)."""
    path = Path(path)
    report = LoadReport(path)
    header, rows = read_table(path)
    if form.layout == "long" or (
        form.layout == "auto" and {form.series_column, form.value_column} <= set(header)
    ):
        columns = long_columns(
            path,
            header,
            rows,
            series_column=form.series_column,
            time_column=form.time_column,
            value_column=form.value_column,
            covariates=form.covariates,
        )
    else:
        columns = wide_columns(
            path, header, rows, time_column=form.time_column, covariates=form.covariates
        )
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


def _parse_series(
    path: Path, column: SeriesColumn, form: SeriesFormat, report: LoadReport
) -> Series | None:
    """The numbers of ``column``, its missing values handled by ``form.missing``; None when the
    series is skipped."""
    names = [column.column, *form.covariates]
    table: list[list[float | None]] = []
    missing = 0
    for line, cells in zip(column.lines, column.cells, strict=True):
        row: list[float | None] = []
        for name, cell in zip(names, cells, strict=True):
            if is_missing(cell):
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
    check_times(path, column)
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


def _interpolate(
    path: Path, column: SeriesColumn, name: str, cells: list[float | None]
) -> list[float]:
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
