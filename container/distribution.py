"""Which TensorFlow distribution strategy trains, chosen from SageMaker's cluster description.

| hosts | devices on this host | strategy |
|---|---|---|
| 1 | 1 (CPU or one GPU) | TensorFlow's default strategy (what the container always used) |
| 1 | N > 1 GPUs | `MirroredStrategy` over all of them |
| M > 1 | any | `MultiWorkerMirroredStrategy`: one worker per host, each over all its GPUs |

Multi-instance jobs: every host sorts `resourceconfig.json`'s `hosts` the same way (numbers
compared as numbers, so `algo-2` comes before `algo-10`); a host's place in that list is its
worker index, and the first host (`algo-1`) is the chief, the only one that writes `model/`,
`metrics.json`, pictures, TensorBoard events and the checkpoints SageMaker syncs to S3
(`Distribution.is_chief` is the one place that question is asked). The others keep what the
strategy needs (their copy of each checkpoint, summaries) in `/opt/ml/scratch`. `TF_CONFIG` is
`{"cluster": {"worker": ["algo-1:2222", ...]}, "task": {"type": "worker", "index": i}}`: every
worker listens on `WORKER_PORT`.

Faults are bounded by TensorFlow's coordination service, configured here before the strategy
exists (hyperparameters `cluster_timeout_seconds` and `peer_timeout_seconds`):
- peers' names must resolve within `cluster_timeout_seconds` (SageMaker's documentation warns
  that they may resolve late, so each is retried every few seconds), and every worker must join
  the cluster within `cluster_timeout_seconds` of the first one (a registration barrier);
- a worker that stops sending heartbeats for `peer_timeout_seconds` (killed, out of memory,
  instance lost) aborts the collectives of every other worker, which then fail within about
  `peer_timeout_seconds` + `SHUTDOWN_GRACE_SECONDS` with `output/failure` naming the host.

Locally (`python -m launch local --instance-count 2`) the hosts are processes on one machine,
which cannot resolve `algo-N` and cannot all listen on one port (TensorFlow's server binds every
address of its port). `TFOD_LOCAL_HOST_ADDRESSES="algo-1=127.0.0.1:41001,algo-2=127.0.0.1:41002"`
maps names to loopback addresses for such runs; a host it does not name is resolved normally.
`TFOD_CPU_DEVICES=N` splits the CPU into N logical devices, so that tests and benchmarks can run
the multi-device path (`MirroredStrategy`) without GPUs; each device then gets an intra-op
thread pool of its own, of an even share of the cores (`container/cpu_threads.py`), so that the
replicas run side by side rather than queueing for the same threads.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import pathlib
import re
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from sagemaker_tfod.container import cpu_threads
from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.sagemaker_env import (
    CPU_DEVICES_ENV,
    LOCAL_ADDRESSES_ENV,
    ConfigFileError,
    ResourceConfig,
    SageMakerEnv,
)

logger = logging.getLogger(__name__)
# container.training's logger (not imported: it would bring Model Garden into this module).
METRIC_LOGGER = logging.getLogger("sagemaker_tfod.container.training")

WORKER_PORT = 2222
TF_CONFIG_ENV = "TF_CONFIG"
# Seconds between two attempts to resolve a peer's name.
RESOLVE_RETRY_SECONDS = 2.0
# How long a failed worker waits for its peers to acknowledge shutdown before it exits anyway.
SHUTDOWN_GRACE_SECONDS = 10
# Below this many images per device, BatchNorm statistics are noisy (Model Garden's
# `use_sync_bn: true` in pipeline.yaml computes them over the global batch instead).
SMALL_PER_REPLICA_BATCH = 4
EVAL_BATCH_PER_WORKER_MAX = 8
# The barrier where the other workers wait for the chief's evaluation and exports.
FINISH_BARRIER = "sagemaker_tfod_chief_exported"
FINISH_TIMEOUT_S = 24 * 3600


class Kind(enum.Enum):
    DEFAULT = "default"
    MIRRORED = "mirrored"
    MULTI_WORKER = "multi_worker"


class PeerFailure(UserError):
    """Another worker of a multi-instance job failed, never arrived or could not be reached."""


# ---- pure functions: the plan ---------------------------------------------------------------


def host_sort_key(name: str) -> tuple[Any, ...]:
    """`algo-2` before `algo-10`: digit runs compare as numbers."""
    return tuple(
        (0, int(part), "") if part.isdigit() else (1, 0, part)
        for part in re.split(r"(\d+)", name)
        if part
    )


def sorted_hosts(hosts: Sequence[str]) -> tuple[str, ...]:
    return tuple(sorted(hosts, key=host_sort_key))


def parse_local_addresses(text: str) -> dict[str, str]:
    """`algo-1=127.0.0.1:41001,algo-2=127.0.0.1:41002` -> {host: "address:port"}."""
    addresses: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        host, _, address = item.partition("=")
        _, colon, port = address.rpartition(":")
        if not host or not colon or not port.isdigit():
            raise UserError(
                f"{LOCAL_ADDRESSES_ENV}: {item!r} is not HOST=ADDRESS:PORT "
                "(e.g. algo-1=127.0.0.1:41001); fix or unset the variable"
            )
        addresses[host.strip()] = address.strip()
    return addresses


def worker_addresses(
    hosts: Sequence[str], local_addresses: Mapping[str, str], port: int = WORKER_PORT
) -> tuple[str, ...]:
    """`host:port` of every worker, in worker order; local mappings replace names."""
    return tuple(local_addresses.get(host, f"{host}:{port}") for host in hosts)


def build_tf_config(addresses: Sequence[str], worker_index: int) -> dict[str, Any]:
    """The `TF_CONFIG` of worker `worker_index` (MultiWorkerMirroredStrategy, no chief job:
    worker 0 is the chief)."""
    if not 0 <= worker_index < len(addresses):
        raise ValueError(f"worker index {worker_index} outside 0..{len(addresses) - 1}")
    return {
        "cluster": {"worker": list(addresses)},
        "task": {"type": "worker", "index": worker_index},
    }


def choose_kind(num_hosts: int, num_local_devices: int) -> Kind:
    if num_hosts > 1:
        return Kind.MULTI_WORKER
    return Kind.MIRRORED if num_local_devices > 1 else Kind.DEFAULT


@dataclass(frozen=True)
class Plan:
    """Everything about the distribution that is known before TensorFlow starts."""

    kind: Kind
    hosts: tuple[str, ...]  # sorted: worker order
    current_host: str
    addresses: tuple[str, ...]  # host:port per worker (multi-worker only)
    local_devices: tuple[str, ...]  # device names this host trains on

    @property
    def worker_index(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def num_workers(self) -> int:
        return len(self.hosts)

    @property
    def chief_host(self) -> str:
        return self.hosts[0]

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0

    @property
    def num_replicas(self) -> int:
        """Replicas in sync, assuming every host has as many devices as this one (SageMaker's
        clusters are homogeneous; MultiWorkerMirroredStrategy assumes it too)."""
        return self.num_workers * max(1, len(self.local_devices))

    def describe(self) -> str:
        devices = f"{len(self.local_devices)} device(s) ({', '.join(self.local_devices)})"
        if self.kind is Kind.MULTI_WORKER:
            return (
                f"MultiWorkerMirroredStrategy: {self.num_workers} workers "
                f"({', '.join(self.hosts)}), this is {self.current_host} (worker "
                f"{self.worker_index}{', chief' if self.is_chief else ''}) with {devices}"
            )
        if self.kind is Kind.MIRRORED:
            return f"MirroredStrategy over {devices}"
        return f"default strategy on {devices}"


def plan_distribution(
    resource: ResourceConfig,
    gpus: Sequence[str],
    cpu_devices: int = 1,
    local_addresses: Mapping[str, str] | None = None,
) -> Plan:
    """The plan for this host: `gpus` are its visible GPU names, `cpu_devices` the number of
    logical CPU devices it splits its CPU into when it has no GPU."""
    hosts = sorted_hosts(resource.hosts)
    if gpus:
        devices = tuple(f"/gpu:{i}" for i in range(len(gpus)))
    else:
        devices = tuple(f"/cpu:{i}" for i in range(max(1, cpu_devices)))
    kind = choose_kind(len(hosts), len(devices))
    addresses = worker_addresses(hosts, local_addresses or {}) if len(hosts) > 1 else ()
    if kind is Kind.MULTI_WORKER and not gpus:
        # MultiWorkerMirroredStrategy runs one CPU replica per worker.
        devices = ("/cpu:0",)
    return Plan(kind, hosts, resource.current_host, addresses, devices)


def check_batch_size(batch_size: int, plan: Plan, replicas: int | None = None) -> None:
    """The global batch must split evenly over the replicas; warn when each gets very few."""
    replicas = replicas or plan.num_replicas
    if batch_size % replicas:
        lower = max(replicas, batch_size - batch_size % replicas)
        raise UserError(
            f"hyperparameter batch_size={batch_size} (the global batch) cannot be split evenly "
            f"over {replicas} replicas ({plan.num_workers} host(s) x "
            f"{len(plan.local_devices)} device(s)); use a multiple of {replicas}, e.g. {lower} "
            f"or {lower + replicas}"
        )
    if replicas > 1 and batch_size // replicas < SMALL_PER_REPLICA_BATCH:
        logger.warning(
            "batch_size=%d over %d replicas is %d image(s) per device: BatchNorm statistics "
            "are computed per device and will be noisy; raise batch_size (and learning_rate "
            "with it), or set task.model.norm_activation.use_sync_bn: true in pipeline.yaml",
            batch_size,
            replicas,
            batch_size // replicas,
        )


@dataclass(frozen=True)
class EvalBatching:
    """Model Garden's in-training evaluation: `global_batch` for its config, `steps` per
    evaluation, `images` evaluated of the eval split (the rest do not fill a batch)."""

    global_batch: int
    steps: int
    images: int


def eval_batching(num_eval: int, local_replicas: int, num_workers: int) -> EvalBatching:
    """Batches for evaluating every eval image on each worker (the eval split is not sharded
    across workers: COCO metrics need all images in one place, and the split is small).

    Each worker's batch is a multiple of its local replicas, at most 8 per worker (or one per
    replica), chosen to evaluate as many images as possible, then as large as possible; with
    one replica that is the largest batch <= 8 dividing the eval set."""
    candidates = range(local_replicas, max(EVAL_BATCH_PER_WORKER_MAX, local_replicas) + 1)
    per_worker = max(
        (batch for batch in candidates if batch % local_replicas == 0),
        key=lambda batch: (num_eval // batch * batch, batch),
    )
    steps = num_eval // per_worker
    return EvalBatching(per_worker * num_workers, steps, steps * per_worker)


def input_sharding_warning(num_train_shards: int, num_workers: int) -> str | None:
    """None when every worker can read its own train files; otherwise what to do."""
    if num_workers <= 1 or num_train_shards >= num_workers:
        return None
    return (
        f"the channel has {num_train_shards} train shard(s) for {num_workers} workers: every "
        f"worker reads all of them and keeps one example in {num_workers} (each reads "
        f"{num_workers}x the data it trains on); rebuild the channel with "
        f"`python -m data_prep build --shards {num_workers}` (or a multiple of {num_workers}) "
        "so that each worker reads files of its own"
    )


_TASK_RE = re.compile(r"/job:worker/(?:replica:\d+/)?task:(\d+)")


def failed_hosts(message: str, plan: Plan) -> list[str]:
    """Hosts named (as TensorFlow tasks) in a collective or coordination error, in order."""
    hosts: list[str] = []
    for match in _TASK_RE.finditer(message):
        index = int(match.group(1))
        host = plan.hosts[index] if index < plan.num_workers else f"worker {index}"
        if host != plan.current_host and host not in hosts:
            hosts.append(host)
    return hosts


def describe_peer_failure(error: Exception, plan: Plan, peer_timeout_s: int) -> str:
    message = str(error)
    peers = failed_hosts(message, plan) or [h for h in plan.hosts if h != plan.current_host]
    names = ", ".join(peers)
    if "register" in message.lower() or "barrier timed out" in message.lower():
        what = f"{names} did not join the cluster in time"
        fix = "check that host's log: it may have failed to start"
    elif "heartbeat" in message.lower() or "unhealthy" in message.lower():
        what = f"{names} stopped responding (no heartbeat for {peer_timeout_s} s)"
        fix = "its log says why (killed, out of memory, instance lost)"
    else:
        what = f"the connection to {names} failed"
        fix = "its log says why"
    first = " ".join(message.split())[:200]
    return (
        f"worker {plan.current_host}: {what}; {fix}; the job stops because every worker must "
        f"take part in each step; start it again with the same checkpoint S3 URI to resume "
        f"from the last checkpoint ({first})"
    )


# ---- I/O: resolution, TensorFlow setup -----------------------------------------------------


def resolve_host(host: str) -> None:
    """Raises OSError when `host` does not resolve (socket.getaddrinfo)."""
    socket.getaddrinfo(host, None)


def wait_for_peers(
    plan: Plan,
    timeout_s: float,
    resolve: Callable[[str], None] = resolve_host,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Retry every worker's address until all resolve; UserError naming those that did not
    within `timeout_s`."""
    deadline = clock() + timeout_s
    pending = list(dict.fromkeys(address.rpartition(":")[0] for address in plan.addresses))
    attempts = 0
    while True:
        attempts += 1
        still = []
        for host in pending:
            try:
                resolve(host)
            except OSError:
                still.append(host)
        pending = still
        if not pending:
            if attempts > 1:
                logger.info("every worker's name resolves (after %d attempts)", attempts)
            return
        if clock() >= deadline:
            raise PeerFailure(
                f"worker {plan.current_host}: host name(s) {', '.join(pending)} from "
                f"resourceconfig.json did not resolve within {timeout_s:g} s ({attempts} "
                "attempts); those instances may have failed to start: see their logs, or raise "
                "the hyperparameter cluster_timeout_seconds"
            )
        if attempts == 1:
            logger.info("waiting for host name(s) %s to resolve", ", ".join(pending))
        sleep(min(RESOLVE_RETRY_SECONDS, max(0.0, deadline - clock())))


