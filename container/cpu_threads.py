"""How many threads each TensorFlow op may use when one machine's CPU is shared out.

TensorFlow runs every op with up to one *intra-op* thread per core, and runs independent ops
side by side on its *inter-op* threads. When a CPU is split into several replicas, either as
logical CPU devices in one process (`TFOD_CPU_DEVICES=N`) or as N worker processes of
`launch local --instance-count N`, each replica's ops would still fan out over every core, and
the replicas would queue for the same threads. Giving each replica its share of the cores
lets them run side by side instead; `bench_distributed.py` measures the difference.

Logical CPU devices of one process share a single intra-op pool unless
`TF_OVERRIDE_GLOBAL_THREADPOOL` is set (tensorflow/core/common_runtime/local_device.cc), so the
container sets it too: each device then gets a pool of its own, of its share of the cores.
Separate processes have separate pools anyway.

TensorFlow's own variables are left alone when the user has set them. GPUs are not affected:
these threads run CPU kernels only. Pure apart from `available_cores`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# TensorFlow reads these variables when its runtime starts (tensorflow/core/common_runtime).
INTRA_OP_THREADS_ENV = "TF_NUM_INTRAOP_THREADS"
PER_DEVICE_POOLS_ENV = "TF_OVERRIDE_GLOBAL_THREADPOOL"


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_replica(cores: int, replicas: int) -> int:
    """Intra-op threads for each of `replicas` sharing `cores`: an even share, at least one."""
    if cores < 1 or replicas < 1:
        raise ValueError(f"cores={cores} and replicas={replicas} must both be at least 1")
    return max(1, cores // replicas)


def user_intra_op_threads(environ: Mapping[str, str]) -> int | None:
    """The user's own `TF_NUM_INTRAOP_THREADS`, if set to a positive whole number."""
    text = environ.get(INTRA_OP_THREADS_ENV, "").strip()
    return int(text) if text.isascii() and text.isdigit() and int(text) > 0 else None


def replica_intra_op_threads(environ: Mapping[str, str], cores: int, replicas: int) -> int:
    """Intra-op threads for each of `replicas` sharing `cores`: the user's own
    `TF_NUM_INTRAOP_THREADS` when set, else an even share."""
    return user_intra_op_threads(environ) or threads_per_replica(cores, replicas)


def logical_devices_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """What to add to the environment, before TensorFlow's runtime starts, so that logical CPU
    devices get an intra-op pool each (unless the user chose otherwise)."""
    return {} if PER_DEVICE_POOLS_ENV in environ else {PER_DEVICE_POOLS_ENV: "1"}


def pools_per_device(environ: Mapping[str, str]) -> bool:
    """Whether TensorFlow will give each CPU device its own pool (its reading of the flag)."""
    return environ.get(PER_DEVICE_POOLS_ENV, "").strip().lower() in ("1", "true")


def shared_cpu_environment(environ: Mapping[str, str], replicas: int, cores: int) -> dict[str, str]:
    """`environ` for one of `replicas` processes sharing `cores`: TensorFlow's intra-op
    threads set to its share, unless the user chose a number (or there is nothing to share)."""
    environment = dict(environ)
    if replicas > 1:
        environment[INTRA_OP_THREADS_ENV] = str(replica_intra_op_threads(environ, cores, replicas))
    return environment
