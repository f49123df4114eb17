"""The CreateTrainingJob request, built by one pure function so `--dry-run` prints what is sent.

The container's own metric regexes (`container.metrics.METRIC_DEFINITIONS`) and channel names
(`container.sagemaker_env`) are imported, never repeated, so the job and the image agree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sagemaker_tfod.container.sagemaker_env import CHECKPOINT_CHANNEL, TRAINING_CHANNEL
from sagemaker_tfod.launch import request_checks
from sagemaker_tfod.launch.errors import LaunchError
from sagemaker_tfod.launch.s3_uri import is_s3_uri

# Where SageMaker syncs checkpoints and TensorBoard events inside the container; these match
# container.sagemaker_env's layout under the default /opt/ml.
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
TENSORBOARD_LOCAL_PATH = "/opt/ml/output/tensorboard"
DEFAULT_JOB_PREFIX = "tf-od"


@dataclass(frozen=True)
class TrainingJobSpec:
    """Everything one training job needs, already resolved from the settings."""

    job_name: str
    image_uri: str
    role_arn: str
    training_s3_uri: str
    output_s3_uri: str
    checkpoint_s3_uri: str
    instance_type: str
    instance_count: int = 1
    volume_gb: int = 50
    max_runtime_s: int = 4 * 3600
    spot: bool = True
    max_wait_s: int | None = None
    init_checkpoint_s3_uri: str | None = None
    tensorboard_s3_uri: str | None = None
    # Any values (ints, floats, booleans from launch.toml); the request builder makes them the
    # strings SageMaker requires.
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, Any] = field(default_factory=dict)


def default_job_name(now: datetime, prefix: str = DEFAULT_JOB_PREFIX) -> str:
    """`tf-od-20261121-111500`: unique per second, valid as a SageMaker job name."""
    return f"{prefix}-{now:%Y%m%d-%H%M%S}"


def hyperparameter_string(value: Any) -> str:
    """SageMaker hyperparameters are strings; booleans become true/false as the container reads."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def stringify_hyperparameters(values: Mapping[str, Any]) -> dict[str, str]:
    """Keys and values as strings; also used for tags, whose values are strings too."""
    return {str(key): hyperparameter_string(value) for key, value in values.items()}


def hyperparameter_problems(values: Mapping[str, str]) -> list[str]:
    """What SageMaker would reject in HyperParameters (already strings)."""
    problems = []
    if len(values) > 100:
        problems.append("SageMaker accepts at most 100 hyperparameters")
    for key, value in values.items():
        if len(key) > 256 or len(value) > 2500:
            problems.append(f"hyperparameter '{key[:40]}' is too long (key 256, value 2500 chars)")
    return problems


def request_hyperparameters(values: Mapping[str, Any]) -> dict[str, str]:
    """The request's HyperParameters for these values, validated: what `train` sends and what
    `local` writes to hyperparameters.json."""
    strings = stringify_hyperparameters(values)
    problems = hyperparameter_problems(strings)
    if problems:
        raise LaunchError("; ".join(problems))
    return strings


def with_string_values(spec: TrainingJobSpec) -> TrainingJobSpec:
    """The spec with hyperparameters and tag values as the strings SageMaker requires."""
    return replace(
        spec,
        hyperparameters=stringify_hyperparameters(spec.hyperparameters),
        tags=stringify_hyperparameters(spec.tags),
    )


def batch_size_problems(hyperparameters: Mapping[str, str], instance_count: int) -> list[str]:
    """batch_size is the global batch of all instances' devices: it must at least split over
    the instances (the container checks the devices too, but only once the job is paid for)."""
    text = str(hyperparameters.get("batch_size", "")).strip().strip('"')
    if instance_count <= 1 or not text.isdigit() or int(text) % instance_count == 0:
        return []
    size = int(text)
    lower = max(instance_count, size - size % instance_count)
    return [
        f"hyperparameter batch_size={size} is the global batch and cannot be split evenly over "
        f"{instance_count} instances; use a multiple of {instance_count} (e.g. {lower}) times "
        "the GPUs per instance"
    ]