def _configure_cpu_devices(count: int) -> None:
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
    # Read when the runtime creates the devices, which has not happened yet.
    os.environ.update(cpu_threads.logical_devices_environment(os.environ))
    threads = cpu_threads.replica_intra_op_threads(os.environ, cpu_threads.available_cores(), count)
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    pools = (
        "an intra-op pool each" if cpu_threads.pools_per_device(os.environ) else "one shared pool"
    )
    logger.info("%d logical CPU devices, %s of %d thread(s)", count, pools, threads)


def _configure_coordination_service(
    plan: Plan, cluster_timeout_s: int, peer_timeout_s: int
) -> None:
    """TensorFlow's coordination service with bounded waits; must run before the strategy.

    `configure_coordination_service` is what MultiWorkerMirroredStrategy itself calls (with
    TensorFlow's defaults, when nothing is configured yet). Its `cluster_register_with_barrier`
    field has no argument: without it the chief registers at once and then waits for the
    others without any limit."""
    from tensorflow.python.eager import context  # no public API sets these timeouts

    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader="/job:worker/replica:0/task:0",
        enable_health_check=True,
        cluster_register_timeout_in_ms=int(cluster_timeout_s * 1000),
        heartbeat_timeout_in_ms=int(peer_timeout_s * 1000),
        shutdown_barrier_timeout_in_ms=SHUTDOWN_GRACE_SECONDS * 1000,
    )
    config = context.context().coordination_service
    config.cluster_register_with_barrier = True


