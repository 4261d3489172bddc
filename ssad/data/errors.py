"""Errors raised by `ssad.data`, all catchable as `DataError`.

Each also subclasses the matching built-in (`FileNotFoundError`, `ValueError`, `OSError`), so callers
that do not know ssad still catch them. Messages name the file or folder at fault and the fix.
"""

from __future__ import annotations

__all__ = [
    "DataError",
    "DataNotFoundError",
    "BadDataError",
    "ChecksumError",
    "UnsafeArchiveError",
    "DownloadError",
]


class DataError(Exception):
    """Base class of every error raised by `ssad.data`."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data root, category or split is missing or holds no images."""


class BadDataError(DataError, ValueError):
    """A file exists but cannot be used: unreadable image, mask of the wrong size, bad metadata."""


class ChecksumError(BadDataError):
    """A downloaded or supplied archive does not have the expected sha256."""


class UnsafeArchiveError(BadDataError):
    """An archive member would be written outside its destination (absolute path, `..`, link)."""


class DownloadError(DataError, OSError):
    """A download failed or was interrupted; running it again resumes from the partial file."""
