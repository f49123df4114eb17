"""`make demo`'s training step: lay a channel out as SageMaker would, run `python -m container
train` on it (exactly what the image runs), print the eval AP and each export's AP50 and size,
then run the shipped TFLite file with the Raspberry Pi code (`python -m edge detect`) on a few
images.

The demo settings (128 px input, batch 8) reached AP50 0.999 after 1500 steps on the synthetic
shapes (8 minutes of training on 2 shared CPU cores); 1200 steps keep `make demo` near 8 min.
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

from sagemaker_tfod.container.sagemaker_env import BASE_DIR_ENV, SageMakerEnv

logger = logging.getLogger("sagemaker_tfod.container.demo")

DEMO_HYPERPARAMETERS = {
    "image_size": "128",
    "batch_size": "8",
    "num_steps": "1200",
    "learning_rate": "0.04",
    "warmup_steps": "100",
    "log_interval_steps": "100",
    "export_edge": "true",
    "quantize": "true",
    "inference_type": "QUANTIZED_UINT8",
}
DETECT_IMAGES = 8
TARGET_AP50 = 0.9


def prepare(channel: pathlib.Path, env: SageMakerEnv, hyperparameters: dict[str, str]) -> None:
    if env.training_dir.exists():
        shutil.rmtree(env.training_dir)
    shutil.copytree(channel, env.training_dir)
    env.config_dir.mkdir(parents=True, exist_ok=True)
    env.hyperparameters_file.write_text(json.dumps(hyperparameters, indent=2), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m container.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--channel", type=pathlib.Path, required=True, help="a built channel")
    parser.add_argument(
        "--base-dir", type=pathlib.Path, required=True, help="SageMaker tree to create"
    )
    parser.add_argument(
        "--num-steps", default=DEMO_HYPERPARAMETERS["num_steps"], help="training steps"
    )
    parser.add_argument(
        "--detect-images",
        type=pathlib.Path,
        help="folder of images to run the shipped TFLite file on with `python -m edge detect`",
    )
    parser.add_argument(
        "--detections-dir",
        type=pathlib.Path,
        default=pathlib.Path("detections"),
        help="where the annotated images go",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    env = SageMakerEnv(args.base_dir.resolve())
    prepare(args.channel, env, {**DEMO_HYPERPARAMETERS, "num_steps": str(args.num_steps)})
    logger.info("training in %s with %s", env.base_dir, DEMO_HYPERPARAMETERS)
    completed = subprocess.run(
        [sys.executable, "-m", "sagemaker_tfod.container", "train"],
        env={**os.environ, BASE_DIR_ENV: str(env.base_dir)},
        check=False,
    )
    if completed.returncode != 0:
        failure = env.failure_file.read_text() if env.failure_file.exists() else "no reason"
        print(f"demo: training failed (exit {completed.returncode}): {failure.strip()}")
        return completed.returncode
    metrics = json.loads((env.model_dir / "metrics.json").read_text(encoding="utf-8"))
    overall = metrics["eval"]["overall"]
    print(
        f"demo: step {metrics['step']}, eval AP={overall['AP']:.3f} AP50={overall['AP50']:.3f} "
        f"AP75={overall['AP75']:.3f} on {metrics['eval']['num_images']} images "
        f"(target AP50 >= {TARGET_AP50}); model in {env.model_dir}, picture "
        f"{env.model_dir / 'eval.png'}"
    )
    for name, values in metrics["eval"]["per_class"].items():
        print(f"  {name:12} AP={values['AP']:.3f} AP50={values['AP50']:.3f}")
    shipped = print_exports(env.model_dir)
    if args.detect_images and shipped:
        detect_with_edge(shipped, args.detect_images, args.detections_dir)
    return 0 if overall["AP50"] >= TARGET_AP50 else 1


def print_exports(model_dir: pathlib.Path) -> pathlib.Path | None:
    """Print each export's eval AP50 and size; return the TFLite file to run on the Pi."""
    export_json = model_dir / "export.json"
    if not export_json.exists():
        return None
    exports = json.loads(export_json.read_text(encoding="utf-8"))
    for name, details in exports["files"].items():
        ap50 = details.get("eval", {}).get("AP50")
        size = details.get("size_bytes")
        ap50_text = f"AP50={ap50:.3f}" if ap50 is not None else "AP50=n/a"
        size_text = f"{size / 1e6:6.2f} MB" if size else ""
        print(f"  export {name:28} {ap50_text} {size_text}")
    shipped = exports.get("quantization", {}).get("shipped") or "model.tflite"
    return model_dir / shipped


def detect_with_edge(model: pathlib.Path, images: pathlib.Path, output: pathlib.Path) -> None:
    """Run the Raspberry Pi command on a few images, as a user would after copying the model."""
    sample = sorted(path for path in images.iterdir() if path.suffix.lower() in {".jpg", ".png"})
    command = [
        sys.executable,
        "-m",
        "sagemaker_tfod.edge",
        "detect",
        "--model",
        str(model),
        "--threads",
        "2",
    ]
    command += ["--output", str(output), *map(str, sample[:DETECT_IMAGES])]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        print(f"demo: edge detect failed: {completed.stderr.strip().splitlines()[-1:]}")
        return
    print(f"demo: {model.name} on {len(sample[:DETECT_IMAGES])} images -> {output}/")


if __name__ == "__main__":
    sys.exit(main())
