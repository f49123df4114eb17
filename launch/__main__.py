"""`python -m launch upload|train|status|logs|stop|download|local|push`.

Thin shell: parse flags, resolve settings once, call the module that does the work, print its
result. Every user-fixable problem (settings, AWS errors) is one `error:` line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from launch import artifacts, ecr, local, logs, s3_sync, settings, training_job
from launch.errors import LaunchError, aws_action

log = logging.getLogger("launch")

EXIT_USER_ERROR = 2
EXIT_JOB_FAILED = 1


# ---- AWS clients ------------------------------------------------------------------------


def make_client(service: str, region: str | None, pool: int = 10) -> Any:
    """A boto3 client from boto3's own credential chain; AWS_ENDPOINT_URL is honoured by boto3."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        max_pool_connections=pool,
        user_agent_extra="tf-od-launch",
    )
    with aws_action(f"creating the {service} client"):
        return boto3.session.Session(region_name=region).client(service, config=config)


# ---- argument parsing -------------------------------------------------------------------


def _add_setting(parser: argparse.ArgumentParser, name: str) -> None:
    spec = settings.SPECS[name]
    default = "" if spec.default is None else f" (default: {spec.default})"
    env_note = f"; env {spec.env}"
    if spec.kind is bool:
        parser.add_argument(
            spec.flag,
            dest=name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{spec.help}{default}{env_note}",
        )
    else:
        parser.add_argument(
            spec.flag,
            dest=name,
            type=spec.kind,
            default=None,
            metavar=name.upper(),
            help=f"{spec.help}{default}{env_note}",
        )


def _common() -> argparse.ArgumentParser:
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


TRAIN_SETTINGS = (
    "role",
    "image",
    "s3_prefix",
    "training_s3_uri",
    "output_s3_uri",
    "checkpoint_s3_uri",
    "init_checkpoint_s3_uri",
    "tensorboard_s3_uri",
    "instance_type",
    "instance_count",
    "volume_gb",
    "max_runtime",
    "spot",
    "max_wait",
    "job_name",
)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="python -m launch",
        description="Ship the training image and data to AWS and run SageMaker training jobs. "
        "Settings: flag > LAUNCH_<NAME> environment variable > launch.toml > default. "
        "Credentials come from boto3's chain (see aws_credentials/README.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        help="multipart part size in MiB, >= 5 (%(default)s, as the AWS CLI)",
    )
    upload.add_argument("--no-progress", action="store_true", help="no progress bar")

    train = commands.add_parser(
        "train",
        parents=[common],
        help="create a SageMaker training job (spot, checkpoints, metrics, TensorBoard)",
        description="Create a training job from the settings. --dry-run prints the exact "
        "CreateTrainingJob request as JSON and sends nothing.",
    )
    _add_job_settings(train)
    train.add_argument("--dry-run", action="store_true", help="print the request, send nothing")
    train.add_argument(
        "--wait", action="store_true", help="stream status and CloudWatch logs until the job ends"
    )
    train.add_argument(
        "--poll-seconds", type=float, default=15.0, help="status poll interval (%(default)s)"
    )

    status = commands.add_parser(
        "status", parents=[common], help="print a job's status as JSON", description="Job status."
    )
    status.add_argument("job_name")

    logs_cmd = commands.add_parser(
        "logs",
        parents=[common],
        help="print a job's CloudWatch log lines",
        description="Print the job's log lines; --follow keeps streaming until the job ends.",
    )
    logs_cmd.add_argument("job_name")
    logs_cmd.add_argument("--follow", action="store_true", help="stream until the job ends")
    logs_cmd.add_argument("--poll-seconds", type=float, default=15.0, help="(%(default)s)")

    stop = commands.add_parser(
        "stop",
        parents=[common],
        help="stop a running job (it saves a checkpoint and exports)",
        description="Stop a training job; SageMaker sends SIGTERM and the container saves.",
    )
    stop.add_argument("job_name")

    download = commands.add_parser(
        "download",
        parents=[common],
        help="fetch and unpack a job's model.tar.gz for edge",
        description="Download JOB's model.tar.gz (or an s3:// URI) and unpack it into DEST.",
    )
    download.add_argument("source", help="training job name, or s3://.../model.tar.gz")
    download.add_argument("destination", type=Path, help="folder to unpack into")
    download.add_argument("--force", action="store_true", help="replace a non-empty DEST")

    local_cmd = commands.add_parser(
        "local",
        parents=[common],
        help="run the container's training locally with the same hyperparameters",
        description="Build a local /opt/ml tree (hyperparameters from --hp and launch.toml, as "
        "train sends them) and run `python -m container train` on it.",
    )
    local_cmd.add_argument("channel_dir", type=Path, help="local training channel folder")
    local_cmd.add_argument(
        "--base-dir",
        type=Path,
        default=Path("local_run"),
        help="the /opt/ml stand-in (%(default)s)",
    )
    local_cmd.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="optional local 'checkpoint' channel"
    )
    local_cmd.add_argument("--hp", action="append", metavar="KEY=VALUE", help="hyperparameter")
    local_cmd.add_argument("--dry-run", action="store_true", help="print the tree, do not run")
    local_cmd.add_argument(
        "--prepare-only", action="store_true", help="write the tree, do not run (for docker run)"
    )
    local_cmd.add_argument(
        "--copy-channels",
        action="store_true",
        help="copy channel folders instead of linking them (a tree mounted into a container)",
    )

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
    return parser


