"""The one error type of recsys-preprocess (a DatasetError, so the CLI prints it on one line)."""

from __future__ import annotations

from recsys.data.features import DatasetError


class PreprocessError(DatasetError):
    """Raw input that cannot be converted as asked (missing, truncated, too many bad rows)."""
