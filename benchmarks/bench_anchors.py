"""Default against fitted anchors: best possible recall and AP50 at equal training steps.

Each case trains the default preset twice with `python -m container train` (same data, seed
and steps; no edge exports), once with anchors=default and once with fitted anchors, and
reads the anchor fit and the eval AP of each run from its metrics.json:
- `bars`: synthetic shapes stretched to 6:1 and 1:6 (`data_prep synth --aspect-ratio 6`),
  which the default aspect ratios (0.5, 1, 2) cannot reach at IoU 0.5: anchors=auto fits;
- `shapes`: the ordinary synthetic shapes at a small input size (at 128 px their smallest
  boxes are below the smallest default anchor): anchors=auto fits;
- `raccoon`: /work/shared/datasets/raccoon (copied to a temporary folder), where the default
  anchors already fit: anchors=auto keeps them, so the second run forces the fit (written into
  the channel's pipeline.yaml) to show what a fit does where none is needed.

    nice -n 10 .venv/bin/python benchmarks/bench_anchors.py [--cases bars shapes raccoon]
        [--steps 600] [--raccoon-steps 500]
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
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RACCOON = REPO.parent / "shared" / "datasets" / "raccoon"

logger = logging.getLogger("bench_anchors")


def train(base: pathlib.Path, channel: pathlib.Path, hyperparameters: dict, yaml_text: str | None):
    """One `python -m container train` run; returns its metrics.json and wall time."""
    config = base / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    training = base / "input" / "data" / "training"
    shutil.copytree(channel, training)
    if yaml_text:
        (training / "pipeline.yaml").write_text(yaml_text)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "container", "train"],
        env={**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"training in {base} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((base / "model" / "metrics.json").read_text())
    return metrics, time.monotonic() - started


def fitted_anchor_yaml(channel: pathlib.Path, image_size: int) -> tuple[str, dict, dict]:
    """pipeline.yaml text forcing the fitted anchors of `channel`'s train boxes, the fit, and
    what anchors=auto decides there."""
    import numpy as np

    from sagemaker_tfod.data_prep import anchors, schema
    from sagemaker_tfod.data_prep.stats import iter_examples

    boxes, sizes = [], []
    for example in iter_examples(channel, schema.TRAIN_SPLIT):
        size = (example[schema.IMAGE_HEIGHT][0], example[schema.IMAGE_WIDTH][0])
        for corners in zip(
            example[schema.BBOX_YMIN],
            example[schema.BBOX_XMIN],
            example[schema.BBOX_YMAX],
            example[schema.BBOX_XMAX],
            strict=True,
        ):
            boxes.append(corners)
            sizes.append(size)
    pixels = anchors.boxes_in_input(np.array(boxes), np.array(sizes), image_size, image_size)
    preset = anchors.PRESET_ANCHORS[anchors.DEFAULT_PRESET].config
    fitted, fit = anchors.fit_anchors(pixels, preset, image_size, image_size)
    auto = anchors.choose_anchors(pixels, preset, image_size, image_size).as_dict()
    fields = fitted.model_garden_fields()
    ratios = ", ".join(str(a) for a in fields["aspect_ratios"])
    text = (
        "task:\n  model:\n    anchor:\n"
        f"      num_scales: {fields['num_scales']}\n"
        f"      aspect_ratios: [{ratios}]\n"
        f"      anchor_size: {fields['anchor_size']}\n"
    )
    return text, {"anchors": fields, **fit.as_dict()}, auto


def build_case(name: str, work: pathlib.Path, image_size: int) -> pathlib.Path:
    from sagemaker_tfod.data_prep.build import build_channel
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc

    voc = work / f"{name}_voc"
    if name == "raccoon":
        shutil.copytree(RACCOON, voc)
    else:
        ratio = 6.0 if name == "bars" else 1.0
        write_synthetic_voc(voc, num_images=200, image_size=image_size, seed=1, aspect_ratio=ratio)
    channel = work / f"{name}_channel"
    build_channel(voc, channel, eval_fraction=0.2, workers=1)
    return channel


def summary(metrics: dict, seconds: float) -> dict:
    anchors = metrics["anchors"]
    fit = anchors["candidate_fit"] if anchors["fitted"] else anchors["default_fit"]
    return {
        "anchors": anchors["anchors"],
        "fitted": anchors["fitted"],
        "best_possible_recall": fit["best_possible_recall"] if fit else None,
        "mean_best_iou": fit["mean_best_iou"] if fit else None,
        **{key: round(metrics["eval"]["overall"][key], 4) for key in ("AP", "AP50", "AP75")},
        "seconds": round(seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=["bars", "shapes", "raccoon"])
    parser.add_argument("--steps", type=int, default=600, help="steps for the synthetic cases")
    parser.add_argument("--raccoon-steps", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=128, help="synthetic cases")
    parser.add_argument("--raccoon-image-size", type=int, default=256)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench_anchors-"))
    report: dict = {"work": str(work), "cases": {}}
    for name in args.cases:
        raccoon = name == "raccoon"
        size = args.raccoon_image_size if raccoon else args.image_size
        steps = args.raccoon_steps if raccoon else args.steps
        channel = build_case(name, work, size)
        hyperparameters = {
            "image_size": str(size),
            "batch_size": "8",
            "num_steps": str(steps),
            "log_interval_steps": "50",
            "export_edge": "false",
        }
        case: dict = {"image_size": size, "steps": steps}
        runs = [("default", {"anchors": "default"}, None)]
        if raccoon:
            yaml_text, forced, auto = fitted_anchor_yaml(channel, size)
            case["forced_fit"], case["auto_decision"] = forced, auto
            runs.append(("fitted (forced)", {"anchors": "default"}, yaml_text))
        else:
            runs.append(("auto", {"anchors": "auto"}, None))
        for label, extra, yaml_text in runs:
            logger.info("%s: training with %s anchors (%d steps)", name, label, steps)
            base = work / f"{name}_{label.split()[0]}"
            metrics, seconds = train(base, channel, {**hyperparameters, **extra}, yaml_text)
            case[label] = summary(metrics, seconds)
            case[label]["decision"] = metrics["anchors"]["reason"]
            logger.info("%s %s: %s", name, label, case[label])
        report["cases"][name] = case
        print(json.dumps({name: case}, indent=2), flush=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
