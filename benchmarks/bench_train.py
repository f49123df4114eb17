"""Training speed of the container vs Model Garden's own `train_lib.run_experiment`.

Both train the same resolved experiment (default preset, synthetic shapes) in this process,
alternating, each from a fresh model_dir; steps/s is measured between the end of the first
loop (after tf.function tracing) and the end of the last. The container adds only Orbit
actions (metric lines, NaN and SIGTERM checks), so the ratio should be about 1.

    .venv/bin/python benchmarks/bench_train.py [--steps 240] [--repeats 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("bench_train")


def steps_per_second(stamps: list[tuple[float, int]]) -> float:
    (t0, s0), (t1, s1) = stamps[0], stamps[-1]
    return (s1 - s0) / (t1 - t0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=240, help="training steps per run (120 proved too noisy)"
    )
    parser.add_argument("--loop", type=int, default=20, help="steps per Orbit loop")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each, alternating")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    import tensorflow as tf
    from official.core import task_factory, train_lib

    from sagemaker_tfod.container import training
    from sagemaker_tfod.container.hyperparameters import parse_hyperparameters
    from sagemaker_tfod.container.pipeline_config import DataPaths, build_experiment
    from sagemaker_tfod.container.presets import get_preset
    from sagemaker_tfod.data_prep.build import build_channel
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc

    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_train-"))
    write_synthetic_voc(work / "voc", num_images=64, image_size=256, seed=0)
    build_channel(work / "voc", work / "channel", eval_fraction=0.0, workers=1)
    hp = parse_hyperparameters(
        {
            "num_steps": str(args.steps),
            "log_interval_steps": str(args.loop),
            "image_size": str(args.image_size),
            "batch_size": str(args.batch_size),
            "checkpoint_interval_steps": str(args.steps),
        }
    )
    data = DataPaths(str(work / "channel" / "train-*-of-*.tfrecord"), None, 0)

    def params():
        return build_experiment(get_preset(hp.model), hp, 3, data)

    def run_model_garden(index: int) -> float:
        stamps: list[tuple[float, int]] = []
        config = params()
        model_dir = work / f"model_garden_{index}"
        task = task_factory.get_task(config.task, logging_dir=str(model_dir))
        step = [0]

        def stamp(_output) -> None:
            step[0] += args.loop
            stamps.append((time.monotonic(), step[0]))

        train_lib.run_experiment(
            distribution_strategy=tf.distribute.get_strategy(),
            task=task,
            mode="train",
            params=config,
            model_dir=str(model_dir),
            train_actions=[stamp],
        )
        return steps_per_second(stamps)

    def run_container(index: int) -> float:
        stamps: list[tuple[float, int]] = []

        def emit(line: str) -> None:
            from sagemaker_tfod.container.metrics import parse_metric_line

            parsed = parse_metric_line(line)
            if parsed and "total_loss" in parsed[1]:
                stamps.append((time.monotonic(), parsed[0]))

        base = work / f"container_{index}"
        training.run_training(
            params(), base / "checkpoints", base / "tensorboard", evaluate=False, emit=emit
        )
        return steps_per_second(stamps)

    results: dict[str, list[float]] = {"model_garden": [], "container": []}
    # Orbit prints its progress to stdout; keep stdout for the JSON report.
    with contextlib.redirect_stdout(sys.stderr):
        for index in range(args.repeats):
            results["model_garden"].append(run_model_garden(index))
            results["container"].append(run_container(index))
            logger.info("after repeat %d: %s", index + 1, results)
    best = {name: max(values) for name, values in results.items()}
    report = {
        "config": {
            "preset": hp.model,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "steps_per_loop": args.loop,
        },
        "steps_per_sec": results,
        "best_steps_per_sec": best,
        "ratio_container_to_model_garden": best["container"] / best["model_garden"],
    }
    print(json.dumps(report, indent=2))
    return 0 if report["ratio_container_to_model_garden"] >= 0.97 else 1


if __name__ == "__main__":
    sys.exit(main())
