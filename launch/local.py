"""`launch local`: the same container code and arguments as `train`, on a local /opt/ml tree.

The tree mirrors what SageMaker builds inside the instance (container.sagemaker_env owns the
layout): hyperparameters as strings, inputdataconfig and resourceconfig JSON, and the channels
as links to local folders. `checkpoints/` is kept between runs, so a second `local` run resumes
exactly as a restarted spot job does.

With `--instance-count N` (N > 1) each host `algo-1` ... `algo-N` gets a tree of its own under
`BASE_DIR/algo-K` and a process of its own; they train together through TensorFlow's
MultiWorkerMirroredStrategy over loopback. The names `algo-K` do not resolve on a laptop and
the processes cannot share one port, so each host is given `127.0.0.1:<a free port>` through
the container's local-only name mapping (`TFOD_LOCAL_HOST_ADDRESSES`, see
container/distribution.py); nothing on the machine is changed. Before the processes start, the
chief's `checkpoints/` is copied into every other host's tree, as SageMaker copies the
checkpoint S3 URI onto every instance of a restarted job. The processes share this machine's
cores, so each one's TensorFlow ops get an even share of them (`TF_NUM_INTRAOP_THREADS`, unless
set already): see container/cpu_threads.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sagemaker_tfod.container import cpu_threads
from sagemaker_tfod.container.sagemaker_env import (
    BASE_DIR_ENV,
    CHECKPOINT_CHANNEL,
    LOCAL_ADDRESSES_ENV,
    TRAINING_CHANNEL,
    SageMakerEnv,
)
from sagemaker_tfod.data_prep.files import atomic_write_text
from sagemaker_tfod.launch.errors import LaunchError

LOCAL_HOST = "algo-1"
LOOPBACK = "127.0.0.1"


def host_names(instance_count: int) -> list[str]:
    """SageMaker's names for the instances of a job: algo-1 ... algo-N."""
    return [f"algo-{index}" for index in range(1, instance_count + 1)]


def host_base_dir(base_dir: Path, host: str, instance_count: int) -> Path:
    """One host: the base dir itself (as before); several: one tree per host below it."""
    return base_dir if instance_count == 1 else base_dir / host


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
    hosts: Sequence[str] = (LOCAL_HOST,),
    current_host: str = LOCAL_HOST,
) -> LocalTree:
    """What SageMaker would put under /opt/ml of `current_host` for these arguments (pure)."""
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
        "current_host": current_host,
        "current_instance_type": instance_type,
        "current_group_name": "homogeneousCluster",
        "hosts": list(hosts),
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


def plan_local_cluster(
    hyperparameters: Mapping[str, str],
    training_dir: Path,
    checkpoint_dir: Path | None = None,
    instance_count: int = 1,
) -> dict[str, LocalTree]:
    """Host name -> its tree, for a job of `instance_count` instances (pure)."""
    if instance_count < 1:
        raise LaunchError("instance_count must be at least 1 (--instance-count)")
    hosts = host_names(instance_count)
    return {
        host: plan_local_tree(
            hyperparameters, training_dir, checkpoint_dir, hosts=hosts, current_host=host
        )
        for host in hosts
    }


def local_addresses(ports: Mapping[str, int]) -> str:
    """The container's local name mapping: `algo-1=127.0.0.1:41001,...`."""
    return ",".join(f"{host}={LOOPBACK}:{port}" for host, port in ports.items())


def free_ports(count: int) -> list[int]:
    """Ports the kernel reports free on loopback (asked for together, so they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def copy_chief_checkpoints(base_dirs: Mapping[str, Path]) -> None:
    """Every other host starts with the chief's checkpoints, as SageMaker copies the checkpoint
    S3 URI (written by the chief alone) onto every instance of a (re)started job."""
    hosts = list(base_dirs)
    source = SageMakerEnv(base_dirs[hosts[0]]).checkpoints_dir
    for host in hosts[1:]:
        target = SageMakerEnv(base_dirs[host]).checkpoints_dir
        shutil.rmtree(target, ignore_errors=True)
        if source.is_dir():
            shutil.copytree(source, target)


def worker_environment(
    base_dir: Path,
    addresses: str | None = None,
    environ: Mapping[str, str] | None = None,
    workers: int = 1,
    cores: int | None = None,
) -> dict[str, str]:
    """The environment of one of `workers` container processes sharing this machine's `cores`
    (each gets its share as TensorFlow intra-op threads: container/cpu_threads.py)."""
    environment = cpu_threads.shared_cpu_environment(
        os.environ if environ is None else environ,
        replicas=workers,
        cores=cores or cpu_threads.available_cores(),
    )
    environment.update({BASE_DIR_ENV: str(base_dir.resolve()), "PYTHONUNBUFFERED": "1"})
    if addresses:
        environment[LOCAL_ADDRESSES_ENV] = addresses
    return environment


def container_train_command(python: str = sys.executable) -> list[str]:
    return [python, "-m", "sagemaker_tfod.container", "train"]


def run_local_cluster(
    base_dirs: Mapping[str, Path], python: str = sys.executable, output: IO[str] | None = None
) -> dict[str, int]:
    """Run one container process per host, their lines prefixed with `[host] `; returns each
    host's exit code. Ctrl-C stops them all."""
    output = output or sys.stdout
    ports = dict(zip(base_dirs, free_ports(len(base_dirs)), strict=True))
    addresses = local_addresses(ports)
    copy_chief_checkpoints(base_dirs)
    lock = threading.Lock()
    processes: dict[str, subprocess.Popen[str]] = {}
    threads = []
    try:
        for host, base_dir in base_dirs.items():
            process = subprocess.Popen(
                container_train_command(python),
                env=worker_environment(base_dir, addresses, workers=len(base_dirs)),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            processes[host] = process
            thread = threading.Thread(
                target=_prefix_lines, args=(process.stdout, f"[{host}] ", output, lock)
            )
            thread.start()
            threads.append(thread)
        codes = {host: process.wait() for host, process in processes.items()}
    except KeyboardInterrupt:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait()
        raise
    finally:
        for thread in threads:
            thread.join()
    return codes


def _prefix_lines(stream: IO[str] | None, prefix: str, output: IO[str], lock: threading.Lock):
    if stream is None:
        return
    for line in stream:
        with lock:
            output.write(prefix + line)
            output.flush()


def failure_reason(base_dir: Path) -> str:
    failure = SageMakerEnv(base_dir).failure_file
    if failure.is_file():
        return " ".join(failure.read_text(encoding="utf-8", errors="replace").split())
    return "no output/failure file was written; see the log above"
