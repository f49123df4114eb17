"""`python -m launch upload|train|status|logs|stop|download|local|push|pretrained|deploy|
invoke|endpoint|transform|serve-local`: the argument parser.

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

from sagemaker_tfod.data_prep.console import ShortNames, log_level, prog_name
from sagemaker_tfod.launch import hosting_commands, hosting_requests, s3_sync, settings
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
    common.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (also TFOD_LOG_LEVEL=debug)"
    )
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
    _pretrained_argument(train, "uploaded (once) as the checkpoint channel")


def _pretrained_argument(parser: argparse.ArgumentParser, how: str) -> None:
    parser.add_argument(
        "--pretrained",
        metavar="NAME",
        default=None,
        help=f"start from pretrained weights (python -m launch pretrained list): fetched, {how}; "
        "sets the model preset and init_checkpoint_modules",
    )
    _add_setting(parser, "pretrained_cache")
    _add_setting(parser, "pretrained_mirror")


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
    _pretrained_argument(local_cmd, "used as the checkpoint channel")
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


def _source_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        help="a completed training job's name (its image, model.tar.gz and role), or the "
        "s3:// URI of a model.tar.gz (then --image and --role are needed)",
    )


def _add_deploy(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    deploy = commands.add_parser(
        "deploy",
        parents=[common],
        help="serve a trained model on a SageMaker real-time (or serverless) endpoint",
        description="CreateModel (the training image, the job's model.tar.gz, the role), "
        "CreateEndpointConfig (instances, or serverless with --serverless-memory-mb), "
        "CreateEndpoint, then wait for InService. --dry-run prints the requests and creates "
        "nothing (a job name is still described, to read its artifact).",
    )
    _source_argument(deploy)
    for name in hosting_commands.DEPLOY_SETTINGS:
        _add_setting(deploy, name)
    deploy.add_argument(
        "--autoscale",
        metavar="MIN-MAX",
        help="keep MIN to MAX instances with Application Auto Scaling, target tracking on "
        "invocations per instance (--autoscale-target)",
    )
    deploy.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag (repeatable)")
    deploy.add_argument("--dry-run", action="store_true", help="print the requests, create none")
    deploy.add_argument("--no-wait", action="store_true", help="do not wait for InService")
    _poll_seconds_argument(deploy, "status polls")


def _add_invoke(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    from sagemaker_tfod.edge.arguments import score_threshold

    invoke = commands.add_parser(
        "invoke",
        parents=[common],
        help="send images to an endpoint and print (or draw) its detections",
        description="One InvokeEndpoint per image (folders are searched); prints one JSON line "
        "per image. --draw writes the images with their boxes, drawn by the Pi side's code.",
    )
    invoke.add_argument("endpoint", help="endpoint name")
    invoke.add_argument("images", nargs="+", help="image files or folders")
    invoke.add_argument("--draw", type=Path, metavar="OUT_DIR", help="write annotated images")
    invoke.add_argument(
        "--score-threshold",
        type=score_threshold,
        default=0.5,
        help="lowest score returned and drawn (%(default)s)",
    )
    invoke.add_argument("--max-detections", type=int, help="most detections per image")


def _add_endpoint(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    endpoint = commands.add_parser(
        "endpoint",
        help="list endpoints, or delete one with its config and model",
        description="`endpoint list` prints every endpoint's status; `endpoint delete NAME` "
        "deletes the endpoint, its endpoint config and its models (and its auto scaling).",
    )
    actions = endpoint.add_subparsers(dest="endpoint_command", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="print the endpoints and their status")
    delete = actions.add_parser(
        "delete", parents=[common], help="delete an endpoint, its config and its models"
    )
    delete.add_argument("endpoint", help="endpoint name")


def _add_transform(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    transform = commands.add_parser(
        "transform",
        parents=[common],
        help="run a batch transform job over a folder of images in S3",
        description="CreateModel and CreateTransformJob: every object under IMAGES_S3_URI is "
        "sent to the container, its detections written to OUTPUT_S3_URI/<key>.out as JSON.",
    )
    _source_argument(transform)
    transform.add_argument("images_s3_uri", help="s3://bucket/prefix of the images")
    transform.add_argument("output_s3_uri", help="s3://bucket/prefix for the results")
    for name in hosting_commands.TRANSFORM_SETTINGS:
        _add_setting(transform, name)
    transform.add_argument(
        "--content-type",
        choices=hosting_requests.TRANSFORM_CONTENT_TYPES,
        default=hosting_requests.IMAGE_CONTENT_TYPE,
        help="one image per object (%(default)s) or JSON Lines of base64 images, one per line",
    )
    transform.add_argument("--tag", action="append", metavar="KEY=VALUE", help="tag (repeatable)")
    transform.add_argument("--dry-run", action="store_true", help="print the requests only")
    transform.add_argument("--wait", action="store_true", help="wait until the job ends")
    _poll_seconds_argument(transform, "status polls with --wait")


def _add_serve_local(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve-local",
        parents=[common],
        help="run the container's server on this machine (for curl and tests)",
        description="The same server the image's `serve` runs (python -m container serve), on "
        "MODEL: a model folder (`download` unpacks one) or a model.tar.gz. Ctrl-C stops it.",
    )
    serve.add_argument("model", type=Path, help="model folder or model.tar.gz")
    serve.add_argument("--port", type=int, default=8080, help="port (%(default)s)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (%(default)s)")
    serve.add_argument("--workers", type=int, help="worker processes (default: CPU count)")
    _add_setting(serve, "serve_export")


def _add_pretrained(commands: Subparsers, common: argparse.ArgumentParser) -> None:
    pretrained = commands.add_parser(
        "pretrained",
        help="list and fetch published pretrained weights (Model Garden, Keras)",
        description="The catalogue of published weights and the preset each fits; `fetch` "
        "downloads one over HTTPS to the local cache (progress, resume, size and checksum "
        "checks). `train --pretrained NAME` then uploads it as the checkpoint channel.",
    )
    actions = pretrained.add_subparsers(dest="pretrained_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        parents=[common],
        help="name, preset, what it initialises, published AP, size, source URL",
        description="Print the catalogue as JSON lines (or a table with --table).",
    )
    listing.add_argument("--table", action="store_true", help="a table instead of JSON lines")
    fetch = actions.add_parser(
        "fetch",
        parents=[common],
        help="download NAME into the cache (resumes; checks size and checksums)",
        description="Download every file of NAME into PRETRAINED_CACHE/NAME/; an interrupted "
        "download resumes where it stopped; a corrupt file is deleted and refused.",
    )
    fetch.add_argument("name", help="catalogue name (python -m launch pretrained list)")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    for sub in (listing, fetch):
        _add_setting(sub, "pretrained_cache")
        _add_setting(sub, "pretrained_mirror")


SUBPARSERS: tuple[Callable[[Subparsers, argparse.ArgumentParser], None], ...] = (
    _add_upload,
    _add_train,
    _add_status,
    _add_logs,
    _add_stop,
    _add_download,
    _add_local,
    _add_push,
    _add_pretrained,
    _add_deploy,
    _add_invoke,
    _add_endpoint,
    _add_transform,
    _add_serve_local,
)
ALL_COMMANDS = {**COMMANDS, **hosting_commands.COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog_name("launch"),
        description="Ship the training image and data to AWS, run SageMaker training jobs, "
        "and serve the trained model (endpoints, batch transform). "
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
    level = log_level(args.verbose)
    handler = logging.StreamHandler()
    handler.setFormatter(ShortNames("%(asctime)s %(levelname)s %(short_name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    if level > logging.DEBUG:  # botocore's own INFO chatter (credential source) is noise here
        logging.getLogger("botocore").setLevel(logging.WARNING)
    try:
        return ALL_COMMANDS[args.command](args)
    except LaunchError as error:
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
