"""The one exception type for problems a user can fix (bad input, bad options)."""

from __future__ import annotations


class DataPrepError(ValueError):
    """Bad input or options; the message names the file and the fix, in one line."""


# Appended to messages about one bad image: the way to go on without it.
SKIP_HINT = " (or pass --skip-bad-images)"
