"""The body of each `python -m launch` command: resolve settings once, call the module that
does the work, print its result. Every user-fixable problem raises LaunchError (one line).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sagemaker_tfod.launch import (
    artifacts,
    ecr,
    local,
    logs,
    pretrained,
    s3_sync,
    settings,
    training_job,
)
from sagemaker_tfod.launch.command_context import (
    make_client,
    read_config,
    resolve_region,
    resolve_settings,
)
from sagemaker_tfod.launch.errors import JobEndedError, LaunchError, aws_action
from sagemaker_tfod.launch.s3_uri import join_s3

log = logging.getLogger("sagemaker_tfod.launch")

# Every setting `train` resolves (flags, LAUNCH_* variables, launch.toml); cli adds their flags.
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


# ---- commands ---------------------------------------------------------------------------


def job_hyperparameters(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    """launch.toml's [hyperparameters] with --hp KEY=VALUE on top: for `train` and `local`."""
    return settings.merged_table(
        config, "hyperparameters", settings.parse_key_values(args.hp, "--hp")
    )


def training_spec(
    args: argparse.Namespace, config: dict[str, Any], now: datetime
) -> training_job.TrainingJobSpec:
    """Settings -> TrainingJobSpec: derived S3 locations filled in from s3_prefix."""
    values = resolve_settings(args, config, TRAIN_SETTINGS)
    required = ["role", "image"]
    if not values["s3_prefix"]:
        required += [name for name in ("training_s3_uri", "output_s3_uri") if not values[name]]
    settings.require(values, required, settings.config_file_name(args.config))
    prefix = values["s3_prefix"]
    job_name = values["job_name"] or training_job.default_job_name(now)

    def derived(name: str, *parts: str) -> str | None:
        if values[name]:
            return values[name]
        return join_s3(prefix, *parts) if prefix else None

    hyperparameters = job_hyperparameters(args, config)
    tags = settings.merged_table(config, "tags", settings.parse_key_values(args.tag, "--tag"))
    checkpoint = derived("checkpoint_s3_uri", "checkpoints", job_name)
    if checkpoint is None:  # no prefix: keep checkpoints next to the output
        checkpoint = join_s3(values["output_s3_uri"], job_name, "checkpoints")
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
        hyperparameters=hyperparameters,  # the request builder makes them strings
        tags=tags,
    )


def _metric_definitions() -> list[dict[str, str]]:
    from sagemaker_tfod.container.metrics import METRIC_DEFINITIONS

    return METRIC_DEFINITIONS


def cmd_upload(args: argparse.Namespace) -> int:
    region = resolve_region(args, read_config(args))
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
                "aborted_uploads": report.aborted_uploads,
                "bytes_sent": report.bytes_sent,
                "seconds": round(report.seconds, 3),
            }
        )
    )
    return 0


# ---- pretrained weights ------------------------------------------------------------------

PRETRAINED_SETTINGS = ("pretrained_cache", "pretrained_mirror")


def _pretrained_settings(
    args: argparse.Namespace, config: dict[str, Any]
) -> tuple[Path, str | None]:
    values = resolve_settings(args, config, PRETRAINED_SETTINGS)
    cache = Path(values["pretrained_cache"]) if values["pretrained_cache"] else None
    return cache or pretrained.default_cache_dir(), values["pretrained_mirror"]


def fetch_pretrained(
    args: argparse.Namespace, config: dict[str, Any], entry: pretrained.Pretrained
) -> pretrained.FetchReport:
    cache, mirror = _pretrained_settings(args, config)
    report = pretrained.fetch(
        entry, cache, mirror=mirror, progress=not getattr(args, "no_progress", False)
    )
    where = "already in the cache" if report.from_cache else "downloaded and checked"
    log.info("%s: %s (%s)", entry.name, where, report.folder)
    return report


def with_pretrained_channel(
    spec: training_job.TrainingJobSpec, entry: pretrained.Pretrained, s3_prefix: str | None
) -> training_job.TrainingJobSpec:
    """The spec with the entry as its checkpoint channel (S3_PREFIX/pretrained/NAME unless
    --init-checkpoint-s3-uri names the place) and its preset and modules (pure)."""
    uri = spec.init_checkpoint_s3_uri
    if not uri:
        if not s3_prefix:
            raise LaunchError(
                f"--pretrained {entry.name} needs an S3 place for the weights: set s3_prefix "
                "(they go to S3_PREFIX/pretrained/NAME) or --init-checkpoint-s3-uri"
            )
        uri = join_s3(s3_prefix, "pretrained", entry.name)
    return replace(
        spec,
        init_checkpoint_s3_uri=uri,
        hyperparameters=pretrained.with_pretrained(spec.hyperparameters, entry),
    )


