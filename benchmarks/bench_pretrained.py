"""What starting from pretrained weights buys at equal steps: fine-tuned vs from scratch.

Pretrains the default preset on one data set (synthetic shapes), then trains on another (the
raccoon photos, 160 train / 40 eval) for each step count twice: from scratch, and initialised
from the pretrained run's checkpoint (`init_checkpoint_modules=backbone,decoder`, given as a
.tar.gz in the checkpoint channel, as `launch train --pretrained` sends it). Every run is the
real `python -m container train` (subprocess, SAGEMAKER_BASE_DIR), each step count with its own
cosine schedule, and AP50 is the exported SavedModel's on the 40 eval images (metrics.json).
Small inputs (default 128 px) keep it within CPU time; run it niced on a shared machine:

    nice -n 10 .venv/bin/python benchmarks/bench_pretrained.py [--steps 250 500 1000]
        [--pretrain-steps 1500] [--image-size 128] [--out bench_pretrained_output]

Prints one JSON report and writes `bench_pretrained.json` and `bench_pretrained.png` in --out.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_RACCOON = REPO.parent / "shared" / "datasets" / "raccoon"

logger = logging.getLogger("bench_pretrained")


def run_container(base: pathlib.Path, hyperparameters: dict[str, str], log: pathlib.Path) -> dict:
    """One `python -m container train` in `base` (an /opt/ml tree); returns metrics.json."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    started = time.monotonic()
    with log.open("w") as handle:
        completed = subprocess.run(
            [sys.executable, "-m", "container", "train"],
            cwd=REPO,
            env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(REPO)},
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if completed.returncode != 0:
        raise SystemExit(f"{base}: training failed ({completed.returncode}); see {log}")
    metrics = json.loads((base / "model" / "metrics.json").read_text())
    metrics["wall_seconds"] = round(time.monotonic() - started, 1)
    return metrics


def tree(root: pathlib.Path, name: str, channel: pathlib.Path) -> pathlib.Path:
    base = root / name
    (base / "input" / "data").mkdir(parents=True)
    os.symlink(channel, base / "input" / "data" / "training")
    return base


def restored_lines(log: pathlib.Path) -> list[str]:
    return [line.split(": ", 1)[-1] for line in log.read_text().splitlines() if "restored" in line]


def plot(report: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["steps"] for row in report["runs"]]
    figure, axis = plt.subplots(figsize=(6, 4))
    for key, label in (("scratch_ap50", "from scratch"), ("pretrained_ap50", "pretrained")):
        axis.plot(steps, [row[key] for row in report["runs"]], marker="o", label=label)
    axis.set_xlabel("training steps on the raccoon set")
    axis.set_ylabel("AP50 (40 eval images)")
    axis.set_title(f"raccoon, {report['image_size']} px: from scratch vs from shapes checkpoint")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--pretrain-images", type=int, default=600)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--raccoon", type=pathlib.Path, default=DEFAULT_RACCOON)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench_pretrained_output"))
    parser.add_argument(
        "--reuse-pretrain",
        type=pathlib.Path,
        default=None,
        help="the /opt/ml tree of a finished pretraining run of this script (skips pretraining)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (args.raccoon / "annotations").is_dir():
        sys.exit(f"{args.raccoon}: raccoon dataset not found; pass --raccoon DIR")
    args.out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_pretrained-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, work: pathlib.Path) -> int:
    from sagemaker_tfod.data_prep.build import build_channel
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc

    common = {
        "image_size": str(args.image_size),
        "batch_size": str(args.batch_size),
        "export_edge": "false",
        "log_interval_steps": "50",
        "seed": "0",
    }
    # Pretraining set: synthetic shapes (3 classes), at twice the input size, as synth makes it.
    write_synthetic_voc(work / "shapes_voc", num_images=args.pretrain_images, image_size=256)
    shapes = work / "shapes_channel"
    build_channel(work / "shapes_voc", shapes, eval_fraction=0.1, workers=1)
    # Fine-tuning set: the raccoon photos (read in place; the channel is written under `work`).
    raccoon = work / "raccoon_channel"
    build_channel(args.raccoon, raccoon, eval_fraction=0.2, workers=1)

    if args.reuse_pretrain:
        base = args.reuse_pretrain
        pretrain = json.loads((base / "model" / "metrics.json").read_text())
        pretrain["wall_seconds"] = None
    else:
        logger.info(
            "pretraining on %d shapes images, %d steps", args.pretrain_images, args.pretrain_steps
        )
        base = tree(work, "pretrain", shapes)
        pretrain = run_container(
            base, {**common, "num_steps": str(args.pretrain_steps)}, args.out / "pretrain.log"
        )
    archive = work / "pretrained.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(base / "checkpoints", arcname="shapes_checkpoint")
    logger.info("pretrained: AP50 %.3f on shapes; %s", pretrain["eval"]["overall"]["AP50"], archive)

    runs = []
    for steps in args.steps:
        row: dict = {"steps": steps}
        for kind in ("scratch", "pretrained"):
            base = tree(work, f"{kind}_{steps}", raccoon)
            hyperparameters = {**common, "num_steps": str(steps)}
            if kind == "pretrained":
                (base / "input" / "data" / "checkpoint").mkdir()
                shutil.copy(archive, base / "input" / "data" / "checkpoint")
                hyperparameters["init_checkpoint_modules"] = "backbone,decoder"
            log = args.out / f"{kind}_{steps}.log"
            logger.info("raccoon, %s, %d steps", kind, steps)
            metrics = run_container(base, hyperparameters, log)
            row[f"{kind}_ap50"] = round(metrics["eval"]["overall"]["AP50"], 4)
            row[f"{kind}_ap"] = round(metrics["eval"]["overall"]["AP"], 4)
            row[f"{kind}_seconds"] = metrics["wall_seconds"]
            if kind == "pretrained":
                row["restored"] = restored_lines(log)
            shutil.rmtree(base, ignore_errors=True)
        runs.append(row)
        logger.info("%s", row)
    report = {
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "pretrain": {
            "data": f"synthetic shapes, {args.pretrain_images} images",
            "steps": args.pretrain_steps,
            "ap50": round(pretrain["eval"]["overall"]["AP50"], 4),
            "seconds": pretrain["wall_seconds"],
        },
        "fine_tune_data": "raccoon, 160 train / 40 eval",
        "runs": runs,
    }
    (args.out / "bench_pretrained.json").write_text(json.dumps(report, indent=2))
    plot(report, args.out / "bench_pretrained.png")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
