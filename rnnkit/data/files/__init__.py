"""Loaders of the files a user brings: labelled sequences, series, pairs, features.

Every loader refuses a bad file at once with a ``DataFileError`` naming the file, the line or
row, and the problem (what was expected, what was found); rows it skips by a documented policy
are counted in a ``LoadReport`` that the task prints, never dropped silently.
"""

from __future__ import annotations

from rnnkit.data.files.errors import DataFileError, LoadReport

__all__ = ["DataFileError", "LoadReport"]