def cmd_pretrained(args: argparse.Namespace) -> int:
    config = read_config(args)
    if args.pretrained_command == "list":
        rows = pretrained.catalogue_rows(_pretrained_settings(args, config)[0])
        if args.table:
            columns = ("name", "preset", "initialises", "published", "size", "source_url")
            print("\t".join(columns))
            for row in rows:
                print("\t".join(str(row[c]) for c in columns))
        else:
            for row in rows:
                print(json.dumps(row))
        return 0
    report = fetch_pretrained(args, config, pretrained.get(args.name))
    print(json.dumps(report.as_json()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = read_config(args)
    spec = training_spec(args, config, datetime.now(UTC))
    entry = pretrained.get(args.pretrained) if args.pretrained else None
    if entry is not None:
        s3_prefix = resolve_settings(args, config, ["s3_prefix"])["s3_prefix"]
        spec = with_pretrained_channel(spec, entry, s3_prefix)
    request = training_job.build_create_training_job_request(spec, _metric_definitions())
    if args.dry_run:
        print(json.dumps(request, indent=2))
        return 0
    region = resolve_region(args, config)
    if entry is not None and spec.init_checkpoint_s3_uri:
        folder = Path(fetch_pretrained(args, config, entry).folder)
        upload = s3_sync.upload_channel(
            make_client("s3", region, pool=s3_sync.DEFAULT_WORKERS + 4),
            folder,
            spec.init_checkpoint_s3_uri,
            progress=sys.stderr.isatty(),
        )
        log.info(
            "pretrained %s -> %s: %s", entry.name, spec.init_checkpoint_s3_uri, upload.summary()
        )
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
    check_job_outcome(description)
    return 0


def check_job_outcome(description: dict[str, Any]) -> None:
    """A job that ended Failed or Stopped is an error of its own (exit code 1), with its reason."""
    status = description.get("TrainingJobStatus")
    name = description.get("TrainingJobName")
    if status == "Failed":
        reason = " ".join(str(description.get("FailureReason", "no reason given")).split())
        raise JobEndedError(f"job {name} failed: {reason}")
    if status == "Stopped":
        checkpoints = description.get("CheckpointConfig", {}).get("S3Uri")
        resume = (
            f"; continue it with train --checkpoint-s3-uri {checkpoints}" if checkpoints else ""
        )
        raise JobEndedError(
            f"job {name} was stopped ({logs.status_line(description)}) before completing{resume}"
        )


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
    sagemaker = make_client("sagemaker", resolve_region(args, read_config(args)))
    description = logs.describe_job(sagemaker, args.job_name)
    print(json.dumps(job_summary(description), indent=2, default=str))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    region = resolve_region(args, read_config(args))
    if args.follow:
        description = logs.follow_job(
            make_client("sagemaker", region),
            make_client("logs", region),
            args.job_name,
            sys.stdout,
            args.poll_seconds,
        )
        check_job_outcome(description)
        return 0
    for line in logs.LogFollower(make_client("logs", region), args.job_name).poll():
        print(line.message)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    sagemaker = make_client("sagemaker", resolve_region(args, read_config(args)))
    with aws_action(f"stopping training job '{args.job_name}'"):
        sagemaker.stop_training_job(TrainingJobName=args.job_name)
    print(json.dumps({"TrainingJobName": args.job_name, "stop": "requested"}))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    region = resolve_region(args, read_config(args))
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
    config = read_config(args)
    values = job_hyperparameters(args, config)
    checkpoint_dir = args.checkpoint_dir
    if args.pretrained:
        if checkpoint_dir is not None:
            raise LaunchError("pass --pretrained or --checkpoint-dir, not both")
        entry = pretrained.get(args.pretrained)
        values = pretrained.with_pretrained(values, entry)
        if args.dry_run:  # where it will be; nothing is downloaded
            checkpoint_dir = _pretrained_settings(args, config)[0] / entry.name
        else:
            checkpoint_dir = Path(fetch_pretrained(args, config, entry).folder)
    # The same sources and the same conversion as the HyperParameters `train` sends.
    hyperparameters = training_job.request_hyperparameters(values)
    count = resolve_settings(args, config, ["instance_count"])["instance_count"]
    trees = local.plan_local_cluster(
        hyperparameters, args.channel_dir, checkpoint_dir, instance_count=count
    )
    base_dirs = {host: local.host_base_dir(args.base_dir, host, count) for host in trees}
    if args.dry_run:
        plans = {
            str(base_dirs[host]): {
                "files": tree.files,
                "links": {k: str(v) for k, v in tree.links.items()},
            }
            for host, tree in trees.items()
        }
        print(json.dumps(plans[str(args.base_dir)] if count == 1 else plans, indent=2))
        return 0
    for host, tree in trees.items():
        local.write_local_tree(base_dirs[host], tree, copy_channels=args.copy_channels)
    if args.prepare_only:
        print(json.dumps({"base_dir": str(args.base_dir)}))
        return 0
    if count == 1:
        codes = {local.LOCAL_HOST: local.run_container_training(args.base_dir)}
    else:
        codes = local.run_local_cluster(base_dirs)
    failed = {host: code for host, code in codes.items() if code != 0}
    if failed:
        reasons = {
            host: f"(exit {code}): {local.failure_reason(base_dirs[host])}"
            for host, code in failed.items()
        }
        if count == 1:
            raise LaunchError(f"local training failed {reasons[local.LOCAL_HOST]}")
        raise LaunchError(
            "local training failed on "
            + "; ".join(f"{host} {reason}" for host, reason in reasons.items())
        )
    print(json.dumps({"model_dir": str(base_dirs[local.LOCAL_HOST] / "model")}))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    config = read_config(args)
    region = resolve_region(args, config)
    repository = resolve_settings(args, config, ["repository"], ["repository"])["repository"]
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
    "pretrained": cmd_pretrained,
}
