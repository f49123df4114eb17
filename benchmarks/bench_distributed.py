"""Training examples/s of the container on one device, two logical devices, two workers.

Every configuration runs the real `python -m sagemaker_tfod.container train` (default preset,
synthetic shapes, no eval split) with the same global batch:
- `one_device`: TensorFlow's default strategy, one CPU device, TensorFlow's default threads;
- `one_device_shared_threads`: the same with each op limited to the intra-op threads one of two
  replicas gets (`TF_NUM_INTRAOP_THREADS` = cores / 2, as container/cpu_threads.py sets them),
  which separates the collective path's cost from the threading's;
- `two_devices`: MirroredStrategy over two logical CPU devices in one process
  (`TFOD_CPU_DEVICES=2`);
- `two_workers`: MultiWorkerMirroredStrategy between two processes on loopback, as
  `launch local --instance-count 2` runs them (each with its own /opt/ml tree).

The rate comes from the `metric` lines' own `steps_per_sec` (timed in the process with a
monotonic clock), over every loop after the first (which includes tf.function tracing). On a
2-core machine no speed-up is possible: the figures show what the collective path costs
(target: two_devices within 15% of both one-device runs).

    .venv/bin/python benchmarks/bench_distributed.py [--steps 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("bench_distributed")
CONFIGS = ("one_device", "one_device_shared_threads", "two_devices", "two_workers")


def loop_rates(log: str) -> list[tuple[int, float]]:
    """(step, steps_per_sec) of every train `metric` line of a container log."""
    from sagemaker_tfod.container.metrics import parse_metric_line

    rates = []
    for line in log.splitlines():
        parsed = parse_metric_line(line)
        if parsed and "steps_per_sec" in parsed[1]:
            rates.append((parsed[0], parsed[1]["steps_per_sec"]))
    return rates


def steps_per_second(rates: list[tuple[int, float]]) -> float:
    """Steps over seconds of every loop after the first (each loop's time = steps / rate)."""
    steps = seconds = 0.0
    for (previous, _), (step, rate) in itertools.pairwise(rates):
        steps += step - previous
        seconds += (step - previous) / rate
    if not seconds:
        raise SystemExit("fewer than two metric lines: raise --steps or lower --loop")
    return steps / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    parser.add_argument("--loop", type=int, default=20, help="steps per Orbit loop")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="the global batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from sagemaker_tfod.container.cpu_threads import (
        INTRA_OP_THREADS_ENV,
        PER_DEVICE_POOLS_ENV,
        available_cores,
        threads_per_replica,
    )
    from sagemaker_tfod.container.sagemaker_env import CPU_DEVICES_ENV
    from sagemaker_tfod.data_prep.build import build_channel
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc
    from sagemaker_tfod.launch import local

    for name in (INTRA_OP_THREADS_ENV, PER_DEVICE_POOLS_ENV):
        if os.environ.pop(name, None) is not None:  # every run chooses its own threads
            logger.warning("%s is ignored: the benchmark sets the threads of each run", name)
    shared_threads = threads_per_replica(available_cores(), 2)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_distributed-"))
    write_synthetic_voc(work / "voc", num_images=64, image_size=256, seed=0)
    channel = work / "channel"
    build_channel(work / "voc", channel, eval_fraction=0.0, shards=2, workers=1)
    hyperparameters = {
        "num_steps": str(args.steps),
        "log_interval_steps": str(args.loop),
        "image_size": str(args.image_size),
        "batch_size": str(args.batch_size),
        "checkpoint_interval_steps": str(args.steps),
        "export_edge": "false",
    }

    def run(config: str, index: int) -> float:
        root = work / f"{config}_{index}"
        count = 2 if config == "two_workers" else 1
        trees = local.plan_local_cluster(hyperparameters, channel, instance_count=count)
        base_dirs = {host: local.host_base_dir(root, host, count) for host in trees}
        for host, tree in trees.items():
            local.write_local_tree(base_dirs[host], tree)
        if count == 2:
            output = open(root / "log.txt", "w+")  # noqa: SIM115 (read back below)
            codes = local.run_local_cluster(base_dirs, output=output)
            output.seek(0)
            log = "\n".join(
                line for line in output.read().splitlines() if line.startswith("[algo-1]")
            )
        else:
            extra = {
                "one_device": {},
                "one_device_shared_threads": {INTRA_OP_THREADS_ENV: str(shared_threads)},
                "two_devices": {CPU_DEVICES_ENV: "2"},
            }[config]
            completed = subprocess.run(
                local.container_train_command(),
                env={**local.worker_environment(root), **extra},
                capture_output=True,
                text=True,
                check=False,
            )
            codes = {"algo-1": completed.returncode}
            log = completed.stdout + completed.stderr
        if any(codes.values()):
            raise SystemExit(f"{config} failed: {codes}\n{log[-3000:]}")
        shutil.rmtree(root, ignore_errors=True)
        return steps_per_second(loop_rates(log)) * args.batch_size

    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for index in range(args.repeats):
        for config in CONFIGS:
            results[config].append(run(config, index))
            logger.info("%s run %d: %.2f examples/s", config, index + 1, results[config][-1])
    best = {name: max(values) for name, values in results.items()}
    ratios = {
        f"{many}_to_{one}": best[many] / best[one]
        for many in ("two_devices", "two_workers")
        for one in ("one_device", "one_device_shared_threads")
    }
    report = {
        "config": {**hyperparameters, "preset": "retinanet_mobilenetv2_fpnlite_320"},
        "cores": available_cores(),
        "shared_intra_op_threads": shared_threads,
        "examples_per_sec": results,
        "best_examples_per_sec": best,
        "ratios": ratios,
    }
    print(json.dumps(report, indent=2))
    target_met = (
        min(ratios["two_devices_to_one_device"], ratios["two_devices_to_one_device_shared_threads"])
        >= 0.85
    )
    return 0 if target_met else 1


if __name__ == "__main__":
    sys.exit(main())
