"""The stable `metric ...` log lines and the regexes SageMaker uses to read them.

One line per log interval and one after each evaluation, e.g.

    metric step=1200 total_loss=0.4123 learning_rate=0.0081 steps_per_sec=3.1
    metric step=2000 AP=0.5123 AP50=0.8012 AP75=0.5544

SageMaker's `MetricDefinitions` take the first capture group of each regex from the job's log
stream, so every value is written as a plain decimal number (or `nan`/`inf`) and every key is
preceded by a space, which keeps `AP=` from matching inside `AP50=`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

METRIC_PREFIX = "metric"

# Keys in the order they are written; the regexes below are built from these lists.
TRAIN_KEYS: tuple[str, ...] = (
    "total_loss",
    "cls_loss",
    "box_loss",
    "learning_rate",
    "steps_per_sec",
)
EVAL_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax100")

# A number as `format_metric_line` writes it: decimal or scientific, or nan/inf.
_NUMBER = r"(-?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|nan|inf))"


def _format_value(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value != 0 and abs(value) < 1e-4:
        return f"{value:.4e}"
    return f"{value:.4f}".rstrip("0").rstrip(".")


def format_metric_line(step: int, values: Mapping[str, float]) -> str:
    """`metric step=N key=value ...`, keys in the given order, values as plain numbers."""
    parts = [f"{METRIC_PREFIX} step={int(step)}"]
    for key, value in values.items():
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
            raise ValueError(f"metric key {key!r} must be letters, digits and underscores")
        parts.append(f"{key}={_format_value(value)}")
    return " ".join(parts)


def parse_metric_line(line: str) -> tuple[int, dict[str, float]] | None:
    """Inverse of `format_metric_line` (None for any other line); used by tests and tools."""
    match = re.search(rf"\b{METRIC_PREFIX} step=(\d+)((?: [A-Za-z][A-Za-z0-9_]*=\S+)*)\s*$", line)
    if not match:
        return None
    values = {}
    for pair in match.group(2).split():
        key, _, value = pair.partition("=")
        values[key] = float(value)
    return int(match.group(1)), values


def metric_regex(key: str) -> str:
    """Regex whose first group is `key`'s value on a metric line."""
    return rf"{METRIC_PREFIX} step=\d+.* {re.escape(key)}={_NUMBER}"


# Ready for SageMaker's CreateTrainingJob `AlgorithmSpecification.MetricDefinitions`.
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "train:step", "Regex": rf"{METRIC_PREFIX} step=([0-9]+) total_loss="},
    *({"Name": f"train:{key}", "Regex": metric_regex(key)} for key in TRAIN_KEYS),
    *({"Name": f"eval:{key}", "Regex": metric_regex(key)} for key in EVAL_KEYS),
]