def validate_spec(spec: TrainingJobSpec) -> None:
    """Reject what SageMaker would reject, before any request, with the fix in the message."""
    spec = with_string_values(spec)
    problems = [
        *request_checks.name_problems("job name", spec.job_name, "--job-name"),
        *request_checks.role_problems(spec.role_arn),
        *request_checks.image_problems(spec.image_uri),
    ]
    uris = {
        "training_s3_uri": spec.training_s3_uri,
        "output_s3_uri": spec.output_s3_uri,
        "checkpoint_s3_uri": spec.checkpoint_s3_uri,
        "init_checkpoint_s3_uri": spec.init_checkpoint_s3_uri,
        "tensorboard_s3_uri": spec.tensorboard_s3_uri,
    }
    for name, uri in uris.items():
        if uri is not None and not is_s3_uri(uri):
            problems.append(f"{name} '{uri}' is not an s3://bucket/prefix URI")
    if not spec.instance_type.startswith("ml."):
        problems.append(
            f"instance type '{spec.instance_type}' must start with ml. (ml.g4dn.xlarge)"
        )
    if spec.instance_count < 1:
        problems.append("instance_count must be at least 1")
    problems += batch_size_problems(spec.hyperparameters, spec.instance_count)
    if spec.volume_gb < 1:
        problems.append("volume_gb must be at least 1")
    if spec.max_runtime_s < 1:
        problems.append("max_runtime must be a positive number of seconds")
    if spec.spot and spec.max_wait_s is not None and spec.max_wait_s < spec.max_runtime_s:
        problems.append(
            f"max_wait ({spec.max_wait_s}s) must be at least max_runtime ({spec.max_runtime_s}s) "
            "for spot training"
        )
    problems += hyperparameter_problems(spec.hyperparameters)
    problems += request_checks.tag_problems(spec.tags)
    if problems:
        raise LaunchError("; ".join(problems))


def build_create_training_job_request(
    spec: TrainingJobSpec, metric_definitions: Sequence[Mapping[str, str]]
) -> dict[str, Any]:
    """The exact keyword arguments of `sagemaker.create_training_job` for `spec` (pure).

    Hyperparameter and tag values may be any scalars; they are sent as strings.
    """
    spec = with_string_values(spec)
    validate_spec(spec)
    channels: list[dict[str, Any]] = [_s3_channel(TRAINING_CHANNEL, spec.training_s3_uri)]
    if spec.init_checkpoint_s3_uri:
        channels.append(_s3_channel(CHECKPOINT_CHANNEL, spec.init_checkpoint_s3_uri))

    stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_runtime_s}
    if spec.spot:
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait_s or 2 * spec.max_runtime_s

    request: dict[str, Any] = {
        "TrainingJobName": spec.job_name,
        "AlgorithmSpecification": {
            "TrainingImage": spec.image_uri,
            "TrainingInputMode": "File",
            "MetricDefinitions": [
                {"Name": item["Name"], "Regex": item["Regex"]} for item in metric_definitions
            ],
        },
        "RoleArn": spec.role_arn,
        "HyperParameters": dict(spec.hyperparameters),
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": spec.output_s3_uri},
        "ResourceConfig": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
            "VolumeSizeInGB": spec.volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spec.spot,
        # Always synced, spot or not. A spot restart of this job resumes from it. A new job
        # resumes only when given the same S3Uri: the default one contains the job name, so a
        # re-run with a new name starts fresh; continuing a run means reusing
        # --checkpoint-s3-uri (the same --job-name would derive it too, but SageMaker refuses
        # a job name already used in the account and region).
        "CheckpointConfig": {"S3Uri": spec.checkpoint_s3_uri, "LocalPath": CHECKPOINT_LOCAL_PATH},
    }
    if spec.tensorboard_s3_uri:
        request["TensorBoardOutputConfig"] = {
            "S3OutputPath": spec.tensorboard_s3_uri,
            "LocalPath": TENSORBOARD_LOCAL_PATH,
        }
    if spec.tags:
        request["Tags"] = request_checks.tag_list(spec.tags)
    return request


def _s3_channel(name: str, uri: str) -> dict[str, Any]:
    return {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": uri,
                "S3DataDistributionType": "FullyReplicated",
            }
        },
        "InputMode": "File",
    }
