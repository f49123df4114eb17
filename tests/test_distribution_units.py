"""container.distribution's pure parts: the plan, TF_CONFIG, batches, peer waits, messages."""

from __future__ import annotations

import dataclasses
import json

import pytest

from sagemaker_tfod.container import distribution
from sagemaker_tfod.container.distribution import (
    Kind,
    PeerFailure,
    build_tf_config,
    check_batch_size,
    eval_batching,
    failed_hosts,
    input_sharding_warning,
    parse_local_addresses,
    plan_distribution,
    sorted_hosts,
    wait_for_peers,
)
from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.sagemaker_env import ConfigFileError, ResourceConfig, SageMakerEnv


def resource(current: str, hosts: list[str]) -> ResourceConfig:
    return ResourceConfig.from_json(
        {"current_host": current, "hosts": hosts, "network_interface_name": "eth0"}, "rc.json"
    )


def test_hosts_sort_with_numbers_as_numbers():
    assert sorted_hosts(["algo-10", "algo-2", "algo-1"]) == ("algo-1", "algo-2", "algo-10")


def test_tf_config_lists_sorted_hosts_on_the_fixed_port_with_this_hosts_index():
    plan = plan_distribution(resource("algo-2", ["algo-3", "algo-1", "algo-2"]), gpus=[])
    assert plan.kind is Kind.MULTI_WORKER
    assert (plan.worker_index, plan.chief_host, plan.is_chief) == (1, "algo-1", False)
    assert build_tf_config(plan.addresses, plan.worker_index) == {
        "cluster": {"worker": ["algo-1:2222", "algo-2:2222", "algo-3:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    json.dumps(build_tf_config(plan.addresses, 0))  # TF_CONFIG is JSON
    with pytest.raises(ValueError):
        build_tf_config(plan.addresses, 3)


def test_local_addresses_replace_names_and_ports():
    mapping = parse_local_addresses("algo-1=127.0.0.1:41001, algo-2=127.0.0.1:41002")
    plan = plan_distribution(resource("algo-1", ["algo-1", "algo-2"]), [], 1, mapping)
    assert plan.addresses == ("127.0.0.1:41001", "127.0.0.1:41002")
    assert parse_local_addresses("") == {}
    with pytest.raises(UserError, match="HOST=ADDRESS:PORT"):
        parse_local_addresses("algo-1=127.0.0.1")


@pytest.mark.parametrize(
    ("hosts", "gpus", "cpu_devices", "kind", "devices", "replicas"),
    [
        (["algo-1"], [], 1, Kind.DEFAULT, ("/cpu:0",), 1),
        (["algo-1"], ["GPU:0"], 1, Kind.DEFAULT, ("/gpu:0",), 1),
        (["algo-1"], ["GPU:0", "GPU:1", "GPU:2", "GPU:3"], 1, Kind.MIRRORED, 4, 4),
        (["algo-1"], [], 2, Kind.MIRRORED, ("/cpu:0", "/cpu:1"), 2),
        (["algo-1", "algo-2"], ["GPU:0", "GPU:1"], 1, Kind.MULTI_WORKER, 2, 4),
        (["algo-1", "algo-2"], [], 2, Kind.MULTI_WORKER, ("/cpu:0",), 2),
    ],
)
def test_strategy_follows_hosts_and_devices(hosts, gpus, cpu_devices, kind, devices, replicas):
    plan = plan_distribution(resource("algo-1", hosts), gpus, cpu_devices)
    assert plan.kind is kind
    if isinstance(devices, int):
        assert len(plan.local_devices) == devices
    else:
        assert plan.local_devices == devices
    assert plan.num_replicas == replicas
    assert plan.is_chief


def test_resource_config_is_validated(tmp_path):
    assert ResourceConfig.from_json({}, "x").hosts == ("algo-1",)  # no file: one host
    with pytest.raises(ConfigFileError, match="current_host"):
        ResourceConfig.from_json({"current_host": "algo-3", "hosts": ["algo-1"]}, "rc")
    with pytest.raises(ConfigFileError, match="non-empty list"):
        ResourceConfig.from_json({"current_host": "algo-1", "hosts": "algo-1"}, "rc")
    with pytest.raises(ConfigFileError, match="twice"):
        ResourceConfig.from_json({"current_host": "algo-1", "hosts": ["algo-1", "algo-1"]}, "rc")
    env = SageMakerEnv(tmp_path)
    env.config_dir.mkdir(parents=True)
    env.resource_config_file.write_text(
        json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"],
                    "network_interface_name": "ethwe"})
    )  # fmt: skip
    assert env.resource_config() == ResourceConfig("algo-2", ("algo-1", "algo-2"), "ethwe")


def test_a_batch_the_replicas_cannot_share_is_refused_naming_the_hyperparameter():
    plan = plan_distribution(resource("algo-1", ["algo-1", "algo-2"]), ["GPU:0", "GPU:1"])
    check_batch_size(16, plan)
    with pytest.raises(UserError) as refused:
        check_batch_size(10, plan)
    message = str(refused.value)
    assert message.startswith("hyperparameter batch_size=10")
    assert "4 replicas (2 host(s) x 2 device(s))" in message and "e.g. 8 or 12" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("num_eval", "local", "workers", "expected"),
    [
        (6, 1, 1, (6, 1, 6)),  # as before: the largest batch <= 8 dividing the eval set
        (13, 1, 1, (1, 13, 13)),
        (6, 2, 1, (6, 1, 6)),
        (7, 2, 1, (6, 1, 6)),  # one image does not fill a batch of two devices
        (6, 1, 2, (12, 1, 6)),  # every worker evaluates all six
        (20, 4, 2, (8, 5, 20)),  # batches of 4 per worker cover all 20; of 8 only 16
        (1, 2, 1, (8, 0, 0)),
    ],
)
def test_eval_batches_fit_the_devices(num_eval, local, workers, expected):
    batching = eval_batching(num_eval, local, workers)
    assert (batching.global_batch, batching.steps, batching.images) == expected


