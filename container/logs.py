"""The training log: what a person reads on CloudWatch, and what is kept for DEBUG.

At the default level (`log_level=info`) the log holds the resolved configuration, progress,
metric lines, evaluation results, the export summary and every real warning or error. Framework
chatter is rewritten to DEBUG, shown with the hyperparameter `log_level=debug` or the
environment variable `TFOD_LOG_LEVEL=debug` (the hyperparameter wins when both are set):

- Python records matching `CHATTER` below (absl's INFO lines such as Model Garden's per-block
  builder notes, TensorFlow's INFO lines, the Keras serialization warnings of the SavedModel
  export, and so on), except those matching `KEPT`;
- TensorFlow's own C++ lines (`native_log`): INFO lines, CUDA probes on a machine without a GPU,
  the TFLite converter's notes.

Lines name their logger briefly: `training:` for `sagemaker_tfod.container.training`.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from sagemaker_tfod.data_prep.console import LOG_LEVEL_ENV, LOG_LEVELS, ShortNames

HYPERPARAMETER = "log_level"
PROJECT_LOGGER = "sagemaker_tfod"
FORMAT = "%(asctime)s %(levelname)s %(short_name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
# FORMAT's timestamp; logging's own default adds ",123" milliseconds, read too.
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(\d{3}))?")


@dataclass(frozen=True)
class Rule:
    """Records of `logger` (or its children) at or below `max_level` whose message matches
    `pattern` (searched; "" matches all)."""

    logger: str
    max_level: int
    pattern: str = ""
    why: str = ""

    def matches(self, record: logging.LogRecord) -> bool:
        name = record.name
        if name != self.logger and not name.startswith(self.logger + "."):
            return False
        if record.levelno > self.max_level:
            return False
        return not self.pattern or re.search(self.pattern, record.getMessage()) is not None


CHATTER = (
    Rule(
        "absl",
        logging.INFO,
        why="Model Garden's and Orbit's notes: round_filter and stochastic_depth per block, "
        "FPN input specs, per-loop dumps, checkpoint saves (the container logs its own)",
    ),
    Rule("tensorflow", logging.INFO, why="`Assets written to`, `Customized initialization`"),
    Rule(
        "tensorflow",
        logging.WARNING,
        r"^Skipping full serialization of TF-Keras layer",
        why="one per Keras layer while the SavedModel is written; the export is evaluated",
    ),
    Rule(
        "tensorflow",
        logging.WARNING,
        r"^Gradients do not exist for variables "
        r"\['conv2dbn_block_1/batch_normalization/gamma:0', "
        r"'conv2dbn_block_1/batch_normalization/beta:0'\]",
        why="MobileNetV2's stem BatchNorm feeds no FPN level, so it has no gradient",
    ),
    Rule(
        "py.warnings",
        logging.WARNING,
        r"UserWarning: Input dict contained keys \['\d+'\] which did not match any model input",
        why="tf_keras: the backbone's extra output level that the decoder does not take",
    ),
)
KEPT = (
    Rule("absl", logging.INFO, r"^Finished loading pretrained checkpoint", "what was restored"),
)


def is_chatter(record: logging.LogRecord) -> bool:
    if record.name.startswith(PROJECT_LOGGER):
        return False
    return any(rule.matches(record) for rule in CHATTER) and not any(
        rule.matches(record) for rule in KEPT
    )


class ChatterToDebug(logging.Filter):
    """Rewrites chatter to DEBUG, and drops it unless the handler shows DEBUG."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if is_chatter(record):
            if self.level > logging.DEBUG:
                return False
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        return True


def resolve_level(
    hyperparameters: Mapping[str, str] | None, environ: Mapping[str, str]
) -> tuple[int, str]:
    """(level, where it came from): `log_level` hyperparameter, else TFOD_LOG_LEVEL, else info.

    An unknown value here is ignored (INFO); parsing the hyperparameters rejects it later with
    the usual one-line error.
    """
    from sagemaker_tfod.container.hyperparameters import unquote_json_string

    raw = (hyperparameters or {}).get(HYPERPARAMETER)
    if raw is not None:
        value = unquote_json_string(str(raw).strip()).lower()
        if value in LOG_LEVELS:
            return LOG_LEVELS[value], f"hyperparameter {HYPERPARAMETER}={value}"
    value = environ.get(LOG_LEVEL_ENV, "").strip().lower()
    if value in LOG_LEVELS:
        return LOG_LEVELS[value], f"{LOG_LEVEL_ENV}={value}"
    return logging.INFO, "default"


def configure_logging(level: int = logging.INFO, native: bool = False) -> None:
    """Timestamped, short-named lines on stdout (SageMaker's log stream), chatter at DEBUG.

    With `native`, TensorFlow's C++ lines on stderr are filtered too. Before TensorFlow is
    imported, TF_CPP_MIN_LOG_LEVEL=1 (unless set) keeps its INFO lines from being written at
    all; debug sets 0, so that they are all there.
    """
    if native:
        if level <= logging.DEBUG:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        else:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
        from sagemaker_tfod.container.native_log import start_native_log_filter

        start_native_log_filter(show_chatter=level <= logging.DEBUG)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(ShortNames(FORMAT, DATE_FORMAT))
    handler.addFilter(ChatterToDebug(level))
    root = logging.getLogger()
    for existing in root.handlers[:]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # Python warnings become records, so the rules apply
    # TensorFlow, if imported before this, found no root handler and gave its own logger a
    # stderr handler: without this every TensorFlow message would appear twice.
    tensorflow_logger = logging.getLogger("tensorflow")
    for existing in tensorflow_logger.handlers[:]:
        tensorflow_logger.removeHandler(existing)


def line_timestamp(line: str) -> float | None:
    """Seconds since the epoch (local time) of the first timestamp in a log line, if any."""
    found = _TIMESTAMP.search(line)
    if found is None:
        return None
    seconds = datetime.datetime.strptime(found.group(1), DATE_FORMAT).timestamp()
    return seconds + int(found.group(2) or 0) / 1000
