"""Labelled sequences in a CSV (``,``) or TSV (tab) table with a header row, in two layouts.

Wide (one univariate series per row; every column but the label is a time step)::

    label,t1,t2,t3,t4
    walk,0.1,0.4,0.2,
    run,0.9,1.3,1.1,0.7

A wide row's trailing empty cells end its series early (so rows may differ in length); an
empty cell before the last value, or ``?`` / ``NaN``, is a missing value.

Long (one time step per row; the rows of a sequence share its ``id``; ``time``, when present,
orders them; every other column but the label is a feature)::

    id,time,x,y,label
    a,0,0.1,1.0,walk
    a,1,0.3,0.9,walk
    b,0,0.8,0.2,run

``layout="auto"`` reads a table with an ``id`` column as long, else wide. The label of a long
sequence must be the same on each of its rows. Without the label column the file is
unlabelled (accepted for prediction only, ``require_labels=False``). Errors name the file, the
line and the problem: ragged rows, a cell that is not a number, a label that changes within a
sequence, a time repeated within a sequence, missing values under ``missing="error"``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from rnnkit.data.files.errors import DataFileError, LoadReport
from rnnkit.data.files.sequences import (
    LabelledSequences,
    check_missing_policy,
    fill_missing,
    parse_number,
)

LAYOUTS = ("auto", "wide", "long")
ID_COLUMN, TIME_COLUMN = "id", "time"


def read_table(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """``(header, [(line, fields), ...])``; blank lines skipped; ragged rows refused."""
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            rows = [
                (reader.line_num, fields) for fields in reader if any(f.strip() for f in fields)
            ]
    except OSError as error:
        raise DataFileError(path, f"cannot read the file ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise DataFileError(path, f"not UTF-8 text (byte {error.start})") from None
    except csv.Error as error:
        raise DataFileError(path, f"not valid CSV: {error}") from None
    if not rows:
        raise DataFileError(path, "the file is empty: expected a header row and data rows")
    (_, header), body = rows[0], rows[1:]
    header = [name.strip() for name in header]
    for line, fields in body:
        if len(fields) != len(header):
            raise DataFileError(
                path,
                f"{len(fields)} fields, the header has {len(header)} ({', '.join(header)})",
                line=line,
            )
    if not body:
        raise DataFileError(path, "a header row but no data rows")
    return header, body


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        return parse_number(text)
    except ValueError:
        raise DataFileError(
            path, f"column {column!r}: {text.strip()!r} is not a number", line=line
        ) from None


def load_csv(
    path: str | Path,
    label_column: str = "label",
    layout: str = "auto",
    missing: str = "error",
    require_labels: bool = True,
) -> LabelledSequences:
    """Read a wide or long table of labelled sequences (see the module docstring)."""
    check_missing_policy(missing)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    path = Path(path)
    header, body = read_table(path)
    if len(set(header)) != len(header):
        repeated = sorted({name for name in header if header.count(name) > 1})
        raise DataFileError(path, f"repeated column names: {', '.join(repeated)}", line=1)
    if label_column not in header and require_labels:
        raise DataFileError(
            path,
            f"no label column {label_column!r} (set --data.label_column); columns: "
            f"{', '.join(header)}",
            line=1,
        )
    if layout == "auto":
        layout = "long" if ID_COLUMN in header else "wide"
    label_index = header.index(label_column) if label_column in header else None
    reader = _read_long if layout == "long" else _read_wide
    return reader(path, header, body, label_index, missing)


def _read_wide(
    path: Path,
    header: list[str],
    body: list[tuple[int, list[str]]],
    label_index: int | None,
    missing: str,
) -> LabelledSequences:
    report = LoadReport(path)
    columns = [index for index in range(len(header)) if index != label_index]
    if not columns:
        raise DataFileError(path, "no value columns beside the label", line=1)
    values, labels, locations = [], [], []
    for line, fields in body:
        cells = [fields[index] for index in columns]
        while cells and not cells[-1].strip():
            cells.pop()  # trailing empty cells: a shorter series
        if not cells:
            raise DataFileError(path, "a row without values", line=line)
        series = [_number(path, line, header[columns[i]], cell) for i, cell in enumerate(cells)]
        where = f"line {line}"
        values.append(fill_missing(np.array(series)[:, None], missing, report, path, where))
        locations.append(where)
        if label_index is not None:
            labels.append(_label(path, line, fields[label_index]))
    return LabelledSequences(
        values, labels if label_index is not None else None, locations, path, report
    )


def _label(path: Path, line: int, text: str) -> str:
    label = text.strip()
    if not label:
        raise DataFileError(path, "an empty label", line=line)
    return label


def _read_long(
    path: Path,
    header: list[str],
    body: list[tuple[int, list[str]]],
    label_index: int | None,
    missing: str,
) -> LabelledSequences:
    if ID_COLUMN not in header:
        raise DataFileError(path, f"a long table needs an {ID_COLUMN!r} column", line=1)
    id_index = header.index(ID_COLUMN)
    time_index = header.index(TIME_COLUMN) if TIME_COLUMN in header else None
    features = [i for i in range(len(header)) if i not in (id_index, time_index, label_index)]
    if not features:
        raise DataFileError(path, "no feature columns beside id, time and label", line=1)
    groups: dict[str, list[tuple[int, list[str]]]] = {}
    for line, fields in body:
        key = fields[id_index].strip()
        if not key:
            raise DataFileError(path, f"an empty {ID_COLUMN!r}", line=line)
        groups.setdefault(key, []).append((line, fields))
    report = LoadReport(path)
    values, labels, locations = [], [], []
    for key, rows in groups.items():
        where = f"line {rows[0][0]}"  # the sequence's first row in the file
        if label_index is not None:
            labels.append(_sequence_label(path, key, rows, label_index))
        if time_index is not None:
            rows = _ordered_by_time(path, key, rows, time_index)
        steps = [
            [_number(path, line, header[index], fields[index]) for index in features]
            for line, fields in rows
        ]
        values.append(fill_missing(np.array(steps), missing, report, path, f"{where} (id {key})"))
        locations.append(where)
    return LabelledSequences(
        values, labels if label_index is not None else None, locations, path, report
    )


def _ordered_by_time(
    path: Path, key: str, rows: list[tuple[int, list[str]]], time_index: int
) -> list[tuple[int, list[str]]]:
    times: dict[float, int] = {}
    for line, fields in rows:
        time = _number(path, line, TIME_COLUMN, fields[time_index])
        if np.isnan(time):
            raise DataFileError(path, f"id {key!r}: a missing time", line=line)
        if time in times:
            raise DataFileError(
                path, f"id {key!r}: time {time:g} again (first on line {times[time]})", line=line
            )
        times[time] = line
    return sorted(rows, key=lambda row: float(row[1][time_index]))


def _sequence_label(
    path: Path, key: str, rows: list[tuple[int, list[str]]], label_index: int
) -> str:
    first_line, first_fields = rows[0]
    label = _label(path, first_line, first_fields[label_index])
    for line, fields in rows[1:]:
        if fields[label_index].strip() != label:
            raise DataFileError(
                path,
                f"id {key!r}: label {fields[label_index].strip()!r}, but {label!r} on line "
                f"{first_line}: one label per sequence",
                line=line,
            )
    return label