def test_few_shards_for_many_workers_say_how_to_rebuild_the_channel():
    assert input_sharding_warning(1, 1) is None
    assert input_sharding_warning(4, 2) is None
    warning = input_sharding_warning(1, 2)
    assert "1 train shard(s) for 2 workers" in warning
    assert "python -m data_prep build --shards 2" in warning


def test_peer_wait_retries_then_fails_with_the_names_within_the_deadline():
    plan = plan_distribution(resource("algo-1", ["algo-1", "algo-2", "algo-3"]), [])
    now = [0.0]
    tries: dict[str, int] = {}

    def resolve(host):
        tries[host] = tries.get(host, 0) + 1
        if host == "algo-3" or (host == "algo-2" and tries[host] < 3):
            raise OSError("not yet")

    def sleep(seconds):
        now[0] += seconds

    with pytest.raises(PeerFailure) as failed:
        wait_for_peers(plan, 10, resolve, clock=lambda: now[0], sleep=sleep)
    assert "algo-3" in str(failed.value) and "algo-2" not in str(failed.value)
    assert "within 10 s" in str(failed.value)
    assert now[0] == pytest.approx(10.0)  # gave up at the deadline, not before or after
    assert tries["algo-2"] == 3  # late names are retried until they resolve
    tries.clear()
    wait_for_peers(plan, 10, lambda host: None, clock=lambda: now[0], sleep=sleep)


def test_tensorflow_task_names_become_host_names():
    plan = plan_distribution(resource("algo-1", ["algo-1", "algo-2", "algo-3"]), [])
    message = (
        "The following tasks are unhealthy (stopped sending heartbeats):\n"
        "/job:worker/replica:0/task:2\n/job:worker/task:0"
    )
    assert failed_hosts(message, plan) == ["algo-3"]
    text = distribution.describe_peer_failure(RuntimeError(message), plan, 60)
    assert text.startswith("worker algo-1: algo-3 stopped responding (no heartbeat for 60 s)")
    assert "\n" not in text


# ---- launch: the multi-instance request and local trees -------------------------------------


def test_train_refuses_a_batch_that_does_not_split_over_the_instances():
    from sagemaker_tfod.launch.errors import LaunchError
    from sagemaker_tfod.launch.training_job import TrainingJobSpec, validate_spec

    spec = TrainingJobSpec(
        job_name="j",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
        role_arn="arn:aws:iam::123456789012:role/r",
        training_s3_uri="s3://my-bucket/c",
        output_s3_uri="s3://my-bucket/o",
        checkpoint_s3_uri="s3://my-bucket/k",
        instance_type="ml.g4dn.12xlarge",
        instance_count=2,
        hyperparameters={"batch_size": 9},
    )
    with pytest.raises(LaunchError, match=r"batch_size=9 is the global batch .* 2 instances"):
        validate_spec(spec)
    validate_spec(dataclasses.replace(spec, hyperparameters={"batch_size": "16"}))
    validate_spec(dataclasses.replace(spec, instance_count=1))


def test_local_cluster_gives_every_host_its_own_tree_naming_all_hosts(tmp_path):
    from sagemaker_tfod.launch import local

    channel = tmp_path / "channel"
    channel.mkdir()
    trees = local.plan_local_cluster({"num_steps": "5"}, channel, instance_count=2)
    assert list(trees) == ["algo-1", "algo-2"]
    for host, tree in trees.items():
        config = json.loads(tree.files["input/config/resourceconfig.json"])
        assert config["current_host"] == host and config["hosts"] == ["algo-1", "algo-2"]
        assert ResourceConfig.from_json(config, "x").current_host == host
    assert local.host_base_dir(tmp_path, "algo-2", 2) == tmp_path / "algo-2"
    assert local.host_base_dir(tmp_path, "algo-1", 1) == tmp_path  # one host: as before
    ports = local.free_ports(2)
    assert len(set(ports)) == 2
    mapping = parse_local_addresses(local.local_addresses(dict(zip(trees, ports, strict=True))))
    assert mapping == {"algo-1": f"127.0.0.1:{ports[0]}", "algo-2": f"127.0.0.1:{ports[1]}"}


def test_local_cluster_copies_the_chiefs_checkpoints_to_every_host(tmp_path):
    from sagemaker_tfod.launch import local

    base_dirs = {host: tmp_path / host for host in ("algo-1", "algo-2")}
    chief = base_dirs["algo-1"] / "checkpoints"
    chief.mkdir(parents=True)
    (chief / "ckpt-3.index").write_text("chief")
    stale = base_dirs["algo-2"] / "checkpoints"
    stale.mkdir(parents=True)
    (stale / "ckpt-1.index").write_text("old")
    local.copy_chief_checkpoints(base_dirs)
    assert sorted(p.name for p in stale.iterdir()) == ["ckpt-3.index"]
    assert (chief / "ckpt-3.index").read_text() == "chief"  # the source is untouched


def test_launch_local_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, sagemaker_tfod.launch.cli; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_metric_lines_are_logged_as_training_lines():
    from sagemaker_tfod.container import training

    assert distribution.METRIC_LOGGER is training.logger
