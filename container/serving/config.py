"""Serving settings: SageMaker's hosting variables plus this server's own, validated once.

`ServeConfig.from_environ` is pure (the environment, the CPU count and whether a GPU is present
are arguments), so every default and every refusal is tested without starting a server. The
names SageMaker defines keep SageMaker's spelling (as in sagemaker-inference-toolkit); the
server's own start with `TFOD_SERVE_`. `SETTINGS` is the one table of them: `--help` and the
README print it.
"""

from __future__ import annotations

import glob
import os
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.sagemaker_env import SageMakerEnv
from sagemaker_tfod.container.serving.media_types import JSON, check_default_accept

MIB = 1024 * 1024
# SageMaker's real-time InvokeEndpoint limit (6 MiB); batch transform sends its own
# MaxPayloadInMB as SAGEMAKER_MAX_PAYLOAD_IN_MB.
DEFAULT_MAX_PAYLOAD_MB = 6.0
# SageMaker stops a container 30 s after SIGTERM; in-flight requests get most of that.
DEFAULT_GRACEFUL_TIMEOUT_S = 25
EXPORT_ENV = "TFOD_SERVE_EXPORT"
SAGEMAKER_PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"


class ServeConfigError(UserError):
    """A serving setting that cannot work; the message names the variable and the fix."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: the ServeConfig field it sets, its type, default and bounds."""

    env: str
    field: str
    kind: type
    default: Any  # None: derived from other settings (see `help`)
    help: str
    minimum: float | None = None
    maximum: float | None = None


SETTINGS: tuple[Setting, ...] = (
    Setting("SAGEMAKER_BIND_TO_PORT", "port", int, 8080, "port to listen on", 1, 65535),
    Setting(
        EXPORT_ENV,
        "export",
        str,
        "auto",
        "which export serves: auto, tflite_int8, tflite, tflite_fp16, saved_model, frozen_graph "
        "(auto: model_int8.tflite, else model.tflite, else saved_model on CPU; saved_model on GPU)",
    ),
    Setting(
        "SAGEMAKER_MODEL_SERVER_WORKERS",
        "workers",
        int,
        None,
        "worker processes, each with its own copy of the model (CPU count; 1 with a GPU)",
        1,
        256,
    ),
    Setting(
        "TFOD_SERVE_MODEL_THREADS",
        "model_threads",
        int,
        None,
        "inference threads per worker (CPU count / workers, at least 1)",
        1,
        256,
    ),
    Setting(
        "TFOD_SERVE_HTTP_THREADS",
        "http_threads",
        int,
        4,
        "request threads per worker (inference itself runs one at a time per worker)",
        1,
        256,
    ),
    Setting(
        "TFOD_SERVE_MAX_CONNECTIONS",
        "max_connections",
        int,
        32,
        "open connections per worker, queued ones included; more wait in the listen backlog",
        1,
        100_000,
    ),
    Setting("TFOD_SERVE_BACKLOG", "backlog", int, 64, "listen backlog of the port", 1, 65535),
    Setting(
        "SAGEMAKER_MODEL_SERVER_TIMEOUT",
        "timeout_s",
        int,
        60,
        "seconds a request may wait for its worker's model before a 503 (SageMaker's own "
        "invocation timeout is 60 s)",
        1,
        3600,
    ),
    Setting(
        "TFOD_SERVE_GRACEFUL_TIMEOUT",
        "graceful_timeout_s",
        int,
        DEFAULT_GRACEFUL_TIMEOUT_S,
        "seconds in-flight requests get to finish after SIGTERM (SageMaker kills at 30)",
        0,
        3600,
    ),
    Setting(
        "TFOD_SERVE_MAX_PAYLOAD_MB",
        "max_payload_mb",
        float,
        None,
        f"largest request body in MiB (SAGEMAKER_MAX_PAYLOAD_IN_MB if set, else "
        f"{DEFAULT_MAX_PAYLOAD_MB:g}: SageMaker's real-time limit)",
        0.001,
        1024,
    ),
    Setting(
        "TFOD_SERVE_MAX_PIXELS",
        "max_pixels",
        int,
        40_000_000,
        "largest image (width x height) decoded; larger ones get a 413 before decoding",
        1,
        1_000_000_000,
    ),
    Setting(
        "TFOD_SERVE_MAX_BATCH",
        "max_batch",
        int,
        64,
        "most images in one JSON or JSON Lines request",
        1,
        100_000,
    ),
    Setting(
        "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT",
        "default_accept",
        str,
        JSON,
        "response type when a request sends no Accept (or */*)",
    ),
    Setting(
        "TFOD_SERVE_SCORE_THRESHOLD",
        "score_threshold",
        float,
        0.0,
        "default lowest score returned (0: all the model keeps; its own cutoff is the training "
        "hyperparameter score_threshold)",
        0,
        1,
    ),
    Setting(
        "TFOD_SERVE_MAX_DETECTIONS",
        "max_detections",
        int,
        None,
        "default most detections per image (all the model returns)",
        1,
        100_000,
    ),
)


