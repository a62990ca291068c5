"""The ``.ts`` format of the UCR/UEA time-series classification archives.

A header of ``@key value`` lines (keys case-insensitive), then ``@data`` and one case per line:

    # comments start with # or %
    @problemName JapaneseVowels
    @timeStamps false
    @missing false
    @univariate false
    @dimensions 12
    @equalLength false
    @classLabel true 1 2 3 4 5 6 7 8 9
    @data
    1.86,1.89,1.94:-0.21,-0.19,-0.24: ... :1

Within a case, dimensions are separated by ``:`` and values by ``,``; the class label comes last.
Every dimension of a case has the same length; cases may differ in length unless
``@equalLength true`` (and ``@seriesLength N`` fixes it). ``?`` or ``NaN`` is a missing value
(see ``sequences.fill_missing``). Time-stamped series (``@timeStamps true``) and regression
files (``@targetLabel``) are refused with a message saying so. Reference:
https://www.timeseriesclassification.com and aeon's ``load_from_ts_file``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnkit.data.files.errors import DataFileError, LoadReport
from rnnkit.data.files.sequences import (
    LabelledSequences,
    check_missing_policy,
    fill_missing,
    parse_number,
)

KEYS = (
    "problemname",
    "timestamps",
    "missing",
    "univariate",
    "dimensions",
    "equallength",
    "serieslength",
    "classlabel",
    "targetlabel",
    "data",
)
NAMES_ONLY = ("problemname", "missing")
"""Keys that change nothing in the reading: declared twice is allowed (archive files do it)."""
TRUE_WORDS, FALSE_WORDS = ("true",), ("false",)


@dataclass
class Header:
    """What the ``@`` lines declared (None: not declared)."""

    univariate: bool | None = None
    dimensions: int | None = None
    equal_length: bool | None = None
    series_length: int | None = None
    class_labels: list[str] | None = None
    seen: dict[str, int] = field(default_factory=dict)
    """Each key's line."""