def _create_strategy(plan: Plan) -> tf.distribute.Strategy:
    if plan.kind is Kind.MULTI_WORKER:
        # NCCL between GPUs when there are GPUs, gRPC rings otherwise (AUTO picks).
        return tf.distribute.MultiWorkerMirroredStrategy(
            communication_options=tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.AUTO
            )
        )
    if plan.kind is Kind.MIRRORED:
        return tf.distribute.MirroredStrategy(devices=list(plan.local_devices))
    return tf.distribute.get_strategy()


@dataclass
class Distribution:
    """The running strategy and this host's role in it."""

    plan: Plan
    strategy: tf.distribute.Strategy
    cluster_timeout_s: int
    peer_timeout_s: int

    @property
    def is_chief(self) -> bool:
        return self.plan.is_chief

    @property
    def multi_worker(self) -> bool:
        return self.plan.kind is Kind.MULTI_WORKER

    @property
    def num_replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    @property
    def local_replicas(self) -> int:
        return self.num_replicas // self.plan.num_workers

    def checkpoint_dir(self, env: SageMakerEnv) -> pathlib.Path:
        """Where this worker's checkpoints go: the synced folder on the chief only."""
        return env.checkpoints_dir if self.is_chief else env.scratch_dir / "checkpoints"

    def tensorboard_dir(self, env: SageMakerEnv) -> pathlib.Path:
        return env.tensorboard_dir if self.is_chief else env.scratch_dir / "tensorboard"

    def prepare_worker_dirs(self, env: SageMakerEnv) -> None:
        """A non-chief worker starts from a copy of the chief's latest checkpoint.

        SageMaker copies the checkpoint S3 URI into /opt/ml/checkpoints on every instance when
        a job (re)starts; only the chief writes there. The others must never change that folder
        (SageMaker deletes from S3 what is deleted there), so each copies the latest checkpoint
        into its scratch folder and works on the copy: every worker then resumes at the same
        step, which the strategy requires."""
        if self.is_chief:
            return
        target = self.checkpoint_dir(env)
        shutil.rmtree(env.scratch_dir, ignore_errors=True)
        target.mkdir(parents=True)
        latest = tf.train.latest_checkpoint(str(env.checkpoints_dir))
        if latest is None:
            return
        prefix = os.path.basename(latest)
        for path in env.checkpoints_dir.glob(f"{prefix}.*"):
            shutil.copy2(path, target / path.name)
        (target / "checkpoint").write_text(
            f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n'
        )
        logger.info("worker %s resumes from the chief's %s", self.plan.current_host, latest)

    def adapt_experiment(self, params: Any, num_eval: int) -> None:
        """Fit the resolved experiment to the replicas: refuse a global batch they cannot
        share; with several replicas, size Model Garden's evaluation batches to them (and, across
        workers, let every worker evaluate the whole eval split). One replica: unchanged."""
        check_batch_size(params.task.train_data.global_batch_size, self.plan, self.num_replicas)
        if self.multi_worker:
            # Model Garden's own preemption handler (TensorFlow's PreemptionCheckpointHandler)
            # would take SIGTERM over, save a checkpoint and keep training until SageMaker's
            # kill: the container's agreed stop saves *and* exports instead.
            params.trainer.preemption_on_demand_checkpoint = False
        if self.num_replicas == 1 or not num_eval:
            return
        batching = eval_batching(num_eval, self.local_replicas, self.plan.num_workers)
        if batching.steps == 0:
            raise UserError(
                f"the eval split holds {num_eval} image(s), fewer than the {self.local_replicas} "
                "devices that evaluate it; build the channel with more eval images "
                "(--eval-fraction) or without an eval split (--eval-fraction 0)"
            )
        validation = params.task.validation_data
        validation.global_batch_size = batching.global_batch
        validation.sharding = not self.multi_worker
        params.trainer.validation_steps = batching.steps
        if batching.images < num_eval:
            logger.warning(
                "Model Garden's evaluations during training cover %d of the %d eval images "
                "(batches of %d over %d devices); metrics.json evaluates the exported model on "
                "all of them",
                batching.images,
                num_eval,
                batching.global_batch // self.plan.num_workers,
                self.local_replicas,
            )

    def agreed_stop_flag(self, stop_flag: Any) -> Any:
        """`stop_flag` (a training.StopFlag) as every worker sees it: set on all when set on
        any. SageMaker sends SIGTERM to every instance, but each sees it at its own time; the
        workers must stop after the same training loop, or one would wait in the next step for
        the others. Costs one tiny all-reduce per check (once per training loop)."""
        return _AgreedStopFlag(stop_flag, self.strategy) if self.multi_worker else stop_flag

    def emit_metric(self, line: str) -> None:
        """`metric` lines (SageMaker's MetricDefinitions) from the chief only; the values are
        the same on every worker (all-reduced). Logged as `training:` lines, as on one device."""
        METRIC_LOGGER.log(logging.INFO if self.is_chief else logging.DEBUG, "%s", line)

    def finish(self) -> None:
        """Multi-worker: the last meeting of the workers, once the chief has exported.

        A worker leaving the cluster looks to the others like a failed one, so the non-chief
        workers wait here for the chief's exports; if the chief fails meanwhile, they fail
        too, naming it. The chief's own wait returns at once (the others are already here),
        and a worker lost after training does not fail the chief's finished export."""
        if not self.multi_worker:
            return
        from tensorflow.python.eager import context

        try:
            context.context().wait_at_barrier(FINISH_BARRIER, FINISH_TIMEOUT_S * 1000)
        except tf.errors.OpError as error:
            if not self.is_chief:
                raise PeerFailure(
                    f"worker {self.plan.current_host}: training finished, but the chief "
                    f"({self.plan.chief_host}) did not finish evaluating and exporting the model; "
                    f"its log and output/failure say why ({' '.join(str(error).split())[:200]})"
                ) from error
            logger.warning(
                "a worker left before the end (%s); the model is exported",
                " ".join(str(error).split())[:200],
            )

    def worker_report(self, step: int) -> dict[str, Any]:
        return {
            "step": step,
            "eval": None,
            "note": f"worker {self.plan.current_host}: the chief ({self.plan.chief_host}) "
            "evaluates and exports the model",
        }

    @contextlib.contextmanager
    def peer_failures_named(self) -> Iterator[None]:
        """Turn TensorFlow's collective and coordination errors into a PeerFailure naming the
        host, so output/failure says which instance to look at."""
        if not self.multi_worker:
            yield
            return
        try:
            yield
        except (
            tf.errors.UnavailableError,
            tf.errors.DeadlineExceededError,
            tf.errors.AbortedError,
            tf.errors.CancelledError,
            tf.errors.InternalError,
        ) as error:
            raise PeerFailure(describe_peer_failure(error, self.plan, self.peer_timeout_s)) from (
                error
            )