@dataclass(frozen=True)
class ServeConfig:
    """Everything the server needs, resolved: see SETTINGS for what each field means."""

    model_dir: pathlib.Path
    host: str
    port: int
    export: str
    workers: int
    model_threads: int
    http_threads: int
    max_connections: int
    backlog: int
    timeout_s: int
    graceful_timeout_s: int
    max_payload_mb: float
    max_pixels: int
    max_batch: int
    default_accept: str
    score_threshold: float
    max_detections: int | None
    gpu: bool

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * MIB)

    @property
    def max_concurrent_transforms(self) -> int:
        """What batch transform should send at once: two requests per worker, so each worker
        decodes the next image while it runs the current one."""
        return 2 * self.workers

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str],
        cpu_count: int,
        gpu: bool,
        model_dir: pathlib.Path | None = None,
        host: str = "0.0.0.0",
        overrides: Mapping[str, Any] | None = None,
    ) -> ServeConfig:
        """Resolve every setting: `overrides` (command-line flags, by field name) > the
        environment > the default; derived defaults from `cpu_count` and `gpu`."""
        values: dict[str, Any] = {}
        given = {key: value for key, value in (overrides or {}).items() if value is not None}
        for setting in SETTINGS:
            if setting.field in given:
                raw, source = given[setting.field], f"--{setting.field.replace('_', '-')}"
            elif environ.get(setting.env, "").strip() != "":
                raw, source = environ[setting.env], setting.env
            else:
                values[setting.field] = setting.default
                continue
            values[setting.field] = _convert(setting, raw, source)

        if values["max_payload_mb"] is None:
            values["max_payload_mb"] = _sagemaker_payload_mb(environ)
        if values["workers"] is None:
            values["workers"] = 1 if gpu else max(1, cpu_count)
        if values["model_threads"] is None:
            values["model_threads"] = max(1, cpu_count // values["workers"])
        values["export"] = values["export"].strip().lower()
        values["default_accept"] = values["default_accept"].strip()
        problem = check_default_accept(values["default_accept"])
        if problem:
            raise ServeConfigError(f"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT: {problem}")
        if values["http_threads"] > values["max_connections"]:
            raise ServeConfigError(
                f"TFOD_SERVE_HTTP_THREADS={values['http_threads']} exceeds "
                f"TFOD_SERVE_MAX_CONNECTIONS={values['max_connections']}; a thread needs a "
                "connection to serve, so raise the connections or lower the threads"
            )
        base_model_dir = SageMakerEnv.from_environ(environ).model_dir
        return cls(
            model_dir=pathlib.Path(model_dir) if model_dir is not None else base_model_dir,
            host=host,
            gpu=gpu,
            **values,
        )


def _convert(setting: Setting, raw: Any, source: str) -> Any:
    text = str(raw).strip()
    if setting.kind is str:
        return text
    parse: Callable[[str], Any] = int if setting.kind is int else float
    try:
        value = parse(text)
    except ValueError:
        kind = "a whole number" if setting.kind is int else "a number"
        raise ServeConfigError(f"{source}={text!r} is not {kind}; {setting.help}") from None
    if value != value:  # NaN
        raise ServeConfigError(f"{source}={text!r} is not a number; {setting.help}")
    low, high = setting.minimum, setting.maximum
    if (low is not None and value < low) or (high is not None and value > high):
        raise ServeConfigError(
            f"{source}={text} is outside {low:g}..{high:g}; {setting.help}"
            if high is not None
            else f"{source}={text} is below {low:g}; {setting.help}"
        )
    return value


def _sagemaker_payload_mb(environ: Mapping[str, str]) -> float:
    """Batch transform's MaxPayloadInMB when SageMaker passed it (0 means "not limited by
    SageMaker", so the default applies), else the real-time limit."""
    text = environ.get(SAGEMAKER_PAYLOAD_ENV, "").strip()
    try:
        value = float(text)
    except ValueError:
        return DEFAULT_MAX_PAYLOAD_MB
    return value if value > 0 and value == value else DEFAULT_MAX_PAYLOAD_MB


def usable_cpu_count() -> int:
    """CPUs this process may run on (the affinity mask, which a container's cpuset limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_present(device_glob: str = "/dev/nvidia[0-9]*") -> bool:
    """Whether an NVIDIA GPU is visible, without importing TensorFlow: the device nodes the
    NVIDIA container runtime mounts (SageMaker's GPU instances do)."""
    return bool(glob.glob(device_glob))


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) rows for --help and the README."""
    rows = []
    for setting in SETTINGS:
        default = "derived" if setting.default is None else str(setting.default)
        rows.append((setting.env, default, setting.help))
    return rows
