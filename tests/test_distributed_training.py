"""Distributed training on CPU with real TensorFlow collectives between real processes.

- MirroredStrategy over two logical CPU devices in one process (`TFOD_CPU_DEVICES=2`).
- MultiWorkerMirroredStrategy between two container processes, `algo-1` and `algo-2`, each with
  its own /opt/ml tree, over loopback (`launch local --instance-count 2`, and the same
  environment built by `launch.local` for the fault tests).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_HYPERPARAMETERS, TINY_PIPELINE_YAML, make_base_dir

from sagemaker_tfod.container import cpu_threads
from sagemaker_tfod.container.distribution import SHUTDOWN_GRACE_SECONDS
from sagemaker_tfod.container.logs import line_timestamp
from sagemaker_tfod.container.sagemaker_env import CPU_DEVICES_ENV
from sagemaker_tfod.launch import local

pytestmark = pytest.mark.slow

# Short fault bounds so that the fault tests end quickly (the defaults are 600 s and 60 s).
PEER_TIMEOUT_S = 5
CLUSTER_TIMEOUT_S = 8
# Process exit, logging and the CPU shared with other jobs, on top of the documented bound.
SLACK_S = 20


@dataclass
class Run:
    base_dir: Path
    returncode: int
    log: str

    @property
    def failure(self) -> str:
        path = self.base_dir / "output" / "failure"
        return path.read_text() if path.exists() else ""


def run_worker(base_dir: Path, extra_env: dict[str, str] | None = None, timeout=900) -> Run:
    completed = subprocess.run(
        local.container_train_command(),
        env={**local.worker_environment(base_dir), **(extra_env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Run(base_dir, completed.returncode, completed.stdout + completed.stderr)


def set_hyperparameters(base_dir: Path, **values: str) -> None:
    path = base_dir / "input" / "config" / "hyperparameters.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))


def write_cluster_trees(
    root: Path, channel: Path, hosts: list[str], hyperparameters: dict[str, str]
) -> dict[str, Path]:
    """What `launch local --instance-count N` writes: one SageMaker tree per host."""
    channel_copy = root / "channel"
    if not channel_copy.exists():
        shutil.copytree(channel, channel_copy)
        (channel_copy / "pipeline.yaml").write_text(TINY_PIPELINE_YAML)
    base_dirs = {}
    for host in hosts:
        tree = local.plan_local_tree(hyperparameters, channel_copy, hosts=hosts, current_host=host)
        base_dirs[host] = root / host
        local.write_local_tree(base_dirs[host], tree)
    return base_dirs


def log_time(line: str) -> float:
    """Seconds since the epoch of a `2026-12-01 10:02:12 ...` log line."""
    seconds = line_timestamp(line)
    assert seconds is not None, f"no timestamp in {line!r}"
    return seconds


def first_line(log: str, text: str) -> str:
    return next(line for line in log.splitlines() if text in line)


def model_weights(checkpoint_prefix: Path) -> dict[str, np.ndarray]:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_prefix))
    return {
        name: reader.get_tensor(name)
        for name, dtype in reader.get_variable_to_dtype_map().items()
        if dtype != tf.string
    }


@pytest.fixture(scope="module")
def sharded_channel(synthetic_voc, tmp_path_factory) -> Path:
    """The synthetic set with two train shards, so that two workers can shard by file."""
    from sagemaker_tfod.data_prep.build import build_channel

    channel = tmp_path_factory.mktemp("sharded") / "channel"
    build_channel(synthetic_voc, channel, eval_fraction=0.25, shards=2, workers=1)
    return channel


@pytest.fixture(scope="module")
def mirrored_runs(sharded_channel, tmp_path_factory):
    """Two logical CPU devices: 3 steps, then a second run resuming to 6 (the resume of a
    restarted spot job). Returns both runs and a copy of the checkpoints after the first."""
    base = make_base_dir(
        tmp_path_factory.mktemp("mirrored") / "opt_ml",
        sharded_channel,
        {**TINY_HYPERPARAMETERS, "num_steps": "3"},
    )
    devices = {CPU_DEVICES_ENV: "2"}
    first = run_worker(base, devices)
    after_first = tmp_path_factory.mktemp("mirrored_ckpt_3") / "checkpoints"
    shutil.copytree(base / "checkpoints", after_first)
    set_hyperparameters(base, num_steps="6")
    second = run_worker(base, devices)
    return first, second, after_first


def test_mirrored_strategy_over_two_devices_trains_checkpoints_resumes_and_exports(
    mirrored_runs,
):
    first, second, _ = mirrored_runs
    assert first.returncode == 0, first.log[-3000:]
    assert second.returncode == 0, second.log[-3000:]
    assert "MirroredStrategy over 2 device(s) (/cpu:0, /cpu:1)" in first.log
    threads = cpu_threads.replica_intra_op_threads(os.environ, cpu_threads.available_cores(), 2)
    assert f"2 logical CPU devices, an intra-op pool each of {threads} thread(s)" in first.log
    assert "resuming from step 3 of 6" in second.log
    checkpoints = second.base_dir / "checkpoints"
    assert (checkpoints / "ckpt-3.index").is_file() and (checkpoints / "ckpt-6.index").is_file()
    metrics = json.loads((second.base_dir / "model" / "metrics.json").read_text())
    assert metrics["step"] == 6
    assert metrics["eval"]["overall"]["AP50"] >= 0.0
    assert (second.base_dir / "model" / "saved_model" / "saved_model.pb").is_file()
    before, after = model_weights(checkpoints / "ckpt-3"), model_weights(checkpoints / "ckpt-6")
    assert any(not np.array_equal(before[name], after[name]) for name in before)


def test_a_batch_the_devices_cannot_share_fails_before_training(sharded_channel, tmp_path):
    base = make_base_dir(
        tmp_path / "opt_ml", sharded_channel, {**TINY_HYPERPARAMETERS, "batch_size": "3"}
    )
    run = run_worker(base, {CPU_DEVICES_ENV: "2"})
    assert run.returncode == 1, run.log[-3000:]
    assert run.failure.startswith("hyperparameter batch_size=3 (the global batch) cannot be split")
    assert run.failure.count("\n") == 1
    assert not list((base / "checkpoints").glob("ckpt-*"))


def container_pid(base_dir: Path) -> int:
    """The container process whose SAGEMAKER_BASE_DIR is `base_dir` (Linux /proc)."""
    wanted = f"SAGEMAKER_BASE_DIR={base_dir.resolve()}".encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "environ").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no container process for {base_dir}")


@pytest.fixture(scope="module")
def two_workers(sharded_channel, mirrored_runs, tmp_path_factory):
    """`launch local --instance-count 2` from the chief's step-3 checkpoints (as a restarted
    spot job finds them in S3); once they train, SIGTERM reaches algo-2 only (SageMaker's stop
    reaches the instances at different moments): both must stop after the same loop."""
    root = tmp_path_factory.mktemp("two_workers")
    channel = root / "channel"
    shutil.copytree(sharded_channel, channel)
    (channel / "pipeline.yaml").write_text(TINY_PIPELINE_YAML)
    base = root / "opt_ml"
    shutil.copytree(mirrored_runs[2], base / "algo-1" / "checkpoints")
    hyperparameters = {**TINY_HYPERPARAMETERS, "num_steps": "100000"}
    (root / "none.toml").touch()
    process = subprocess.Popen(
        [sys.executable, "-m", "launch", "local", str(channel), "--base-dir", str(base),
         "--instance-count", "2", "--config", str(root / "none.toml"),
         *(f"--hp={key}={value}" for key, value in hyperparameters.items())],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if line.startswith("[algo-2]") and "progress: step 6/" in line:
                os.kill(container_pid(base / "algo-2"), signal.SIGTERM)
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return base, process.returncode, "".join(lines)


@pytest.fixture(scope="module")
def two_worker_logs(two_workers):
    base, returncode, output = two_workers
    assert returncode == 0, output[-4000:]
    logs = {"algo-1": [], "algo-2": []}
    for line in output.splitlines():
        host, _, rest = line.partition("] ")
        if host.lstrip("[") in logs:
            logs[host.lstrip("[")].append(rest)
    return base, {host: "\n".join(lines) for host, lines in logs.items()}


def stop_step(log: str) -> int:
    return int(re.search(r"stopping at step (\d+) on request", log).group(1))


def test_two_workers_train_one_model_resumed_from_the_chiefs_checkpoints(two_worker_logs):
    base, logs = two_worker_logs
    for host, log in logs.items():
        assert f"this is {host} (worker {int(host[-1]) - 1}" in log
        assert "resuming from step 3 of 100000" in log, host  # both from the chief's checkpoint
    step = stop_step(logs["algo-1"])
    assert step == stop_step(logs["algo-2"]) >= 6  # the same final step on both
    assert "SIGTERM received" in logs["algo-2"] and "SIGTERM received" not in logs["algo-1"]
    chief = model_weights(base / "algo-1" / "checkpoints" / f"ckpt-{step}")
    worker = model_weights(base / "algo-2" / "scratch" / "checkpoints" / f"ckpt-{step}")
    assert chief.keys() == worker.keys()
    for name in chief:  # the all-reduce ran: the workers' different batches gave one model
        assert np.array_equal(chief[name], worker[name]), name
    start = model_weights(base / "algo-1" / "checkpoints" / "ckpt-3")
    assert any(not np.array_equal(start[name], chief[name]) for name in start)


def test_only_the_chief_writes_and_evaluates_once(two_worker_logs):
    base, logs = two_worker_logs
    chief, worker = base / "algo-1", base / "algo-2"
    step = stop_step(logs["algo-1"])
    assert (chief / "model" / "saved_model" / "saved_model.pb").is_file()
    metrics = json.loads((chief / "model" / "metrics.json").read_text())
    assert (metrics["step"], metrics["stopped_early"]) == (step, True)
    assert {p.name for p in (chief / "checkpoints").iterdir()} >= {f"ckpt-{step}.index"}
    assert list((chief / "output" / "tensorboard" / "train").glob("events.out.tfevents*"))
    # The other worker writes nothing SageMaker syncs or uploads: its checkpoints/ holds only
    # the chief's step-3 files that launch local copied in (as SageMaker copies them from S3).
    assert not list((worker / "model").iterdir())
    copied = {p.name: p.read_bytes() for p in (chief / "checkpoints").glob("ckpt-3.*")}
    assert {p.name for p in (worker / "checkpoints").iterdir()} == {*copied, "checkpoint"}
    assert {n: (worker / "checkpoints" / n).read_bytes() for n in copied} == copied
    assert not list((worker / "output" / "tensorboard").rglob("events.*"))
    assert list((worker / "scratch" / "checkpoints").glob(f"ckpt-{step}.*"))
    assert logs["algo-1"].count("evaluating the SavedModel") == 1
    assert "evaluating the SavedModel" not in logs["algo-2"]
    assert f"metric step={step} total_loss=" in logs["algo-1"]
    assert "metric step=" not in logs["algo-2"]  # one copy of each metric for SageMaker
    assert "stopped sending heartbeats" not in logs["algo-1"]  # the worker waited for the chief


@pytest.mark.parametrize("train_shards", [2, 1])
def test_each_worker_reads_its_own_part_of_the_data(
    synthetic_voc, sharded_channel, tmp_path, train_shards
):
    """The training input each worker builds (Model Garden's InputReader with the container's
    config and the input context MultiWorkerMirroredStrategy gives worker i of 2): by file with
    two shards, by example with one; either way each epoch's examples are split."""
    import tensorflow as tf
    from official.core import input_reader

    from sagemaker_tfod.container.hyperparameters import parse_hyperparameters
    from sagemaker_tfod.container.pipeline_config import DataPaths, build_experiment
    from sagemaker_tfod.container.presets import get_preset
    from sagemaker_tfod.data_prep.build import build_channel

    channel = sharded_channel
    if train_shards == 1:
        channel = tmp_path / "channel"
        build_channel(synthetic_voc, channel, eval_fraction=0.25, shards=1, workers=1)
    shards = sorted(channel.glob("train-*.tfrecord"))
    assert len(shards) == train_shards
    hp = parse_hyperparameters(TINY_HYPERPARAMETERS)
    params = build_experiment(
        get_preset(hp.model), hp, 3, DataPaths(str(channel / "train-*.tfrecord"), None, 0)
    )
    config = params.task.train_data
    config.shuffle_buffer_size = 1  # keep file order visible; the split happens before this
    feature = {"image/key/sha256": tf.io.FixedLenFeature([], tf.string)}
    every = [bytes(r.numpy()) for s in shards for r in tf.data.TFRecordDataset(str(s))]
    keys = {}
    for worker in range(2):
        reader = input_reader.InputReader(
            params=config,
            dataset_fn=tf.data.TFRecordDataset,
            decoder_fn=lambda record: tf.io.parse_single_example(record, feature),
        )
        context = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=worker, num_replicas_in_sync=2
        )
        batches = reader.read(input_context=context).take(len(every) // 2)
        keys[worker] = [bytes(b["image/key/sha256"].numpy()[0]) for b in batches]
    assert len(set(keys[0])) == len(keys[0]) == len(every) // 2
    assert not set(keys[0]) & set(keys[1])
    all_keys = {tf.io.parse_single_example(r, feature)["image/key/sha256"].numpy() for r in every}
    assert set(keys[0]) | set(keys[1]) == all_keys


def start_worker(base_dir: Path, addresses: str) -> subprocess.Popen:
    return subprocess.Popen(
        local.container_train_command(),
        env=local.worker_environment(base_dir, addresses, workers=2),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_killing_a_worker_mid_run_fails_the_chief_within_the_bound(sharded_channel, tmp_path):
    hosts = ["algo-1", "algo-2"]
    base_dirs = write_cluster_trees(
        tmp_path,
        sharded_channel,
        hosts,
        {**TINY_HYPERPARAMETERS, "num_steps": "100000", "log_interval_steps": "1",
         "peer_timeout_seconds": str(PEER_TIMEOUT_S), "checkpoint_interval_steps": "100000"},
    )  # fmt: skip
    ports = dict(zip(hosts, local.free_ports(2), strict=True))
    addresses = local.local_addresses(ports)
    chief = start_worker(base_dirs["algo-1"], addresses)
    worker = start_worker(base_dirs["algo-2"], addresses)
    chief_log: list[str] = []
    try:
        for line in chief.stdout:  # until the two train together
            chief_log.append(line)
            if "progress: step 2/" in line:
                break
        os.kill(worker.pid, signal.SIGKILL)
        killed = time.monotonic()
        chief_log.extend(chief.stdout)
        chief.wait(timeout=PEER_TIMEOUT_S + SHUTDOWN_GRACE_SECONDS + SLACK_S)
        elapsed = time.monotonic() - killed
    finally:
        for process in (chief, worker):
            if process.poll() is None:
                process.kill()
            process.wait()
    assert chief.returncode == 1, "".join(chief_log)[-3000:]
    failure = (base_dirs["algo-1"] / "output" / "failure").read_text()
    assert failure.startswith("worker algo-1: algo-2 stopped responding"), failure
    assert failure.count("\n") == 1
    assert elapsed <= PEER_TIMEOUT_S + SHUTDOWN_GRACE_SECONDS + SLACK_S


def test_a_worker_that_never_joins_fails_the_chief_within_the_deadline(sharded_channel, tmp_path):
    hosts = ["algo-1", "algo-2"]
    base_dirs = write_cluster_trees(
        tmp_path,
        sharded_channel,
        hosts,
        {**TINY_HYPERPARAMETERS, "cluster_timeout_seconds": str(CLUSTER_TIMEOUT_S)},
    )
    ports = dict(zip(hosts, local.free_ports(2), strict=True))
    run = run_worker(
        base_dirs["algo-1"], {"TFOD_LOCAL_HOST_ADDRESSES": local.local_addresses(ports)}
    )
    assert run.returncode == 1, run.log[-3000:]
    assert run.failure.startswith("worker algo-1: algo-2 did not join the cluster in time")
    waited = log_time(first_line(run.log, "training failed")) - log_time(
        first_line(run.log, "TF_CONFIG=")
    )
    assert waited <= CLUSTER_TIMEOUT_S + SHUTDOWN_GRACE_SECONDS + SLACK_S


def test_a_host_name_that_never_resolves_fails_within_the_deadline(sharded_channel, tmp_path):
    hosts = ["algo-1", "algo-2.invalid"]  # RFC 2606: .invalid never resolves
    base_dirs = write_cluster_trees(
        tmp_path,
        sharded_channel,
        hosts,
        {**TINY_HYPERPARAMETERS, "cluster_timeout_seconds": str(CLUSTER_TIMEOUT_S)},
    )
    port = local.free_ports(1)[0]
    run = run_worker(base_dirs["algo-1"], {"TFOD_LOCAL_HOST_ADDRESSES": f"algo-1=127.0.0.1:{port}"})
    assert run.returncode == 1, run.log[-3000:]
    assert run.failure.startswith(
        f"worker algo-1: host name(s) algo-2.invalid from resourceconfig.json did not resolve "
        f"within {CLUSTER_TIMEOUT_S} s"
    )
    waited = log_time(first_line(run.log, "training failed")) - log_time(
        first_line(run.log, "waiting for host name(s) algo-2.invalid")
    )
    assert CLUSTER_TIMEOUT_S - 1 <= waited <= CLUSTER_TIMEOUT_S + SLACK_S
