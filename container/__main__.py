"""`python -m container [train|serve|export]`: what the image runs. SageMaker passes `train`
(or nothing, which means the same) for training jobs and `serve` for endpoints and batch
transform (container/serving/); `export` writes a model folder from a checkpoint.

Exit codes of `train`: 0 done (also after a stop, whenever a usable model was written), 1 bad
input, a full disk, or a stop before a model could be written (message in output/failure),
2 internal error (traceback in the log, summary in output/failure).

The SIGTERM handler is installed before anything heavy is imported (TensorFlow takes
seconds to import): see `stopping.py`. Subcommands are the `COMMANDS` table: a new one adds
a row (name, help, a function adding its flags, a function running it).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import re
import sys
import traceback

from sagemaker_tfod.container import stopping
from sagemaker_tfod.container.stopping import GracefulStop
from sagemaker_tfod.data_prep.console import missing_extra_message, prog_name

logger = logging.getLogger("sagemaker_tfod.container")

EXIT_USER_ERROR = 1
EXIT_INTERNAL_ERROR = 2


def _epilog() -> str:
    # --help only: the presets import TensorFlow, whose start-up notes would bury the help.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from sagemaker_tfod.container.hyperparameters import describe
    from sagemaker_tfod.container.presets import PRESETS
    from sagemaker_tfod.container.sagemaker_env import BASE_DIR_ENV, DEFAULT_BASE_DIR

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
    """With `hyperparameter_help`, --help ends with the hyperparameter table, built only when
    asked for (it imports Model Garden, which takes seconds)."""

    def __init__(self, *args, hyperparameter_help: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hyperparameter_help = hyperparameter_help

    def format_help(self) -> str:
        if self.hyperparameter_help:
            self.epilog = _epilog()
        return super().format_help()


def write_failure(env, message: str) -> None:
    from sagemaker_tfod.container.failure import write_failure as write

    write(env, message)


def disk_full_message(error: BaseException) -> str | None:
    """The one-line failure for ENOSPC (an OSError, or a TensorFlow error saying so), else None."""
    seen = error
    while seen is not None:
        text = " ".join(str(seen).split())
        if (isinstance(seen, OSError) and seen.errno == errno.ENOSPC) or (
            "No space left on device" in text
        ):
            where = getattr(seen, "filename", None) or _written_path(text)
            return (
                f"no space left on the device while writing {where}; the job's disk is full: "
                "give it a larger volume (python -m launch train --volume-gb, VolumeSizeInGB) "
                "or keep fewer files (a smaller channel, a larger checkpoint_interval_steps); "
                "the files being written were removed, complete ones kept"
            )
        seen = seen.__cause__ or seen.__context__
    return None


def _written_path(text: str) -> str:
    """The file a TensorFlow error names, without its `{{function_node ...}}` noise."""
    text = re.sub(r"\{\{.*?\}\}\s*", "", text)
    path = re.search(r"(/[^\s;:]+)", text)
    return path.group(1) if path else text[:200]


def _configure_stop(env, stop: GracefulStop) -> None:
    """The stop settings from hyperparameters.json before TensorFlow is imported, so that a
    stop during the imports keeps them too (bad values are reported later, by the job)."""
    from sagemaker_tfod.container.hyperparameters import Hyperparameters, unquote_json_string

    defaults = Hyperparameters()
    try:
        raw = env.read_hyperparameters()
        grace = float(unquote_json_string(raw.get("stop_grace_seconds", "")) or "nan")
        margin = float(unquote_json_string(raw.get("stop_margin_seconds", "")) or "nan")
    except (ValueError, TypeError):
        return
    grace = grace if grace == grace else defaults.stop_grace_seconds  # nan: not given
    margin = margin if margin == margin else defaults.stop_margin_seconds
    if grace > 0 and 0 <= margin < grace:
        stop.configure(grace, margin)


def train(env, stop: GracefulStop | None = None) -> int:
    """Run the training job with failures mapped to output/failure and an exit code."""
    own_stop = stop is None
    if own_stop:
        stop = GracefulStop().install()
    from sagemaker_tfod.container.errors import UserError
    from sagemaker_tfod.container.failure import last_words, stopped_before_training

    _configure_stop(env, stop)
    stop.on_deadline(lambda: last_words(env, stopped_before_training(stop.flag.signal_name))())
    try:
        # Imported here so that a broken TensorFlow install still leaves output/failure.
        from sagemaker_tfod.container.job import run_train_job

        report = run_train_job(env, stop)
        stop.finished()
    except UserError as error:
        stop.finished()
        message = " ".join(str(error).split())
        logger.error("training failed: %s", message)
        write_failure(env, message)
        return EXIT_USER_ERROR
    except Exception as error:
        stop.finished()
        full = disk_full_message(error)
        if full is not None:
            from sagemaker_tfod.container.failure import remove_partial_writes

            remove_partial_writes(env)  # frees what the failed writes took
            logger.error("training failed: %s", full)
            write_failure(env, full)
            return EXIT_USER_ERROR
        logger.error("internal error:\n%s", traceback.format_exc())
        write_failure(
            env,
            f"internal error ({type(error).__name__}: {' '.join(str(error).split())[:500]}); "
            "this is a bug in the training container, not in your data: the full traceback "
            "is in the job's log; please report it with the log attached.",
        )
        return EXIT_INTERNAL_ERROR
    finally:
        if own_stop:
            stop.uninstall()
    evaluated = report.get("eval")
    if evaluated:
        overall = evaluated["overall"]
        logger.info(
            "done at step %d: AP=%.4f AP50=%.4f", report["step"], overall["AP"], overall["AP50"]
        )
    else:
        logger.info("done at step %d (%s)", report["step"], report["note"])
    return 0


# ------------------------------------------------------------------ subcommands


def _add_train_arguments(_parser: argparse.ArgumentParser) -> None:
    """`train` takes no flags: SageMaker's files configure it (see --help)."""


