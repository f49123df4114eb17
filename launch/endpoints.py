"""The calls behind `deploy`, `endpoint delete|list` and `transform`: thin I/O around the requests
hosting_requests.py builds, with status lines while SageMaker works."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TextIO

from botocore.exceptions import ClientError

from sagemaker_tfod.launch.errors import JobEndedError, LaunchError, aws_action
from sagemaker_tfod.launch.hosting_requests import scalable_resource_id

log = logging.getLogger(__name__)

ENDPOINT_TERMINAL = ("InService", "Failed", "OutOfService")
TRANSFORM_TERMINAL = ("Completed", "Failed", "Stopped")


def model_source(sagemaker: Any, job_name: str) -> dict[str, str]:
    """The image, model archive and role of a finished training job."""
    from sagemaker_tfod.launch.logs import describe_job

    description = describe_job(sagemaker, job_name)
    artifact = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    status = description.get("TrainingJobStatus")
    if status != "Completed" or not artifact:
        raise LaunchError(
            f"training job '{job_name}' is {status or 'unknown'}, with no model to serve yet; "
            "wait for it to complete (python -m launch status), or pass the s3:// URI of a "
            "model.tar.gz"
        )
    return {
        "model_data_url": artifact,
        "image_uri": description.get("AlgorithmSpecification", {}).get("TrainingImage", ""),
        "role_arn": description.get("RoleArn", ""),
    }


def create(sagemaker: Any, operation: str, what: str, request: dict[str, Any]) -> dict:
    with aws_action(f"creating {what}"):
        response = getattr(sagemaker, operation)(**request)
    response.pop("ResponseMetadata", None)
    return response


def _poll(
    describe: Callable[[], dict[str, Any]],
    status_key: str,
    terminal: tuple[str, ...],
    label: str,
    out: TextIO,
    poll_seconds: float,
    timeout_s: float,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Describe until a terminal status, printing each change; LaunchError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        description = describe()
        status = description.get(status_key, "?")
        reason = " ".join(str(description.get("FailureReason") or "").split())
        line = f"{status}: {reason}" if reason else status
        if line != last:
            out.write(f"[{label}] {line}\n")
            out.flush()
            last = line
        if status in terminal:
            return description
        if time.monotonic() > deadline:
            raise LaunchError(
                f"{label} still {status} after {timeout_s:.0f} s; it goes on in SageMaker: check "
                "it later (endpoint list / the console) or delete it"
            )
        sleep(poll_seconds)


def wait_for_endpoint(
    sagemaker: Any,
    name: str,
    out: TextIO,
    poll_seconds: float = 15.0,
    timeout_s: float = 3600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    def describe() -> dict[str, Any]:
        with aws_action(f"describing endpoint '{name}'"):
            return sagemaker.describe_endpoint(EndpointName=name)

    description = _poll(
        describe, "EndpointStatus", ENDPOINT_TERMINAL, name, out, poll_seconds, timeout_s, sleep
    )
    if description.get("EndpointStatus") != "InService":
        reason = " ".join(str(description.get("FailureReason") or "no reason given").split())
        raise JobEndedError(
            f"endpoint {name} is {description.get('EndpointStatus')}: {reason} (its log group is "
            f"/aws/sagemaker/Endpoints/{name}; delete it with: endpoint delete {name})"
        )
    return description


def register_autoscaling(autoscaling: Any, register: dict, policy: dict) -> dict:
    with aws_action(f"registering {register['ResourceId']} with Application Auto Scaling"):
        autoscaling.register_scalable_target(**register)
    with aws_action(f"putting scaling policy {policy['PolicyName']}"):
        response = autoscaling.put_scaling_policy(**policy)
    response.pop("ResponseMetadata", None)
    return response


def _not_found(error: ClientError) -> bool:
    details = error.response.get("Error", {})
    message = str(details.get("Message", "")).lower()
    return details.get("Code") in ("ValidationException", "ResourceNotFound") and (
        "could not find" in message or "not found" in message or "does not exist" in message
    )


def delete_endpoint(sagemaker: Any, autoscaling: Any, name: str) -> dict[str, Any]:
    """Delete the endpoint, its config and its models (and their scaling registration)."""
    with aws_action(f"describing endpoint '{name}'"):
        endpoint = sagemaker.describe_endpoint(EndpointName=name)
    config_name = endpoint["EndpointConfigName"]
    with aws_action(f"describing endpoint config '{config_name}'"):
        try:
            config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
            variants = config.get("ProductionVariants", [])
        except ClientError as error:
            if not _not_found(error):
                raise
            variants = []
    deregistered = []
    for variant in variants:
        resource_id = scalable_resource_id(name, variant["VariantName"])
        with aws_action(f"looking up the auto scaling of {resource_id}"):
            found = autoscaling.describe_scalable_targets(
                ServiceNamespace="sagemaker", ResourceIds=[resource_id]
            ).get("ScalableTargets", [])
        for target in found:
            with aws_action(f"deregistering {resource_id} from Application Auto Scaling"):
                autoscaling.deregister_scalable_target(
                    ServiceNamespace="sagemaker",
                    ResourceId=resource_id,
                    ScalableDimension=target["ScalableDimension"],
                )
            deregistered.append(resource_id)
    with aws_action(f"deleting endpoint '{name}'"):
        sagemaker.delete_endpoint(EndpointName=name)
    with aws_action(f"deleting endpoint config '{config_name}'"):
        try:
            sagemaker.delete_endpoint_config(EndpointConfigName=config_name)
        except ClientError as error:
            if not _not_found(error):
                raise
    models = []
    for variant in variants:
        model_name = variant["ModelName"]
        with aws_action(f"deleting model '{model_name}'"):
            try:
                sagemaker.delete_model(ModelName=model_name)
                models.append(model_name)
            except ClientError as error:
                if not _not_found(error):
                    raise
    return {
        "EndpointName": name,
        "EndpointConfigName": config_name,
        "Models": models,
        "Deregistered": deregistered,
    }


def list_endpoints(sagemaker: Any) -> list[dict[str, Any]]:
    rows = []
    with aws_action("listing endpoints"):
        for page in sagemaker.get_paginator("list_endpoints").paginate():
            for item in page.get("Endpoints", []):
                rows.append(
                    {
                        "EndpointName": item.get("EndpointName"),
                        "EndpointStatus": item.get("EndpointStatus"),
                        "CreationTime": str(item.get("CreationTime", "")),
                        "LastModifiedTime": str(item.get("LastModifiedTime", "")),
                    }
                )
    return rows


def wait_for_transform(
    sagemaker: Any,
    name: str,
    out: TextIO,
    poll_seconds: float = 15.0,
    timeout_s: float = 48 * 3600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    def describe() -> dict[str, Any]:
        with aws_action(f"describing transform job '{name}'"):
            return sagemaker.describe_transform_job(TransformJobName=name)

    description = _poll(
        describe,
        "TransformJobStatus",
        TRANSFORM_TERMINAL,
        name,
        out,
        poll_seconds,
        timeout_s,
        sleep,
    )
    if description.get("TransformJobStatus") != "Completed":
        reason = " ".join(str(description.get("FailureReason") or "no reason given").split())
        raise JobEndedError(
            f"transform job {name} is {description.get('TransformJobStatus')}: {reason} (its log "
            "group is /aws/sagemaker/TransformJobs)"
        )
    return description
