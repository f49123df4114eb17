"""`launch local`: the same container code and arguments as `train`, on a local /opt/ml tree.

The tree mirrors what SageMaker builds inside the instance (container.sagemaker_env owns the
layout): hyperparameters as strings, inputdataconfig and resourceconfig JSON, and the channels
as links to local folders. `checkpoints/` is kept between runs, so a second `local` run resumes
exactly as a restarted spot job does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sagemaker_tfod.container.sagemaker_env import (
    BASE_DIR_ENV,
    CHECKPOINT_CHANNEL,
    TRAINING_CHANNEL,
    SageMakerEnv,
)
from sagemaker_tfod.data_prep.files import atomic_write_text
from sagemaker_tfod.launch.errors import LaunchError

LOCAL_HOST = "algo-1"


@dataclass(frozen=True)
class LocalTree:
    """Files (path relative to the base dir -> text) and channel links (path -> target)."""

    files: dict[str, str]
    links: dict[str, Path]


def plan_local_tree(
    hyperparameters: Mapping[str, str],
    training_dir: Path,
    checkpoint_dir: Path | None = None,
    instance_type: str = "local",
) -> LocalTree:
    """What SageMaker would put under /opt/ml for these arguments (pure)."""
    env = SageMakerEnv(Path("."))
    channels = {TRAINING_CHANNEL: training_dir}
    if checkpoint_dir is not None:
        channels[CHECKPOINT_CHANNEL] = checkpoint_dir

    def rel(path: Path) -> str:
        return path.relative_to(env.base_dir).as_posix()

    input_config = {
        name: {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
        for name in channels
    }
    resource_config = {
        "current_host": LOCAL_HOST,
        "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": [LOCAL_HOST],
        "network_interface_name": "eth0",
    }
    files = {
        rel(env.hyperparameters_file): json.dumps(
            {key: str(value) for key, value in hyperparameters.items()}, indent=2, sort_keys=True
        ),
        rel(env.input_data_config_file): json.dumps(input_config, indent=2, sort_keys=True),
        rel(env.resource_config_file): json.dumps(resource_config, indent=2, sort_keys=True),
    }
    links = {rel(env.channel_dir(name)): path.resolve() for name, path in channels.items()}
    return LocalTree(files=files, links=links)


def write_local_tree(base_dir: Path, tree: LocalTree, copy_channels: bool = False) -> SageMakerEnv:
    """Write config files (temp name, then rename) and (re)point channel links.

    `copy_channels` copies the channel folders instead, for a tree that is mounted into a
    container at /opt/ml (a link to a host path would dangle there); copies from an earlier
    run are replaced, but a real folder is never deleted when linking.
    """
    for name, path in tree.links.items():
        if not path.is_dir():
            raise LaunchError(
                f"{path}: channel folder not found (for input/data/{Path(name).name})"
            )
    for relative, text in tree.files.items():
        atomic_write_text(base_dir / relative, text + "\n")
    env = SageMakerEnv(base_dir)
    env.data_dir.mkdir(parents=True, exist_ok=True)
    wanted = {base_dir / name for name in tree.links}
    for existing in env.data_dir.iterdir():  # a channel from an earlier run must not leak in
        if existing not in wanted:
            _remove_channel(existing, copy_channels)
    for relative, source in tree.links.items():
        channel = base_dir / relative
        _remove_channel(channel, copy_channels)
        if copy_channels:
            shutil.copytree(source, channel)
        else:
            channel.symlink_to(source, target_is_directory=True)
    return env


def _remove_channel(path: Path, copies_allowed: bool) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        if not copies_allowed:
            raise LaunchError(
                f"{path}: a real folder where a channel link goes; remove it, use another "
                "--base-dir, or pass --copy-channels"
            )
        shutil.rmtree(path)


def run_container_training(base_dir: Path, python: str = sys.executable) -> int:
    """`python -m container train` (the installed `sagemaker_tfod.container`, what the image
    runs) with SAGEMAKER_BASE_DIR set; output streams through."""
    environment = {**os.environ, BASE_DIR_ENV: str(base_dir.resolve()), "PYTHONUNBUFFERED": "1"}
    completed = subprocess.run(
        [python, "-m", "sagemaker_tfod.container", "train"], env=environment, check=False
    )
    return completed.returncode


def failure_reason(base_dir: Path) -> str:
    failure = SageMakerEnv(base_dir).failure_file
    if failure.is_file():
        return " ".join(failure.read_text(encoding="utf-8", errors="replace").split())
    return "no output/failure file was written; see the log above"
