"""container.cpu_threads: each replica sharing a CPU gets its share of TensorFlow's threads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sagemaker_tfod.container.cpu_threads import (
    INTRA_OP_THREADS_ENV,
    PER_DEVICE_POOLS_ENV,
    available_cores,
    logical_devices_environment,
    pools_per_device,
    replica_intra_op_threads,
    shared_cpu_environment,
    threads_per_replica,
    user_intra_op_threads,
)
from sagemaker_tfod.launch import local


@pytest.mark.parametrize(
    ("cores", "replicas", "threads"), [(2, 1, 2), (2, 2, 1), (8, 2, 4), (7, 2, 3), (2, 4, 1)]
)
def test_each_replica_gets_an_even_share_of_at_least_one_thread(cores, replicas, threads):
    assert threads_per_replica(cores, replicas) == threads


def test_a_share_of_nothing_is_refused():
    with pytest.raises(ValueError, match="replicas=0"):
        threads_per_replica(4, 0)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux's affinity mask")
def test_available_cores_counts_this_process_affinity():
    assert available_cores() == len(os.sched_getaffinity(0)) <= (os.cpu_count() or 1)


def test_logical_devices_get_a_pool_each_unless_the_user_chose():
    assert logical_devices_environment({}) == {PER_DEVICE_POOLS_ENV: "1"}
    assert pools_per_device(logical_devices_environment({}))
    assert logical_devices_environment({PER_DEVICE_POOLS_ENV: "false"}) == {}
    assert not pools_per_device({PER_DEVICE_POOLS_ENV: "false"})
    assert pools_per_device({PER_DEVICE_POOLS_ENV: "True"})


@pytest.mark.parametrize(
    ("text", "threads"), [("3", 3), (" 2 ", 2), ("0", None), ("x", None), ("\u00b2", None)]
)
def test_only_a_positive_user_setting_counts(text, threads):
    assert user_intra_op_threads({INTRA_OP_THREADS_ENV: text}) == threads


def test_several_replicas_get_their_share_and_one_is_left_alone():
    assert shared_cpu_environment({"A": "1"}, replicas=2, cores=8) == {
        "A": "1",
        INTRA_OP_THREADS_ENV: "4",
    }
    assert shared_cpu_environment({"A": "1"}, replicas=1, cores=8) == {"A": "1"}


def test_the_users_own_setting_wins():
    environ = {INTRA_OP_THREADS_ENV: "6"}
    assert shared_cpu_environment(environ, replicas=2, cores=8)[INTRA_OP_THREADS_ENV] == "6"
    assert replica_intra_op_threads(environ, cores=8, replicas=2) == 6
    assert replica_intra_op_threads({INTRA_OP_THREADS_ENV: "0"}, cores=8, replicas=2) == 4


def test_local_workers_share_the_machine(tmp_path: Path):
    two = local.worker_environment(tmp_path, "algo-1=127.0.0.1:1", environ={}, workers=2, cores=4)
    assert two[INTRA_OP_THREADS_ENV] == "2"
    assert two["SAGEMAKER_BASE_DIR"] == str(tmp_path.resolve())
    one = local.worker_environment(tmp_path, environ={}, cores=4)
    assert INTRA_OP_THREADS_ENV not in one
