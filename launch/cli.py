"""`python -m launch upload|train|status|logs|stop|download|local|push`: the argument parser.

Thin shell: one small function per subcommand's parser, and `main`, which runs the command
(launch.commands) and turns every user-fixable problem (settings, AWS errors) into one
`error:` line and a non-zero exit code (2; 1 when a training job itself failed or stopped).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sagemaker_tfod.launch import s3_sync, settings
from sagemaker_tfod.launch.commands import COMMANDS, TRAIN_SETTINGS
from sagemaker_tfod.launch.errors import LaunchError

EXIT_INTERRUPTED = 130
DEFAULT_POLL_SECONDS = 15.0

Subparsers = argparse._SubParsersAction  # argparse has no public name for it


def _add_setting(parser: argparse.ArgumentParser, name: str) -> None:
    """A flag for a setting: its help shows the default and the environment variable."""
    spec = settings.SPECS[name]
    default = "" if spec.default is None else f" (default: {spec.default})"
    help_text = f"{spec.help}{default}; env {spec.env}"
    if spec.kind is bool:
        parser.add_argument(
            spec.flag,
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_text,
        )
    else:
        parser.add_argument(
            spec.flag, dest=name, type=spec.kind, default=None, metavar=name.upper(), help=help_text
        )


def _common() -> argparse.ArgumentParser:
    """Flags every command takes: the settings file, the region, verbosity."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"settings file (default: ./{settings.DEFAULT_CONFIG_FILE} when present)",
    )
    _add_setting(common, "region")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def _job_name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "job_name", help="training job name, as train printed it (e.g. tf-od-20261121-113005)"
    )


def _poll_seconds_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--poll-seconds",
        type=float,
        default=DEFAULT_POLL_SECONDS,
        help=f"seconds between {what} (%(default)s)",
    )


def _add_upload(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    upload = commands.add_parser(
        "upload",
        parents=[common],
        help="upload a channel folder to S3 (parallel, skips unchanged files, resumes)",
        description="Upload every file of CHANNEL_DIR under S3_URI. Files whose size and "
        "checksum (S3 ETag) already match are skipped; unfinished multipart uploads resume.",
    )
    upload.add_argument("channel_dir", type=Path, help="channel folder built by data_prep")
    upload.add_argument("s3_uri", help="destination, s3://bucket/prefix")
    upload.add_argument(
        "--workers",
        type=int,
        default=s3_sync.DEFAULT_WORKERS,
        help="parallel requests (%(default)s)",
    )
    upload.add_argument(
        "--part-size-mb",
        type=int,
        default=s3_sync.DEFAULT_PART_SIZE // s3_sync.MIB,
        help="multipart part size in MiB, 5 to 5120 (%(default)s, as the AWS CLI); grows for "
        "files above 10,000 parts",
    )
    upload.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_train(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    train = commands.add_parser(
        "train",
        parents=[common],
        help="create a SageMaker training job (spot, checkpoints, metrics, TensorBoard)",
        description="Create a training job from the settings. --dry-run prints the exact "
        "CreateTrainingJob request as JSON and sends nothing.",
    )
    for name in TRAIN_SETTINGS:
        _add_setting(train, name)
    train.add_argument(
        "--hp", action="append", metavar="KEY=VALUE", help="hyperparameter (repeatable)"
    )
    train.add_argument("--tag", action="append", metavar="KEY=VALUE", help="job tag (repeatable)")
    train.add_argument("--dry-run", action="store_true", help="print the request, send nothing")
    train.add_argument(
        "--wait", action="store_true", help="stream status and CloudWatch logs until the job ends"
    )
    _poll_seconds_argument(train, "status polls with --wait")


def _add_status(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    status = commands.add_parser(
        "status",
        parents=[common],
        help="print a job's status as JSON",
        description="Print a job's status, reason, artifact, checkpoint URI and final metrics.",
    )
    _job_name_argument(status)


def _add_logs(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    logs_cmd = commands.add_parser(
        "logs",
        parents=[common],
        help="print a job's CloudWatch log lines",
        description="Print the job's log lines; --follow keeps streaming until the job ends.",
    )
    _job_name_argument(logs_cmd)
    logs_cmd.add_argument("--follow", action="store_true", help="stream until the job ends")
    _poll_seconds_argument(logs_cmd, "status and log polls with --follow")


def _add_stop(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    stop = commands.add_parser(
        "stop",
        parents=[common],
        help="stop a running job (it saves a checkpoint and exports)",
        description="Stop a training job; SageMaker sends SIGTERM and the container saves.",
    )
    _job_name_argument(stop)


def _add_download(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    download = commands.add_parser(
        "download",
        parents=[common],
        help="fetch and unpack a job's model.tar.gz for edge",
        description="Download SOURCE's model.tar.gz and unpack it into DESTINATION.",
    )
    download.add_argument(
        "source", help="training job name (its model artifact), or s3://.../model.tar.gz"
    )
    download.add_argument("destination", type=Path, help="folder to unpack into")
    download.add_argument("--force", action="store_true", help="replace a non-empty DESTINATION")


def _add_local(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    local_cmd = commands.add_parser(
        "local",
        parents=[common],
        help="run the container's training locally with the same hyperparameters",
        description="Build a local /opt/ml tree (hyperparameters from --hp and launch.toml, as "
        "train sends them) and run `python -m container train` on it. With --instance-count N "
        "(N > 1), one tree per host under BASE_DIR/algo-K and one process per host, training "
        "together over loopback exactly as N SageMaker instances would.",
    )
    local_cmd.add_argument(
        "channel_dir", type=Path, help="local training channel folder (what upload would send)"
    )
    local_cmd.add_argument(
        "--base-dir",
        type=Path,
        default=Path("local_run"),
        help="the /opt/ml stand-in (%(default)s)",
    )
    local_cmd.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="optional local 'checkpoint' channel"
    )
    local_cmd.add_argument(
        "--hp", action="append", metavar="KEY=VALUE", help="hyperparameter (repeatable)"
    )
    _add_setting(local_cmd, "instance_count")
    local_cmd.add_argument("--dry-run", action="store_true", help="print the tree, do not run")
    local_cmd.add_argument(
        "--prepare-only", action="store_true", help="write the tree, do not run (for docker run)"
    )
    local_cmd.add_argument(
        "--copy-channels",
        action="store_true",
        help="copy channel folders instead of linking them (a tree mounted into a container)",
    )


def _add_push(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    push = commands.add_parser(
        "push",
        parents=[common],
        help="push a local image to ECR (creates the repository, logs Docker in)",
        description="Create the ECR repository if missing, log Docker in with a token from "
        "boto3 (password on stdin), tag and push LOCAL_IMAGE; prints the image URI.",
    )
    push.add_argument("local_image", help="local image, e.g. tf-object-detection:latest")
    _add_setting(push, "repository")
    push.add_argument("--tag", default="latest", help="remote tag (%(default)s)")
    push.add_argument("--docker", default="docker", help="docker client (%(default)s)")


SUBPARSERS: tuple[Callable[[Subparsers, argparse.ArgumentParser], None], ...] = (
    _add_upload,
    _add_train,
    _add_status,
    _add_logs,
    _add_stop,
    _add_download,
    _add_local,
    _add_push,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launch",
        description="Ship the training image and data to AWS and run SageMaker training jobs. "
        "Settings: flag > LAUNCH_<NAME> environment variable > launch.toml > default. "
        "Credentials come from boto3's chain (see aws_credentials/README.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common()
    for add in SUBPARSERS:
        add(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # botocore's own INFO chatter (credential source) is noise here
        logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except LaunchError as error:
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
