"""What every command line of the project shares (data_prep is the layer all others import).

- `prog_name`: the command as the user typed it, for `usage:` lines: `tfod-edge` from the
  console script, `python -m edge` (or `python -m sagemaker_tfod.edge`) from a module run.
- `missing_extra_message`: a missing optional package as one line naming the pip extra that
  installs it, instead of a traceback (each place the code runs installs only its extra).
- `log_level`: `--verbose` or `TFOD_LOG_LEVEL=debug` turn on DEBUG, where framework chatter goes;
  `ShortNames` writes the project's loggers by their last name (`s3_sync:`, `training:`).
"""

from __future__ import annotations

import logging
import os
import sys

DISTRIBUTION = "sagemaker-tf-object-detection"
CONSOLE_PREFIX = "tfod-"
LOG_LEVEL_ENV = "TFOD_LOG_LEVEL"
LOG_LEVELS = {"info": logging.INFO, "debug": logging.DEBUG}

# Import name -> (pip package, extra that installs it). tests/test_packaging.py checks each
# against pyproject.toml's extras.
OPTIONAL_MODULES: dict[str, tuple[str, str]] = {
    "ai_edge_litert": ("ai-edge-litert", "pi"),
    "cv2": ("opencv-python-headless", "pi"),
    "pycocotools": ("pycocotools", "pi"),
    "matplotlib": ("matplotlib", "host"),
    "boto3": ("boto3", "host"),
    "botocore": ("boto3", "host"),
    "tensorflow": ("tensorflow", "train"),
    "official": ("tf-models-official", "train"),
    "orbit": ("tf-models-official", "train"),
    "tf_keras": ("tf-models-official", "train"),
    "yaml": ("pyyaml", "train"),
}


def prog_name(package: str) -> str:
    """How the running command was started: `tfod-edge`, or `python -m edge` for `package`
    "edge" (also the fallback, e.g. when `main()` is called from Python)."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module_runs = (f"{package}.__main__", f"sagemaker_tfod.{package}.__main__")
    if spec is not None and spec.name in module_runs:
        return f"python -m {spec.name.removesuffix('.__main__')}"
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if invoked.startswith(CONSOLE_PREFIX):
        return invoked
    return f"python -m {package}"


def missing_extra_message(error: ModuleNotFoundError, command: str) -> str | None:
    """One line for an optional package that is not installed, or None if `error` is another
    kind of import failure (then it is a bug and its traceback should be seen)."""
    top = (error.name or "").split(".")[0]
    if top not in OPTIONAL_MODULES:
        return None
    package, extra = OPTIONAL_MODULES[top]
    return (
        f"{command} needs {package}, which is not installed; install the '{extra}' extra: "
        f"pip install '{DISTRIBUTION}[{extra}]' (or pip install {package})"
    )


def log_level(verbose: bool = False, environ: dict[str, str] | None = None) -> int:
    """DEBUG with --verbose or TFOD_LOG_LEVEL=debug, else INFO (an unknown value is INFO)."""
    if verbose:
        return logging.DEBUG
    value = (os.environ if environ is None else environ).get(LOG_LEVEL_ENV, "")
    return LOG_LEVELS.get(value.strip().lower(), logging.INFO)


class ShortNames(logging.Formatter):
    """`%(short_name)s`: `training` for `sagemaker_tfod.container.training`; others in full."""

    def format(self, record: logging.LogRecord) -> str:
        name = record.name
        record.short_name = name.rsplit(".", 1)[-1] if name.startswith("sagemaker_tfod.") else name
        return super().format(record)
