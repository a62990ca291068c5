"""What the tasks on your own files share (``classify``, ``forecast``, ``seq2seq``, ``ctc``): the
predictions file that ``rnnkit predict RUN --data FILE --output FILE`` writes.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


def write_table(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Write ``header`` and ``rows`` as plain CSV, or TSV when ``path`` ends in ``.tsv``, one
    ``\\n``-terminated line per row; return how many rows (after the header) were written."""
    delimiter = "\t" if path.suffix == ".tsv" else ","
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            count += 1
    return count