def _add_job_settings(parser: argparse.ArgumentParser) -> None:
    for name in TRAIN_SETTINGS:
        _add_setting(parser, name)
    parser.add_argument(
        "--hp", action="append", metavar="KEY=VALUE", help="hyperparameter (repeatable)"
    )
    parser.add_argument("--tag", action="append", metavar="KEY=VALUE", help="job tag (repeatable)")


# ---- commands ---------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return settings.load_config_file(args.config)


def _region(args: argparse.Namespace, config: dict[str, Any]) -> str | None:
    region = settings.resolve(["region"], vars(args), os.environ, config)["region"]
    # AWS_REGION is what many tools and containers set; boto3 itself reads AWS_DEFAULT_REGION.
    return region or os.environ.get("AWS_REGION") or None


def training_spec(args: argparse.Namespace, config: dict[str, Any], now: datetime) -> Any:
    """Settings -> TrainingJobSpec: derived S3 locations filled in from s3_prefix."""
    values = settings.resolve(TRAIN_SETTINGS, vars(args), os.environ, config)
    required = ["role", "image"]
    if not values["s3_prefix"]:
        required += [name for name in ("training_s3_uri", "output_s3_uri") if not values[name]]
    settings.require(values, required)
    prefix = values["s3_prefix"]
    job_name = values["job_name"] or training_job.default_job_name(now)

    def derived(name: str, *parts: str) -> str | None:
        if values[name]:
            return values[name]
        return training_job.join_s3(prefix, *parts) if prefix else None

    hyperparameters = settings.merged_table(
        config, "hyperparameters", settings.parse_key_values(args.hp, "--hp")
    )
    tags = settings.merged_table(config, "tags", settings.parse_key_values(args.tag, "--tag"))
    checkpoint = derived("checkpoint_s3_uri", "checkpoints", job_name)
    if checkpoint is None:  # no prefix: keep checkpoints next to the output
        checkpoint = training_job.join_s3(values["output_s3_uri"], job_name, "checkpoints")
    return training_job.TrainingJobSpec(
        job_name=job_name,
        image_uri=values["image"],
        role_arn=values["role"],
        training_s3_uri=derived("training_s3_uri", "channel"),
        output_s3_uri=derived("output_s3_uri", "output"),
        checkpoint_s3_uri=checkpoint,
        init_checkpoint_s3_uri=values["init_checkpoint_s3_uri"],
        tensorboard_s3_uri=derived("tensorboard_s3_uri", "tensorboard", job_name),
        instance_type=values["instance_type"],
        instance_count=values["instance_count"],
        volume_gb=values["volume_gb"],
        max_runtime_s=values["max_runtime"],
        spot=values["spot"],
        max_wait_s=values["max_wait"],
        hyperparameters=training_job.stringify_hyperparameters(hyperparameters),
        tags={str(key): str(value) for key, value in tags.items()},
    )


def _metric_definitions() -> list[dict[str, str]]:
    from container.metrics import METRIC_DEFINITIONS

    return METRIC_DEFINITIONS


def cmd_upload(args: argparse.Namespace) -> int:
    region = _region(args, _config(args))
    s3 = make_client("s3", region, pool=args.workers + 4)
    report = s3_sync.upload_channel(
        s3,
        args.channel_dir,
        args.s3_uri,
        part_size=args.part_size_mb * s3_sync.MIB,
        workers=args.workers,
        progress=not args.no_progress,
    )
    log.info("%s", report.summary())
    print(
        json.dumps(
            {
                "destination": args.s3_uri,
                "uploaded": len(report.uploaded),
                "skipped": len(report.skipped),
                "resumed_parts": report.resumed_parts,
                "bytes_sent": report.bytes_sent,
                "seconds": round(report.seconds, 3),
            }
        )
    )
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = _config(args)
    spec = training_spec(args, config, datetime.now(UTC))
    request = training_job.build_create_training_job_request(spec, _metric_definitions())
    if args.dry_run:
        print(json.dumps(request, indent=2))
        return 0
    region = _region(args, config)
    sagemaker = make_client("sagemaker", region)
    with aws_action(f"creating training job '{spec.job_name}'"):
        response = sagemaker.create_training_job(**request)
    log.info("created %s", response.get("TrainingJobArn", spec.job_name))
    print(
        json.dumps(
            {"TrainingJobName": spec.job_name, "TrainingJobArn": response.get("TrainingJobArn")}
        )
    )
    if not args.wait:
        return 0
    description = logs.follow_job(
        sagemaker, make_client("logs", region), spec.job_name, sys.stdout, args.poll_seconds
    )
    return _exit_for(description)


