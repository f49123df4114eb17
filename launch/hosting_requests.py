"""The requests behind `deploy` and `transform`, built by pure functions (what --dry-run prints).

CreateModel (the training image, the job's model.tar.gz, the execution role), CreateEndpointConfig
(instances, or serverless memory and concurrency), CreateEndpoint, Application Auto Scaling's
RegisterScalableTarget and PutScalingPolicy (target tracking on invocations per instance), and
CreateTransformJob. Everything SageMaker would refuse is refused here first, with the fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sagemaker_tfod.container.serving.config import EXPORT_ENV
from sagemaker_tfod.container.serving.exports import AUTO, EXPORT_FILES
from sagemaker_tfod.launch import request_checks
from sagemaker_tfod.launch.errors import LaunchError
from sagemaker_tfod.launch.s3_uri import is_s3_uri
from sagemaker_tfod.launch.training_job import stringify_hyperparameters

VARIANT_NAME = "AllTraffic"
SERVE_EXPORTS = (AUTO, *EXPORT_FILES)  # what the container's TFOD_SERVE_EXPORT accepts
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)
MAX_SERVERLESS_CONCURRENCY = 200
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"
SCALE_IN_COOLDOWN_S = 300  # scale in slowly: a removed instance takes minutes to come back
SCALE_OUT_COOLDOWN_S = 60
IMAGE_CONTENT_TYPE = "application/x-image"
JSONLINES = "application/jsonlines"
TRANSFORM_CONTENT_TYPES = (IMAGE_CONTENT_TYPE, JSONLINES)


@dataclass(frozen=True)
class ModelSpec:
    """A SageMaker Model: the serving image, the model archive and the role it runs with."""

    model_name: str
    image_uri: str
    model_data_url: str
    role_arn: str
    serve_export: str | None = None
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointSpec:
    """An endpoint and its (immutable, so newly named) configuration."""

    endpoint_name: str
    config_name: str
    model_name: str
    instance_type: str = "ml.c5.xlarge"
    instance_count: int = 1
    serverless_memory_mb: int | None = None
    serverless_max_concurrency: int = 5
    tags: Mapping[str, Any] = field(default_factory=dict)

    @property
    def serverless(self) -> bool:
        return self.serverless_memory_mb is not None


@dataclass(frozen=True)
class AutoscaleSpec:
    endpoint_name: str
    min_instances: int
    max_instances: int
    invocations_per_instance: int  # per minute, the metric SageMaker publishes
    variant_name: str = VARIANT_NAME

    @property
    def resource_id(self) -> str:
        return scalable_resource_id(self.endpoint_name, self.variant_name)

    @property
    def policy_name(self) -> str:
        return f"{self.endpoint_name}-invocations-per-instance"


@dataclass(frozen=True)
class TransformSpec:
    job_name: str
    model_name: str
    input_s3_uri: str
    output_s3_uri: str
    instance_type: str = "ml.c5.xlarge"
    instance_count: int = 1
    content_type: str = IMAGE_CONTENT_TYPE
    tags: Mapping[str, Any] = field(default_factory=dict)


def scalable_resource_id(endpoint_name: str, variant_name: str = VARIANT_NAME) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant_name}"


def timestamped(prefix: str, now: datetime) -> str:
    """`PREFIX-YYYYMMDD-HHMMSS`, cut so the whole stays within SageMaker's 63 characters."""
    suffix = f"-{now:%Y%m%d-%H%M%S}"
    return prefix[: 63 - len(suffix)].rstrip("-") + suffix


