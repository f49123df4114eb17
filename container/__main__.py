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

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.hyperparameters import describe
from sagemaker_tfod.container.sagemaker_env import BASE_DIR_ENV, DEFAULT_BASE_DIR, SageMakerEnv
from sagemaker_tfod.data_prep.files import atomic_write_text

logger = logging.getLogger("sagemaker_tfod.container")

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2


def _epilog() -> str:
    from sagemaker_tfod.container.presets import PRESETS  # imports TensorFlow

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


def is_orbit_progress(record: logging.LogRecord) -> bool:
    """Orbit's per-loop `train | step: ...` / `eval | step: ...` messages (logged via absl):
    the `metric` and `progress` lines of container.training replace them."""
    path = record.pathname.replace("\\", "/")
    if record.levelno != logging.INFO or not path.endswith("orbit/controller.py"):
        return False
    return record.getMessage().lstrip().startswith(("train | step:", "eval | step:"))


def configure_logging() -> None:
    """Timestamped lines on stdout (SageMaker's log stream), each message once, and one
    progress line per interval.

    Orbit prints each message and also logs it through absl; `training.orbit_prints_dropped`
    drops the printed copy and this filter the per-loop progress dumps.
    """
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    logging.getLogger("absl").addFilter(lambda record: not is_orbit_progress(record))
    # TensorFlow, imported with the presets before this runs, found no root handler and gave
    # its own logger a stderr handler: without this every TensorFlow message appears twice.
    tensorflow_logger = logging.getLogger("tensorflow")
    for handler in tensorflow_logger.handlers[:]:
        tensorflow_logger.removeHandler(handler)


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
        # Before the training parser, whose help imports TensorFlow: serve binds its port first.
        from sagemaker_tfod.container.serving.server import main as serve

        return serve(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m container",
        description="SageMaker training container for Model Garden RetinaNet object detection.",
        epilog=_epilog(),
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
    args = parser.parse_args(argv)
    configure_logging()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    env = SageMakerEnv.from_environ()
    logger.info("SageMaker base dir: %s", env.base_dir)
    if args.command == "train":
        return train(env)
    return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
