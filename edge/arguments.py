"""argparse types of the edge commands (also `launch invoke --score-threshold`): each refuses a
bad value with a message that says which values work."""

from __future__ import annotations

import argparse


def whole_number_at_least(minimum: int, too_small: str):
    """argparse type: a whole number >= `minimum`; `too_small` says why a smaller one is refused."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number; use {minimum} or more"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} {too_small}; use {minimum} or more")
        return value

    return parse


positive_int = whole_number_at_least(1, "is less than 1")  # threads, runs, frames, images
non_negative_int = whole_number_at_least(0, "is negative")  # warm-up runs


def score_threshold(text: str) -> float:
    """argparse type: a score between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; use 0 to 1") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value} is outside 0 to 1; scores are in [0, 1]")
    return value


def megapixels(text: str) -> float:
    """argparse type: a pixel limit in megapixels, above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of megapixels") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{value} megapixels: use a limit above 0")
    return value
