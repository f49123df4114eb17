"""The one place that knows SageMaker's `/opt/ml` layout.

`SAGEMAKER_BASE_DIR` moves the whole tree (as in `sagemaker-training-toolkit`), which is how
local runs and tests use the same code as the image:

    /opt/ml/input/config/{hyperparameters,inputdataconfig,resourceconfig}.json
    /opt/ml/input/data/training        the training channel (required)
    /opt/ml/input/data/checkpoint      a checkpoint to initialise from (optional)
    /opt/ml/checkpoints                Model Garden's model_dir: synced to S3, resumed from
    /opt/ml/model                      exported model (tarred to S3 at the end)
    /opt/ml/output/{failure,data,tensorboard}
    /opt/ml/scratch                    this container's own working files (never synced; the
                                       non-chief workers of a multi-instance job write there)

`resourceconfig.json` describes the cluster: `current_host`, `hosts` (`algo-1` ... `algo-N`)
and `network_interface_name`; `resource_config()` reads it into a `ResourceConfig`.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_BASE_DIR = "/opt/ml"
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
# Local-only (never set on SageMaker), read by container.distribution: host name ->
# loopback address:port for the workers of `launch local --instance-count N`, and a number of
# logical CPU devices to train on when there is no GPU (tests, benchmarks).
LOCAL_ADDRESSES_ENV = "TFOD_LOCAL_HOST_ADDRESSES"
CPU_DEVICES_ENV = "TFOD_CPU_DEVICES"
TRAINING_CHANNEL = "training"
CHECKPOINT_CHANNEL = "checkpoint"


class ConfigFileError(ValueError):
    """A SageMaker config file that is not valid JSON of the expected shape."""


# What a run without resourceconfig.json (an older local tree, a bare test) is: one host.
SINGLE_HOST = "algo-1"


@dataclass(frozen=True)
class ResourceConfig:
    """The cluster as SageMaker describes it to this container."""

    current_host: str
    hosts: tuple[str, ...]
    network_interface_name: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> ResourceConfig:
        """Validate resourceconfig.json's content; `{}` (no file) means one host."""
        if not data:
            return cls(SINGLE_HOST, (SINGLE_HOST,))
        hosts = data.get("hosts")
        current = data.get("current_host")
        if (
            not isinstance(hosts, list)
            or not hosts
            or not all(isinstance(host, str) and host for host in hosts)
        ):
            raise ConfigFileError(f"{source}: 'hosts' must be a non-empty list of host names")
        if len(set(hosts)) != len(hosts):
            raise ConfigFileError(f"{source}: 'hosts' lists a host twice: {hosts}")
        if not isinstance(current, str) or current not in hosts:
            raise ConfigFileError(
                f"{source}: 'current_host' ({current!r}) must be one of 'hosts' ({hosts})"
            )
        interface = data.get("network_interface_name")
        return cls(current, tuple(hosts), interface if isinstance(interface, str) else None)


@dataclass(frozen=True)
class SageMakerEnv:
    """Paths of one SageMaker training layout rooted at `base_dir`."""

    base_dir: pathlib.Path

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> SageMakerEnv:
        environ = os.environ if environ is None else environ
        return cls(pathlib.Path(environ.get(BASE_DIR_ENV) or DEFAULT_BASE_DIR))

    # input/
    @property
    def input_dir(self) -> pathlib.Path:
        return self.base_dir / "input"

    @property
    def config_dir(self) -> pathlib.Path:
        return self.input_dir / "config"

    @property
    def hyperparameters_file(self) -> pathlib.Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def input_data_config_file(self) -> pathlib.Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def resource_config_file(self) -> pathlib.Path:
        return self.config_dir / "resourceconfig.json"

    @property
    def data_dir(self) -> pathlib.Path:
        return self.input_dir / "data"

    def channel_dir(self, name: str) -> pathlib.Path:
        return self.data_dir / name

    @property
    def training_dir(self) -> pathlib.Path:
        return self.channel_dir(TRAINING_CHANNEL)

    @property
    def checkpoint_channel_dir(self) -> pathlib.Path:
        return self.channel_dir(CHECKPOINT_CHANNEL)

    # checkpoints/, model/, output/
    @property
    def checkpoints_dir(self) -> pathlib.Path:
        return self.base_dir / "checkpoints"

    @property
    def model_dir(self) -> pathlib.Path:
        return self.base_dir / "model"

    @property
    def output_dir(self) -> pathlib.Path:
        return self.base_dir / "output"

    @property
    def failure_file(self) -> pathlib.Path:
        return self.output_dir / "failure"

    @property
    def output_data_dir(self) -> pathlib.Path:
        return self.output_dir / "data"

    @property
    def tensorboard_dir(self) -> pathlib.Path:
        return self.output_dir / "tensorboard"

    @property
    def scratch_dir(self) -> pathlib.Path:
        return self.base_dir / "scratch"

    # config files
    def read_hyperparameters(self) -> dict[str, str]:
        """hyperparameters.json as strings (SageMaker sends strings; missing file = none)."""
        raw = _read_json_object(self.hyperparameters_file)
        return {str(key): _as_string(value) for key, value in raw.items()}

    def read_input_data_config(self) -> dict[str, Any]:
        return _read_json_object(self.input_data_config_file)

    def read_resource_config(self) -> dict[str, Any]:
        return _read_json_object(self.resource_config_file)

    def resource_config(self) -> ResourceConfig:
        return ResourceConfig.from_json(self.read_resource_config(), str(self.resource_config_file))

    def make_output_dirs(self) -> None:
        for path in (
            self.checkpoints_dir,
            self.model_dir,
            self.output_data_dir,
            self.tensorboard_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


def _as_string(value: Any) -> str:
    # The SDK sends strings, but a hand-written file may hold numbers or booleans.
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _read_json_object(path: pathlib.Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as error:
        raise ConfigFileError(
            f"{path}: not valid JSON ({error.msg} at line {error.lineno}); "
            "write a JSON object of string values"
        ) from error
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