def _run_train(_args: argparse.Namespace, stop: GracefulStop) -> int:
    from sagemaker_tfod.container.sagemaker_env import SageMakerEnv

    env = SageMakerEnv.from_environ()
    logger.info("SageMaker base dir: %s", env.base_dir)
    return train(env, stop)


def _add_export_arguments(parser: argparse.ArgumentParser) -> None:
    from sagemaker_tfod.container.export_command import add_arguments

    add_arguments(parser)


def _run_export(args: argparse.Namespace, stop: GracefulStop) -> int:
    from sagemaker_tfod.container.export_command import run

    stop.uninstall()  # a command at a prompt: Ctrl-C means stop now (nothing half-written stays)
    return run(args)


# name -> (help, add its arguments, run it with the parsed arguments and the stop handler)
COMMANDS = {
    "train": (
        "run the SageMaker training job (the default; SageMaker passes it)",
        _add_train_arguments,
        _run_train,
    ),
    "export": (
        "write SavedModel, frozen graph and TFLite files from a checkpoint and a channel",
        _add_export_arguments,
        _run_export,
    ),
}


def _verbose_flag(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default,
        help="debug logging: TensorFlow's and Model Garden's own messages too (as the "
        "hyperparameter log_level=debug or TFOD_LOG_LEVEL=debug)",
    )


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog_name("container"),
        description="SageMaker training container for Model Garden RetinaNet object detection.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        hyperparameter_help=True,
    )
    _verbose_flag(parser, default=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, add_arguments, run) in COMMANDS.items():
        command = commands.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            hyperparameter_help=name == "train",
        )
        # SUPPRESS: `-v` before the command keeps its value when the command has no `-v`.
        _verbose_flag(command, default=argparse.SUPPRESS)
        add_arguments(command)
        command.set_defaults(run=run)
    # Listed for --help only: `serve` is dispatched before this parser (see main).
    commands.add_parser("serve", help=SERVE_HELP, add_help=False)
    return parser


SERVE_HELP = "answer SageMaker endpoints and batch transform (`serve --help` lists its settings)"


def configure_logging(verbose: bool) -> None:
    """The log level from --verbose, else the hyperparameter log_level, else TFOD_LOG_LEVEL
    (container/logs.py); set before TensorFlow is imported, so its chatter is filtered too."""
    from sagemaker_tfod.container import logs
    from sagemaker_tfod.container.sagemaker_env import ConfigFileError, SageMakerEnv

    env = SageMakerEnv.from_environ()
    try:
        raw_hyperparameters = env.read_hyperparameters()
    except ConfigFileError:  # reported by the job, with the failure file
        raw_hyperparameters = None
    level, source = logs.resolve_level(raw_hyperparameters, os.environ)
    if verbose:
        level, source = logging.DEBUG, "--verbose"
    logs.configure_logging(level, native=True)
    logger.info(
        "log level %s (%s)%s",
        logging.getLevelName(level).lower(),
        source,
        "" if level <= logging.DEBUG else "; log_level=debug shows TensorFlow's own messages",
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["serve"]:
        # First of all: the server binds its port at once and handles its own signals.
        from sagemaker_tfod.container.serving.server import main as serve

        return serve(argv[1:])
    stop = GracefulStop().install()  # first: a SIGTERM during the imports below is a stop
    try:
        if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
            argv = ["train", *argv]  # SageMaker SDK local mode passes nothing
        try:
            args = make_parser().parse_args(argv)
        except ModuleNotFoundError as error:  # --help needs TensorFlow: the 'train' extra
            message = missing_extra_message(error, prog_name("container"))
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            return EXIT_USER_ERROR
        configure_logging(args.verbose)
        code = args.run(args, stop)
    finally:
        stop.uninstall()
    if stop.flag.is_set():
        # After a stop every output is closed and in place; the interpreter's own shutdown
        # (TensorFlow's teardown) measured 11 s on a loaded machine, past the deadline.
        stopping.exit_now(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
