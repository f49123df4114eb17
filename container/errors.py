"""The one exception type for problems a user can fix."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a file, a hyperparameter, a channel): the message says what and how to fix it.

    The CLI prints it on one line, writes it to `output/failure` and exits non-zero, without a
    traceback; any other exception is a bug and keeps its traceback in the log.
    """
