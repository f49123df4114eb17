"""`python -m container [train|serve]`: what the image runs (SageMaker passes `train`, or
nothing, for training jobs, and `serve` for endpoints and batch transform: container/serving/).

Exit codes: 0 done (also after a SIGTERM during training: the model is exported), 1 bad input
or a stop before training started (message in output/failure), 2 internal error (traceback in
the log, summary in output/failure).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from sagemaker_tfod.container import logs
from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.hyperparameters import describe
from sagemaker_tfod.container.sagemaker_env import (
    BASE_DIR_ENV,
    DEFAULT_BASE_DIR,
    ConfigFileError,
    SageMakerEnv,
)
from sagemaker_tfod.data_prep.console import missing_extra_message, prog_name
from sagemaker_tfod.data_prep.files import atomic_write_text

logger = logging.getLogger("sagemaker_tfod.container")

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2


def _epilog() -> str:
    # Imported here: the presets import TensorFlow, which must start after logging is set up.
    from sagemaker_tfod.container.presets import PRESETS

    rows = "\n".join(
        f"  {name:27} {kind:5} {default:34} {meaning}"
        for name, kind, default, meaning in describe()
    )
    presets = "\n".join(f"  {p.name:34} {p.description}" for p in PRESETS.values())
    return (
        f"hyperparameters (input/config/hyperparameters.json, all strings):\n{rows}\n\n"
        f"presets (hyperparameter `model`):\n{presets}\n\n"
        f"{BASE_DIR_ENV} moves the SageMaker tree (default {DEFAULT_BASE_DIR})."
    )


class _Parser(argparse.ArgumentParser):
    def format_help(self) -> str:
        # The table of presets imports TensorFlow: only for --help, so that a job's logging
        # is set up before TensorFlow starts.
        self.epilog = _epilog()
        return super().format_help()


def write_failure(env: SageMakerEnv, message: str) -> None:
    try:
        atomic_write_text(env.failure_file, message.strip() + "\n")
    except OSError:
        logger.exception("could not write %s", env.failure_file)


def train(env: SageMakerEnv) -> int:
    try:
        # Imported here so that a broken TensorFlow install still leaves output/failure.
        from sagemaker_tfod.container.job import run_train_job

        report = run_train_job(env)
    except UserError as error:
        message = " ".join(str(error).split())
        logger.error("training failed: %s", message)
        write_failure(env, message)
        return EXIT_USER_ERROR
    except Exception as error:
        logger.error("internal error:\n%s", traceback.format_exc())
        write_failure(
            env,
            f"internal error ({type(error).__name__}: {' '.join(str(error).split())[:500]}); "
            "this is a bug in the training container, not in your data: the full traceback "
            "is in the job's log; please report it with the log attached.",
        )
        return EXIT_INTERNAL_ERROR
    evaluated = report.get("eval")
    if evaluated:
        overall = evaluated["overall"]
        logger.info(
            "done at step %d: AP=%.4f AP50=%.4f", report["step"], overall["AP"], overall["AP50"]
        )
    else:
        logger.info("done at step %d (%s)", report["step"], report["note"])
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        # Before the training parser and its logging set-up: serve binds its port first.
        from sagemaker_tfod.container.serving.server import main as serve

        return serve(argv[1:])
    parser = _Parser(
        prog=prog_name("container"),
        description="SageMaker training container for Model Garden RetinaNet object detection.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        default="train",
        choices=["train", "serve"],
        help="what to run (SageMaker passes `train`, SDK local mode nothing, hosting `serve`; "
        "`serve --help` lists its settings): default train",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logging: TensorFlow's and Model Garden's own messages too (as the "
        "hyperparameter log_level=debug or TFOD_LOG_LEVEL=debug)",
    )
    try:
        args = parser.parse_args(argv)
    except ModuleNotFoundError as error:  # TensorFlow and Model Garden: the 'train' extra
        message = missing_extra_message(error, prog_name("container"))
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    env = SageMakerEnv.from_environ()
    try:
        raw_hyperparameters = env.read_hyperparameters()
    except ConfigFileError:  # reported by the job, with the failure file
        raw_hyperparameters = None
    level, source = logs.resolve_level(raw_hyperparameters, os.environ)
    if args.verbose:
        level, source = logging.DEBUG, "--verbose"
    logs.configure_logging(level, native=True)
    logger.info(
        "SageMaker base dir: %s; log level %s (%s)%s",
        env.base_dir,
        logging.getLevelName(level).lower(),
        source,
        "" if level <= logging.DEBUG else "; log_level=debug shows TensorFlow's own messages",
    )
    if args.command == "train":
        return train(env)
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
