"""The one exception type for problems a user can fix."""


class EdgeError(Exception):
    """Bad input (a missing file, a model of the wrong kind); the message says what to do."""