class _AgreedStopFlag:
    def __init__(self, local: Any, strategy: tf.distribute.Strategy):
        self._local = local
        self._strategy = strategy

    @property
    def signal_name(self) -> str:
        return self._local.signal_name or "SIGTERM on another worker"

    def is_set(self) -> bool:
        flag = 1.0 if self._local.is_set() else 0.0
        per_replica = self._strategy.run(lambda: tf.constant(flag))
        total = self._strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
        return float(total) > 0


def start(env: SageMakerEnv, cluster_timeout_s: int, peer_timeout_s: int) -> Distribution:
    """Read the cluster, wait for the peers, create the strategy.

    Call before any other TensorFlow operation: MultiWorkerMirroredStrategy (and logical CPU
    devices) must exist before TensorFlow's runtime starts."""
    try:
        resource = env.resource_config()
    except ConfigFileError as error:
        raise UserError(str(error)) from error
    cpu_devices = _int_env(CPU_DEVICES_ENV, 1)
    local_addresses = parse_local_addresses(os.environ.get(LOCAL_ADDRESSES_ENV, ""))
    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    plan = plan_distribution(resource, gpus, cpu_devices, local_addresses)
    if plan.kind is Kind.MIRRORED and not gpus:
        _configure_cpu_devices(len(plan.local_devices))
    if plan.kind is Kind.MULTI_WORKER:
        started = time.monotonic()
        wait_for_peers(plan, cluster_timeout_s)
        remaining = max(1, math.ceil(cluster_timeout_s - (time.monotonic() - started)))
        tf_config = build_tf_config(plan.addresses, plan.worker_index)
        os.environ[TF_CONFIG_ENV] = json.dumps(tf_config)
        logger.info("TF_CONFIG=%s", os.environ[TF_CONFIG_ENV])
        _configure_coordination_service(plan, remaining, peer_timeout_s)
        if gpus and resource.network_interface_name:
            # NCCL between instances: the interface SageMaker names (as its own toolkits do).
            os.environ.setdefault("NCCL_SOCKET_IFNAME", resource.network_interface_name)
    try:
        strategy = _create_strategy(plan)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError) as error:
        raise PeerFailure(describe_peer_failure(error, plan, peer_timeout_s)) from error
    if plan.kind is Kind.MULTI_WORKER:
        # TensorFlow's coordination agent installs its own SIGTERM handler (a preemption
        # notifier) in C, silently replacing Python's: re-register Python's, so that a stop
        # or spot notice still ends training with a checkpoint and an export.
        signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGTERM))
    logger.info("distribution: %s", plan.describe())
    return Distribution(plan, strategy, cluster_timeout_s, peer_timeout_s)


def _int_env(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"environment variable {name}={text!r} must be a whole number >= 1")
    return int(text)