def read_text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except OSError as error:
        raise DataFileError(path, f"cannot read the file ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise DataFileError(path, f"not UTF-8 text (byte {error.start})") from None


def _flag(path: Path, number: int, key: str, value: str) -> bool:
    word = value.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise DataFileError(path, f"@{key} expects true or false, found {value!r}", line=number)
    return word in TRUE_WORDS


def _positive(path: Path, number: int, key: str, value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count <= 0:
        raise DataFileError(
            path, f"@{key} expects a positive integer, found {value!r}", line=number
        )
    return count


def _header_line(path: Path, number: int, text: str, header: Header) -> None:
    name, _, value = text[1:].replace("\t", " ").partition(" ")
    key, value = name.lower(), value.strip()
    if key not in KEYS:
        raise DataFileError(
            path, f"unknown header @{name}; known: @{', @'.join(KEYS)}", line=number
        )
    if key in header.seen and key not in NAMES_ONLY:
        raise DataFileError(
            path, f"@{key} is declared twice (first on line {header.seen[key]})", line=number
        )
    header.seen[key] = number
    if key == "timestamps" and _flag(path, number, key, value):
        raise DataFileError(
            path,
            "time-stamped series (@timeStamps true) are not supported; "
            "write the values without time stamps",
            line=number,
        )
    if key == "targetlabel":
        raise DataFileError(
            path,
            "@targetLabel: a regression file; classification needs @classLabel true and its labels",
            line=number,
        )
    if key == "univariate":
        header.univariate = _flag(path, number, key, value)
    elif key == "dimensions":
        header.dimensions = _positive(path, number, key, value)
    elif key == "equallength":
        header.equal_length = _flag(path, number, key, value)
    elif key == "serieslength":
        header.series_length = _positive(path, number, key, value)
    elif key == "classlabel":
        words = value.split()
        if not words or not _flag(path, number, key, words[0]):
            header.class_labels = None
        elif len(words) == 1:
            raise DataFileError(path, "@classLabel true lists no labels", line=number)
        else:
            header.class_labels = words[1:]


def _parse_case(
    path: Path, number: int, text: str, header: Header, labelled: bool
) -> tuple[np.ndarray, str | None]:
    """``(values (T, D), label)`` of the case on line ``number``; NaN for missing values."""
    parts = text.split(":")
    label = parts.pop().strip() if labelled else None
    if labelled and len(parts) == 0:
        raise DataFileError(path, "a case needs values, then ':' and its label", line=number)
    expected = header.dimensions or (1 if header.univariate else None)
    if expected is not None and len(parts) != expected:
        found = f"{len(parts)} dimension{'s' * (len(parts) != 1)}"
        raise DataFileError(
            path,
            f"expected {expected} dimensions, found {found} (separated by ':'; the label last)",
            line=number,
        )
    dimensions = []
    for dimension, part in enumerate(parts, start=1):
        cells = part.split(",")
        try:
            dimensions.append([parse_number(cell) for cell in cells])
        except ValueError:
            bad = next(index for index, cell in enumerate(cells) if not _is_number(cell))
            raise DataFileError(
                path,
                f"dimension {dimension}, value {bad + 1}: {cells[bad].strip()!r} is not a number",
                line=number,
            ) from None
    lengths = sorted({len(values) for values in dimensions})
    if len(lengths) > 1:
        per = ", ".join(str(len(values)) for values in dimensions)
        raise DataFileError(path, f"the dimensions of a case differ in length ({per})", line=number)
    if (
        header.series_length is not None
        and header.equal_length
        and lengths[0] != header.series_length
    ):
        raise DataFileError(
            path,
            f"@seriesLength is {header.series_length}, this case has {lengths[0]} values",
            line=number,
        )
    if label is not None and header.class_labels is not None and label not in header.class_labels:
        raise DataFileError(
            path,
            f"label {label!r} is not one of @classLabel {' '.join(header.class_labels)}",
            line=number,
        )
    return np.array(dimensions, dtype=np.float64).T, label


def _is_number(cell: str) -> bool:
    try:
        parse_number(cell)
    except ValueError:
        return False
    return True


def load_ts(
    path: str | Path, missing: str = "error", require_labels: bool = True
) -> LabelledSequences:
    """Read a ``.ts`` file; ``require_labels=False`` also accepts ``@classLabel false`` (for
    prediction). Raises ``DataFileError`` naming the line of the first problem."""
    check_missing_policy(missing)
    path = Path(path)
    header, report = Header(), LoadReport(path)
    values: list[np.ndarray] = []
    labels: list[str] = []
    locations: list[str] = []
    in_data = False
    for number, raw in enumerate(read_text_lines(path), start=1):
        text = raw.strip()
        if not text or text[0] in "#%":
            continue
        if not in_data:
            if not text.startswith("@"):
                raise DataFileError(
                    path,
                    f"expected a header line (@key value) before @data, found {text[:40]!r}",
                    line=number,
                )
            _header_line(path, number, text, header)
            in_data = "data" in header.seen
            if in_data and "classlabel" not in header.seen and require_labels:
                raise DataFileError(
                    path, "@data before @classLabel: the labels are not declared", line=number
                )
            continue
        labelled = header.class_labels is not None
        if require_labels and not labelled:
            raise DataFileError(
                path,
                "@classLabel false: the cases have no labels to learn",
                line=header.seen["classlabel"],
            )
        case, label = _parse_case(path, number, text, header, labelled)
        if values and case.shape[1] != values[0].shape[1]:
            raise DataFileError(
                path,
                f"{case.shape[1]} dimensions, the first case "
                f"({locations[0]}) has {values[0].shape[1]}",
                line=number,
            )
        if header.equal_length and values and len(case) != len(values[0]):
            raise DataFileError(
                path,
                f"@equalLength true, but this case has {len(case)} values "
                f"and the first has {len(values[0])}",
                line=number,
            )
        values.append(fill_missing(case, missing, report, path, f"line {number}"))
        locations.append(f"line {number}")
        if label is not None:
            labels.append(label)
    if not in_data:
        raise DataFileError(path, "no @data line: not a .ts file, or an empty one")
    has_labels = header.class_labels is not None
    return LabelledSequences(values, labels if has_labels else None, locations, path, report)