def _exit_for(description: dict[str, Any]) -> int:
    status = description.get("TrainingJobStatus")
    if status == "Failed":
        reason = " ".join(str(description.get("FailureReason", "no reason given")).split())
        print(f"error: job {description.get('TrainingJobName')} failed: {reason}", file=sys.stderr)
        return EXIT_JOB_FAILED
    return 0


def job_summary(description: dict[str, Any]) -> dict[str, Any]:
    """The fields a person checks, JSON-serialisable (pure)."""
    metrics = {
        item["MetricName"]: item["Value"] for item in description.get("FinalMetricDataList", [])
    }
    return {
        "TrainingJobName": description.get("TrainingJobName"),
        "TrainingJobStatus": description.get("TrainingJobStatus"),
        "SecondaryStatus": description.get("SecondaryStatus"),
        "FailureReason": description.get("FailureReason"),
        "ModelArtifacts": description.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "EnableManagedSpotTraining": description.get("EnableManagedSpotTraining"),
        "CheckpointS3Uri": description.get("CheckpointConfig", {}).get("S3Uri"),
        "TrainingTimeInSeconds": description.get("TrainingTimeInSeconds"),
        "BillableTimeInSeconds": description.get("BillableTimeInSeconds"),
        "FinalMetrics": metrics,
        "StatusLine": logs.status_line(description),
    }


def cmd_status(args: argparse.Namespace) -> int:
    sagemaker = make_client("sagemaker", _region(args, _config(args)))
    description = logs.describe_job(sagemaker, args.job_name)
    print(json.dumps(job_summary(description), indent=2, default=str))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    region = _region(args, _config(args))
    if args.follow:
        description = logs.follow_job(
            make_client("sagemaker", region),
            make_client("logs", region),
            args.job_name,
            sys.stdout,
            args.poll_seconds,
        )
        return _exit_for(description)
    for line in logs.LogFollower(make_client("logs", region), args.job_name).poll():
        print(line.message)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    sagemaker = make_client("sagemaker", _region(args, _config(args)))
    with aws_action(f"stopping training job '{args.job_name}'"):
        sagemaker.stop_training_job(TrainingJobName=args.job_name)
    print(json.dumps({"TrainingJobName": args.job_name, "stop": "requested"}))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    region = _region(args, _config(args))
    source = args.source
    if not source.startswith("s3://"):
        description = logs.describe_job(make_client("sagemaker", region), source)
        source = artifacts.model_artifact_uri(description)
    folder = artifacts.download_model(
        make_client("s3", region), source, args.destination, args.force
    )
    print(json.dumps({"source": source, "destination": str(folder)}))
    return 0


def cmd_local(args: argparse.Namespace) -> int:
    config = _config(args)
    hyperparameters = settings.merged_table(
        config, "hyperparameters", settings.parse_key_values(args.hp, "--hp")
    )
    tree = local.plan_local_tree(
        training_job.stringify_hyperparameters(hyperparameters),
        args.channel_dir,
        args.checkpoint_dir,
    )
    if args.dry_run:
        print(
            json.dumps(
                {"files": tree.files, "links": {k: str(v) for k, v in tree.links.items()}}, indent=2
            )
        )
        return 0
    local.write_local_tree(args.base_dir, tree, copy_channels=args.copy_channels)
    if args.prepare_only:
        print(json.dumps({"base_dir": str(args.base_dir)}))
        return 0
    code = local.run_container_training(args.base_dir)
    if code != 0:
        raise LaunchError(
            f"local training failed (exit {code}): {local.failure_reason(args.base_dir)}"
        )
    print(json.dumps({"model_dir": str(args.base_dir / "model")}))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    config = _config(args)
    region = _region(args, config)
    repository = settings.resolve(["repository"], vars(args), os.environ, config, ["repository"])[
        "repository"
    ]
    client = make_client("ecr", region)
    uri = ecr.ensure_repository(client, repository)
    remote = f"{uri}:{args.tag}"
    ecr.run_push(args.docker, ecr.docker_login(client), args.local_image, remote)
    print(remote)
    return 0


COMMANDS = {
    "upload": cmd_upload,
    "train": cmd_train,
    "status": cmd_status,
    "logs": cmd_logs,
    "stop": cmd_stop,
    "download": cmd_download,
    "local": cmd_local,
    "push": cmd_push,
}


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
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
