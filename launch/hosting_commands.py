"""The bodies of `deploy`, `invoke`, `endpoint delete|list`, `transform` and `serve-local`.

As in commands.py: settings resolved once, requests built by pure functions
(hosting_requests.py), the calls in endpoints.py and invoke.py, one JSON result printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import tempfile
from datetime import UTC, datetime
from typing import Any

from sagemaker_tfod.launch import endpoints, hosting_requests, invoke, settings
from sagemaker_tfod.launch.command_context import (
    make_client,
    read_config,
    resolve_region,
    resolve_settings,
)
from sagemaker_tfod.launch.errors import LaunchError
from sagemaker_tfod.launch.hosting_requests import (
    AutoscaleSpec,
    EndpointSpec,
    ModelSpec,
    TransformSpec,
    timestamped,
)
from sagemaker_tfod.launch.s3_uri import is_s3_uri

log = logging.getLogger("sagemaker_tfod.launch")

DEPLOY_SETTINGS = (
    "role",
    "image",
    "endpoint_name",
    "endpoint_instance_type",
    "endpoint_instance_count",
    "serverless_memory_mb",
    "serverless_max_concurrency",
    "serve_export",
    "autoscale_target",
)
TRANSFORM_SETTINGS = (
    "role",
    "image",
    "serve_export",
    "transform_instance_type",
    "transform_instance_count",
    "transform_job_name",
)


def _model_spec(
    args: argparse.Namespace, config: dict, values: dict, region: str | None, model_name: str
) -> ModelSpec:
    """The Model for SOURCE: a training job (its image, archive and role; --image and --role
    override) or the s3:// URI of a model.tar.gz (then --image and --role are required)."""
    source = args.source
    if is_s3_uri(source):
        settings.require(values, ["role", "image"], settings.config_file_name(args.config))
        found = {"model_data_url": source, "image_uri": "", "role_arn": ""}
    else:
        found = endpoints.model_source(make_client("sagemaker", region), source)
    tags = settings.merged_table(config, "tags", settings.parse_key_values(args.tag, "--tag"))
    return ModelSpec(
        model_name=model_name,
        image_uri=values["image"] or found["image_uri"],
        model_data_url=found["model_data_url"],
        role_arn=values["role"] or found["role_arn"],
        serve_export=values["serve_export"],
        tags=tags,
    )


def _base_name(source: str, prefix: str, now: datetime) -> str:
    """A training job's name is a fine endpoint name; an S3 URI gets a timestamped default."""
    return timestamped(prefix, now) if is_s3_uri(source) else source


