"""The one exception type for problems a user can fix (bad input, bad options)."""

from __future__ import annotations


class DataPrepError(ValueError):
    """Bad input or options; the message names the file and the fix, in one line."""