def parse_autoscale(text: str) -> tuple[int, int]:
    """`"1-4"` -> (1, 4): the instance range Application Auto Scaling keeps the variant in."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text or "")
    if not match:
        raise LaunchError(f"--autoscale '{text}' is not MIN-MAX; write e.g. --autoscale 1-4")
    low, high = int(match.group(1)), int(match.group(2))
    if low < 1 or high < low:
        raise LaunchError(
            f"--autoscale {text}: need 1 <= MIN <= MAX (an endpoint keeps at least one instance; "
            "use a serverless endpoint to scale to zero)"
        )
    return low, high


def _tags(tags: Mapping[str, Any]) -> list[dict[str, str]]:
    return request_checks.tag_list(stringify_hyperparameters(tags))


def _raise(problems: list[str]) -> None:
    if problems:
        raise LaunchError("; ".join(problems))


def build_create_model_request(spec: ModelSpec) -> dict[str, Any]:
    problems: list[str] = []
    problems += request_checks.name_problems(
        "model name", spec.model_name, "derived from --endpoint-name"
    )
    problems += request_checks.image_problems(spec.image_uri)
    problems += request_checks.role_problems(spec.role_arn)
    if not (is_s3_uri(spec.model_data_url) and spec.model_data_url.endswith(".tar.gz")):
        problems.append(
            f"model data '{spec.model_data_url}' is not an s3://.../model.tar.gz URI "
            "(a training job's ModelArtifacts)"
        )
    if spec.serve_export is not None and spec.serve_export not in SERVE_EXPORTS:
        problems.append(
            f"serve export '{spec.serve_export}' is not one of {', '.join(SERVE_EXPORTS)} "
            "(--serve-export)"
        )
    _raise(problems)
    environment = {EXPORT_ENV: spec.serve_export} if spec.serve_export else {}
    request: dict[str, Any] = {
        "ModelName": spec.model_name,
        "PrimaryContainer": {
            "Image": spec.image_uri,
            "ModelDataUrl": spec.model_data_url,
            "Environment": environment,
        },
        "ExecutionRoleArn": spec.role_arn,
    }
    if spec.tags:
        request["Tags"] = _tags(spec.tags)
    return request


def build_create_endpoint_config_request(spec: EndpointSpec) -> dict[str, Any]:
    problems: list[str] = []
    problems += request_checks.name_problems(
        "endpoint config name", spec.config_name, "--endpoint-name"
    )
    variant: dict[str, Any] = {"VariantName": VARIANT_NAME, "ModelName": spec.model_name}
    if spec.serverless:
        if spec.serverless_memory_mb not in SERVERLESS_MEMORY_MB:
            problems.append(
                f"serverless memory {spec.serverless_memory_mb} MB must be one of "
                f"{', '.join(map(str, SERVERLESS_MEMORY_MB))} (--serverless-memory-mb)"
            )
        if not 1 <= spec.serverless_max_concurrency <= MAX_SERVERLESS_CONCURRENCY:
            problems.append(
                f"serverless max concurrency {spec.serverless_max_concurrency} must be 1 to "
                f"{MAX_SERVERLESS_CONCURRENCY} (--serverless-max-concurrency)"
            )
        variant["ServerlessConfig"] = {
            "MemorySizeInMB": spec.serverless_memory_mb,
            "MaxConcurrency": spec.serverless_max_concurrency,
        }
    else:
        if not spec.instance_type.startswith("ml."):
            problems.append(
                f"instance type '{spec.instance_type}' must start with ml. "
                "(ml.c5.xlarge; --endpoint-instance-type)"
            )
        if spec.instance_count < 1:
            problems.append("endpoint_instance_count must be at least 1")
        variant.update(
            {
                "InstanceType": spec.instance_type,
                "InitialInstanceCount": spec.instance_count,
                "InitialVariantWeight": 1.0,
            }
        )
    _raise(problems)
    request: dict[str, Any] = {
        "EndpointConfigName": spec.config_name,
        "ProductionVariants": [variant],
    }
    if spec.tags:
        request["Tags"] = _tags(spec.tags)
    return request


def build_create_endpoint_request(spec: EndpointSpec) -> dict[str, Any]:
    problems: list[str] = []
    problems += request_checks.name_problems("endpoint name", spec.endpoint_name, "--endpoint-name")
    _raise(problems)
    request: dict[str, Any] = {
        "EndpointName": spec.endpoint_name,
        "EndpointConfigName": spec.config_name,
    }
    if spec.tags:
        request["Tags"] = _tags(spec.tags)
    return request


def build_autoscaling_requests(
    spec: AutoscaleSpec, endpoint: EndpointSpec
) -> tuple[dict[str, Any], dict[str, Any]]:
    """RegisterScalableTarget and PutScalingPolicy (target tracking) for the endpoint's variant."""
    problems: list[str] = []
    if endpoint.serverless:
        problems.append(
            "--autoscale applies to instance endpoints; a serverless endpoint scales by itself "
            "(raise --serverless-max-concurrency instead)"
        )
    if spec.invocations_per_instance < 1:
        problems.append("autoscale_target must be at least 1 invocation per instance per minute")
    if not spec.min_instances <= endpoint.instance_count <= spec.max_instances:
        problems.append(
            f"endpoint_instance_count {endpoint.instance_count} must lie within --autoscale "
            f"{spec.min_instances}-{spec.max_instances}"
        )
    _raise(problems)
    register = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": spec.resource_id,
        "ScalableDimension": SCALABLE_DIMENSION,
        "MinCapacity": spec.min_instances,
        "MaxCapacity": spec.max_instances,
    }
    policy = {
        "PolicyName": spec.policy_name,
        "ServiceNamespace": "sagemaker",
        "ResourceId": spec.resource_id,
        "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(spec.invocations_per_instance),
            "PredefinedMetricSpecification": {"PredefinedMetricType": INVOCATIONS_METRIC},
            "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
            "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
        },
    }
    return register, policy


def build_create_transform_job_request(spec: TransformSpec) -> dict[str, Any]:
    """A batch transform over every object under `input_s3_uri`.

    Images: one object = one request (SplitType None), answered as JSON into
    `OUTPUT/<key>.out`. JSON Lines: one line = one record, answered line by line. The
    concurrency, batch strategy and payload size are left to the container's
    GET /execution-parameters, which knows its worker count and its payload limit.
    """
    problems: list[str] = []
    problems += request_checks.name_problems(
        "transform job name", spec.job_name, "--transform-job-name"
    )
    for name, uri in (("images", spec.input_s3_uri), ("output", spec.output_s3_uri)):
        if not is_s3_uri(uri):
            problems.append(f"{name} '{uri}' is not an s3://bucket/prefix URI")
    if spec.content_type not in TRANSFORM_CONTENT_TYPES:
        problems.append(
            f"content type '{spec.content_type}' must be one of "
            f"{', '.join(TRANSFORM_CONTENT_TYPES)} (--content-type)"
        )
    if not spec.instance_type.startswith("ml."):
        problems.append(
            f"instance type '{spec.instance_type}' must start with ml. (--transform-instance-type)"
        )
    if spec.instance_count < 1:
        problems.append("transform_instance_count must be at least 1")
    _raise(problems)
    lines = spec.content_type == JSONLINES
    request: dict[str, Any] = {
        "TransformJobName": spec.job_name,
        "ModelName": spec.model_name,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input_s3_uri}},
            "ContentType": spec.content_type,
            "SplitType": "Line" if lines else "None",
            "CompressionType": "None",
        },
        "TransformOutput": {
            "S3OutputPath": spec.output_s3_uri,
            "Accept": JSONLINES if lines else "application/json",
            "AssembleWith": "Line" if lines else "None",
        },
        "TransformResources": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
        },
    }
    if spec.tags:
        request["Tags"] = _tags(spec.tags)
    return request