def deploy_plan(args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    """Every request `deploy` will send, in order, keyed by operation (what --dry-run prints)."""
    config = read_config(args)
    values = resolve_settings(args, config, DEPLOY_SETTINGS)
    region = resolve_region(args, config)
    endpoint_name = values["endpoint_name"] or _base_name(args.source, "tf-od-endpoint", now)
    versioned = timestamped(endpoint_name, now)  # configs are immutable: a new one per deploy
    model = _model_spec(args, config, values, region, versioned)
    endpoint = EndpointSpec(
        endpoint_name=endpoint_name,
        config_name=versioned,
        model_name=versioned,
        instance_type=values["endpoint_instance_type"],
        instance_count=values["endpoint_instance_count"],
        serverless_memory_mb=values["serverless_memory_mb"],
        serverless_max_concurrency=values["serverless_max_concurrency"],
        tags=model.tags,
    )
    plan = {
        "CreateModel": hosting_requests.build_create_model_request(model),
        "CreateEndpointConfig": hosting_requests.build_create_endpoint_config_request(endpoint),
        "CreateEndpoint": hosting_requests.build_create_endpoint_request(endpoint),
    }
    if args.autoscale:
        low, high = hosting_requests.parse_autoscale(args.autoscale)
        if args.no_wait:
            raise LaunchError(
                "--autoscale needs the endpoint InService to register it; drop --no-wait"
            )
        scaling = AutoscaleSpec(endpoint_name, low, high, values["autoscale_target"])
        register, policy = hosting_requests.build_autoscaling_requests(scaling, endpoint)
        plan["RegisterScalableTarget"] = register
        plan["PutScalingPolicy"] = policy
    return plan


def cmd_deploy(args: argparse.Namespace) -> int:
    plan = deploy_plan(args, datetime.now(UTC))
    if args.dry_run:
        print(json.dumps(plan, indent=2))
        return 0
    region = resolve_region(args, read_config(args))
    sagemaker = make_client("sagemaker", region)
    name = plan["CreateEndpoint"]["EndpointName"]
    model_name = plan["CreateModel"]["ModelName"]
    config_name = plan["CreateEndpointConfig"]["EndpointConfigName"]
    endpoints.create(sagemaker, "create_model", f"model '{model_name}'", plan["CreateModel"])
    try:
        endpoints.create(
            sagemaker,
            "create_endpoint_config",
            f"endpoint config '{config_name}'",
            plan["CreateEndpointConfig"],
        )
        try:
            response = endpoints.create(
                sagemaker, "create_endpoint", f"endpoint '{name}'", plan["CreateEndpoint"]
            )
        except LaunchError:
            _forget(sagemaker.delete_endpoint_config, EndpointConfigName=config_name)
            raise
    except LaunchError:
        _forget(sagemaker.delete_model, ModelName=model_name)
        raise
    result: dict[str, Any] = {
        "EndpointName": name,
        "EndpointArn": response.get("EndpointArn"),
        "EndpointConfigName": config_name,
        "ModelName": model_name,
    }
    if args.no_wait:
        print(json.dumps(result))
        return 0
    description = endpoints.wait_for_endpoint(sagemaker, name, sys.stdout, args.poll_seconds)
    result["EndpointStatus"] = description.get("EndpointStatus")
    if "RegisterScalableTarget" in plan:
        policy = endpoints.register_autoscaling(
            make_client("application-autoscaling", region),
            plan["RegisterScalableTarget"],
            plan["PutScalingPolicy"],
        )
        result["ScalingPolicyARN"] = policy.get("PolicyARN")
    print(json.dumps(result))
    return 0


def _forget(delete, **name: str) -> None:
    """Best-effort cleanup of what a failed deploy created (the error that stopped it wins)."""
    try:
        delete(**name)
    except Exception as error:
        log.warning("could not clean up %s: %s", name, error)


def cmd_invoke(args: argparse.Namespace) -> int:
    runtime = make_client("sagemaker-runtime", resolve_region(args, read_config(args)))
    invoke.invoke_images(
        runtime,
        args.endpoint,
        args.images,
        sys.stdout,
        draw_dir=args.draw,
        score_threshold=args.score_threshold,
        max_detections=args.max_detections,
    )
    return 0


def cmd_endpoint(args: argparse.Namespace) -> int:
    region = resolve_region(args, read_config(args))
    sagemaker = make_client("sagemaker", region)
    if args.endpoint_command == "list":
        print(json.dumps(endpoints.list_endpoints(sagemaker), indent=2))
        return 0
    deleted = endpoints.delete_endpoint(
        sagemaker, make_client("application-autoscaling", region), args.endpoint
    )
    print(json.dumps(deleted))
    return 0


def transform_plan(args: argparse.Namespace, now: datetime) -> dict[str, Any]:
    config = read_config(args)
    values = resolve_settings(args, config, TRANSFORM_SETTINGS)
    region = resolve_region(args, config)
    job_name = values["transform_job_name"] or timestamped("tf-od-transform", now)
    model = _model_spec(args, config, values, region, job_name)
    transform = TransformSpec(
        job_name=job_name,
        model_name=job_name,
        input_s3_uri=args.images_s3_uri,
        output_s3_uri=args.output_s3_uri,
        instance_type=values["transform_instance_type"],
        instance_count=values["transform_instance_count"],
        content_type=args.content_type,
        tags=model.tags,
    )
    return {
        "CreateModel": hosting_requests.build_create_model_request(model),
        "CreateTransformJob": hosting_requests.build_create_transform_job_request(transform),
    }


def cmd_transform(args: argparse.Namespace) -> int:
    plan = transform_plan(args, datetime.now(UTC))
    if args.dry_run:
        print(json.dumps(plan, indent=2))
        return 0
    sagemaker = make_client("sagemaker", resolve_region(args, read_config(args)))
    job_name = plan["CreateTransformJob"]["TransformJobName"]
    model_name = plan["CreateModel"]["ModelName"]
    endpoints.create(sagemaker, "create_model", f"model '{model_name}'", plan["CreateModel"])
    try:
        response = endpoints.create(
            sagemaker,
            "create_transform_job",
            f"transform job '{job_name}'",
            plan["CreateTransformJob"],
        )
    except LaunchError:
        _forget(sagemaker.delete_model, ModelName=model_name)
        raise
    result = {
        "TransformJobName": job_name,
        "TransformJobArn": response.get("TransformJobArn"),
        "ModelName": model_name,
        "Output": plan["CreateTransformJob"]["TransformOutput"]["S3OutputPath"],
    }
    if args.wait:
        description = endpoints.wait_for_transform(
            sagemaker, job_name, sys.stdout, args.poll_seconds
        )
        result["TransformJobStatus"] = description.get("TransformJobStatus")
    print(json.dumps(result))
    return 0


def cmd_serve_local(args: argparse.Namespace) -> int:
    """The container's own server on this machine, in the foreground (Ctrl-C stops it)."""
    from sagemaker_tfod.container.serving.server import main as serve
    from sagemaker_tfod.launch.artifacts import unpack_model

    model = args.model
    with tempfile.TemporaryDirectory(prefix="tfod-serve-local-") as scratch:
        if model.is_file() and model.name.endswith((".tar.gz", ".tgz")):
            unpacked = pathlib.Path(scratch) / "model"
            unpack_model(model, unpacked)
            log.info("unpacked %s into %s", model, unpacked)
            model = unpacked
        argv = ["--model-dir", str(model), "--host", args.host, "--port", str(args.port)]
        if args.workers is not None:
            argv += ["--workers", str(args.workers)]
        if args.serve_export:
            argv += ["--export", args.serve_export]
        code = serve(argv)
    if code == 1:
        raise LaunchError(f"serve-local could not start on {model} (the reason is logged above)")
    return code


COMMANDS = {
    "deploy": cmd_deploy,
    "invoke": cmd_invoke,
    "endpoint": cmd_endpoint,
    "transform": cmd_transform,
    "serve-local": cmd_serve_local,
}
