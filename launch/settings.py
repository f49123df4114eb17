"""Settings from flags, environment variables and an optional `launch.toml`, validated once.

Precedence: command-line flag > environment variable `LAUNCH_<NAME>` > `launch.toml` > default.
`launch.toml` holds top-level keys with the setting names below, plus optional
`[hyperparameters]` and `[tags]` tables. Credentials are never settings: boto3's own chain
(AWS_PROFILE, environment variables, instance roles) provides them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sagemaker_tfod.launch.errors import LaunchError

DEFAULT_CONFIG_FILE = "launch.toml"
ENV_PREFIX = "LAUNCH_"


@dataclass(frozen=True)
class SettingSpec:
    """One setting: its name (also the toml key and the flag's dest), type, default, help."""

    name: str
    kind: type
    default: Any
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


# The single place where defaults live; --help prints them.
SPECS: dict[str, SettingSpec] = {
    spec.name: spec
    for spec in (
        SettingSpec(
            "region", str, None, "AWS region (else AWS_REGION, AWS_DEFAULT_REGION or the profile's)"
        ),
        SettingSpec("role", str, None, "SageMaker execution role ARN the job runs with"),
        SettingSpec("image", str, None, "training image URI in ECR (make push prints it)"),
        SettingSpec(
            "s3_prefix",
            str,
            None,
            "s3://bucket/prefix under which channel/, output/, checkpoints/ and tensorboard/ "
            "default",
        ),
        SettingSpec("training_s3_uri", str, None, "training channel (default S3_PREFIX/channel)"),
        SettingSpec("output_s3_uri", str, None, "model.tar.gz destination (S3_PREFIX/output)"),
        SettingSpec(
            "checkpoint_s3_uri",
            str,
            None,
            "checkpoint sync for spot resume (default S3_PREFIX/checkpoints/JOB_NAME)",
        ),
        SettingSpec(
            "init_checkpoint_s3_uri",
            str,
            None,
            "optional 'checkpoint' channel that initialises the model (e.g. an earlier job's "
            "checkpoints)",
        ),
        SettingSpec(
            "tensorboard_s3_uri", str, None, "TensorBoard events (default S3_PREFIX/tensorboard)"
        ),
        SettingSpec("instance_type", str, "ml.g4dn.xlarge", "training instance type"),
        SettingSpec(
            "instance_count",
            int,
            1,
            "number of instances; more than 1 trains one model across all of them "
            "(MultiWorkerMirroredStrategy; batch_size is the global batch)",
        ),
        SettingSpec("volume_gb", int, 50, "EBS volume per instance, GB"),
        SettingSpec("max_runtime", int, 4 * 3600, "MaxRuntimeInSeconds"),
        SettingSpec("spot", bool, True, "managed spot training (resumes from checkpoints)"),
        SettingSpec(
            "max_wait", int, None, "MaxWaitTimeInSeconds for spot (default 2 x max_runtime)"
        ),
        SettingSpec("job_name", str, None, "training job name (default tf-od-YYYYMMDD-HHMMSS)"),
        SettingSpec("repository", str, "tf-object-detection", "ECR repository name"),
        # Serving: deploy, transform (see launch/hosting_requests.py).
        SettingSpec(
            "endpoint_name",
            str,
            None,
            "endpoint name (default: the training job's name, else tf-od-endpoint-DATE-TIME)",
        ),
        SettingSpec("endpoint_instance_type", str, "ml.c5.xlarge", "endpoint instance type"),
        SettingSpec(
            "endpoint_instance_count", int, 1, "endpoint instances (the first count with autoscale)"
        ),
        SettingSpec(
            "serverless_memory_mb",
            int,
            None,
            "serverless endpoint memory, 1024-6144 in steps of 1024 (instead of instances)",
        ),
        SettingSpec(
            "serverless_max_concurrency", int, 5, "concurrent invocations of a serverless endpoint"
        ),
        SettingSpec(
            "serve_export",
            str,
            None,
            "export the container serves (its TFOD_SERVE_EXPORT; default auto)",
        ),
        SettingSpec(
            "autoscale_target",
            int,
            600,
            "autoscale target: invocations per instance per minute (SageMaker's metric)",
        ),
        SettingSpec(
            "transform_instance_type", str, "ml.c5.xlarge", "batch transform instance type"
        ),
        SettingSpec("transform_instance_count", int, 1, "batch transform instances"),
        SettingSpec(
            "transform_job_name",
            str,
            None,
            "batch transform job name (default tf-od-transform-DATE-TIME)",
        ),
        SettingSpec(
            "pretrained_cache",
            str,
            None,
            "folder for downloaded pretrained weights (default ~/.cache/sagemaker-tfod/pretrained)",
        ),
        SettingSpec(
            "pretrained_mirror",
            str,
            None,
            "base URL that replaces the publisher's host in pretrained downloads (a mirror)",
        ),
    )
}


def config_file_name(path: Path | None) -> str:
    """The settings file messages should name: --config's path, else ./launch.toml."""
    return str(path) if path is not None else DEFAULT_CONFIG_FILE


def load_config_file(path: Path | None) -> dict[str, Any]:
    """Read launch.toml; an explicit path must exist, the default one is optional."""
    explicit = path is not None
    target = path if explicit else Path(DEFAULT_CONFIG_FILE)
    if not target.is_file():
        if explicit:
            raise LaunchError(f"{target}: config file not found; fix --config or remove it")
        return {}
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise LaunchError(f"{target}: not valid TOML ({error}); fix the file") from error
    known = set(SPECS) | {"hyperparameters", "tags"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise LaunchError(
            f"{target}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}"
        )
    for table in ("hyperparameters", "tags"):
        if table in data and not isinstance(data[table], dict):
            raise LaunchError(f"{target}: '{table}' must be a table ([{table}]) of key = value")
    return data


def _convert(spec: SettingSpec, raw: Any, source: str) -> Any:
    if spec.kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise LaunchError(f"{source}: '{raw}' is not a boolean; use true or false")
    if spec.kind is int:
        if isinstance(raw, bool):
            raise LaunchError(f"{source}: '{raw}' is not an integer")
        try:
            return int(str(raw).strip())
        except ValueError as error:
            raise LaunchError(f"{source}: '{raw}' is not an integer") from error
    if not isinstance(raw, str):
        raise LaunchError(f"{source}: expected a string, got {raw!r}")
    return raw.strip()


def resolve(
    names: Sequence[str],
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    config: Mapping[str, Any],
    required: Sequence[str] = (),
    config_name: str = DEFAULT_CONFIG_FILE,
) -> dict[str, Any]:
    """Resolve each named setting by precedence; every missing required one is named.

    Pure: `flags` holds parsed argparse values (None = not given), `env` the environment.
    """
    values: dict[str, Any] = {}
    for name in names:
        spec = SPECS[name]
        if flags.get(name) is not None:
            values[name] = _convert(spec, flags[name], spec.flag)
        elif env.get(spec.env, "") != "":
            values[name] = _convert(spec, env[spec.env], spec.env)
        elif config.get(name) is not None:
            values[name] = _convert(spec, config[name], f"{config_name}: {name}")
        else:
            values[name] = spec.default
    require(values, required, config_name)
    return values


def require(
    values: Mapping[str, Any], required: Sequence[str], config_name: str = DEFAULT_CONFIG_FILE
) -> None:
    """One clear line per missing required setting, naming the flag, variable and toml key."""
    missing = [name for name in required if values.get(name) in (None, "")]
    if missing:
        lines = [
            f"missing setting '{name}' ({SPECS[name].help}): pass {SPECS[name].flag}, set "
            f'{SPECS[name].env}, or add {name} = "..." to {config_name}'
            for name in missing
        ]
        raise LaunchError("\n".join(lines))


def parse_key_values(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """`["a=1", "b=x"]` -> {"a": "1", "b": "x"}; a malformed item names the flag and the fix."""
    result: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise LaunchError(f"{what} '{item}' is not KEY=VALUE; write e.g. {what} num_steps=2000")
        result[key.strip()] = value.strip()
    return result


def merged_table(config: Mapping[str, Any], table: str, overrides: Mapping[str, str]) -> dict:
    """A launch.toml table ([hyperparameters] or [tags]) with command-line KEY=VALUE on top."""
    merged: dict[str, Any] = dict(config.get(table, {}))
    merged.update(overrides)
    return merged
