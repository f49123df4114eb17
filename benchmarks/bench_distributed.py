"""Training examples/s of the container on one device, two logical devices, two workers.

Every configuration runs the real `python -m sagemaker_tfod.container train` (default preset,
synthetic shapes, no eval split) with the same global batch:
- `one_device`: TensorFlow's default strategy, one CPU device;
- `two_devices`: MirroredStrategy over two logical CPU devices in one process
  (`TFOD_CPU_DEVICES=2`);
- `two_workers`: MultiWorkerMirroredStrategy between two processes on loopback, as
  `launch local --instance-count 2` runs them (each with its own /opt/ml tree).

The rate is measured from the `metric` lines' timestamps between the end of the first loop
(after tf.function tracing) and the last. On a 2-core machine no speed-up is possible: the
figures show what the collective path costs (target: two_devices within 15% of one_device).

    .venv/bin/python benchmarks/bench_distributed.py [--steps 200] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import shutil
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("bench_distributed")
CONFIGS = ("one_device", "two_devices", "two_workers")


def metric_stamps(log: str) -> list[tuple[float, int]]:
    """(time, step) of every train `metric` line of a container log."""
    from sagemaker_tfod.container.logs import line_timestamp
    from sagemaker_tfod.container.metrics import parse_metric_line

    stamps = []
    for line in log.splitlines():
        parsed = parse_metric_line(line.partition("] ")[2] if line.startswith("[") else line)
        if parsed and "total_loss" in parsed[1]:
            stamps.append((line_timestamp(line), parsed[0]))
    return stamps


def steps_per_second(stamps: list[tuple[float, int]]) -> float:
    (t0, s0), (t1, s1) = stamps[0], stamps[-1]
    return (s1 - s0) / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps per run")
    parser.add_argument("--loop", type=int, default=20, help="steps per Orbit loop")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8, help="the global batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from sagemaker_tfod.container.sagemaker_env import CPU_DEVICES_ENV
    from sagemaker_tfod.data_prep.build import build_channel
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc
    from sagemaker_tfod.launch import local

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
            extra = {CPU_DEVICES_ENV: "2"} if config == "two_devices" else {}
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
        return steps_per_second(metric_stamps(log)) * args.batch_size

    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for index in range(args.repeats):
        for config in CONFIGS:
            results[config].append(run(config, index))
            logger.info("%s run %d: %.2f examples/s", config, index + 1, results[config][-1])
    best = {name: max(values) for name, values in results.items()}
    report = {
        "config": {**hyperparameters, "preset": "retinanet_mobilenetv2_fpnlite_320"},
        "examples_per_sec": results,
        "best_examples_per_sec": best,
        "ratio_two_devices_to_one": best["two_devices"] / best["one_device"],
        "ratio_two_workers_to_one": best["two_workers"] / best["one_device"],
    }
    print(json.dumps(report, indent=2))
    return 0 if report["ratio_two_devices_to_one"] >= 0.85 else 1


if __name__ == "__main__":
    sys.exit(main())
