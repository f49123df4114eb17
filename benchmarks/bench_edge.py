"""Latency and size of every TFLite variant and model.onnx of the default preset (320 px).

Builds the default preset at 320 px, converts it to float, fp16, int8 (full integer, uint8
input; the recipe `train` ships) and dynamic-range TFLite and to model.onnx (onnxruntime),
then times each at 1 and 2 threads
with the Pi-side code (`edge.benchmark`), interleaving the files so a neighbour's load on a
shared CPU hits them alike. Pass trained weights with `--checkpoint` (any input size; match
`--num-classes`): an untrained float file is smaller than a trained one (identical zero
biases are stored once). int8 is calibrated on synthetic shape images. `--model-dir`
benchmarks the .tflite and .onnx files of a finished run instead.

    .venv/bin/python benchmarks/bench_edge.py [--checkpoint CKPT --num-classes N] [--runs 30]

Targets (issue 4): int8 at most 0.6x the float latency and at most 0.3x its size.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

logger = logging.getLogger("bench_edge")

VARIANTS = ("float", "fp16", "int8", "dynamic")
LATENCY_TARGET, SIZE_TARGET = 0.6, 0.3


def build_variants(
    out: pathlib.Path, image_size: int, checkpoint: str | None, num_classes: int
) -> list[pathlib.Path]:
    """Convert the default preset to every variant in `out`; returns the files."""
    import numpy as np

    from sagemaker_tfod.container import export_onnx, export_tflite
    from sagemaker_tfod.container.hyperparameters import DEFAULT_MODEL, Hyperparameters
    from sagemaker_tfod.container.pipeline_config import DataPaths, build_experiment
    from sagemaker_tfod.container.presets import get_preset
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc
    from sagemaker_tfod.edge.preprocess import letterbox, load_rgb

    hp = Hyperparameters(image_size=image_size)
    params = build_experiment(
        get_preset(DEFAULT_MODEL), hp, num_classes, DataPaths("unused-*", None, 0)
    )
    model = export_tflite.build_model(params, image_size, image_size)
    if checkpoint:
        export_tflite.restore(model, checkpoint)
    module = export_tflite.TfliteDetectionModule(params, model, image_size, image_size)
    write_synthetic_voc(out / "voc", num_images=16, image_size=image_size, seed=0)
    images = [
        letterbox(load_rgb(str(p)), image_size, image_size)[0][np.newaxis]
        for p in sorted((out / "voc" / "images").glob("*.jpg"))
    ]
    files = []
    for name in VARIANTS:
        logger.info("converting %s", name)
        path = out / f"model_{name}.tflite"
        path.write_bytes(
            export_tflite.convert(module, export_tflite.RECIPES[name], lambda: iter(images))
        )
        files.append(path)
    logger.info("converting model.onnx")
    path = out / export_onnx.ONNX_FILE
    path.write_bytes(export_onnx.build_onnx(module, export_tflite.postprocess_settings(params)))
    files.append(path)
    return files


def interleaved(
    files: list[pathlib.Path], threads: list[int], runs: int, warmup: int, rounds: int
) -> dict[str, dict]:
    """Time every file in turn, `rounds` times over, so a neighbour's load on the shared CPU
    hits all variants alike; each figure is the median over rounds of the per-round value."""
    import statistics

    from sagemaker_tfod.edge.benchmark import benchmark

    per_round = [
        {path.name: benchmark(path, threads=threads, runs=runs, warmup=warmup) for path in files}
        for _ in range(rounds)
    ]
    results = {}
    for path in files:
        first = per_round[0][path.name]
        rows = []
        for index, count in enumerate(threads):
            samples = [r[path.name]["results"][index] for r in per_round]
            rows.append(
                {
                    "threads": count,
                    "runs": runs * rounds,
                    **{
                        key: round(statistics.median(s[key] for s in samples), 2)
                        for key in ("median_ms", "p90_ms", "fps")
                    },
                }
            )
        results[path.name] = {**first, "results": rows}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir", type=pathlib.Path, help="benchmark these .tflite and .onnx files"
    )
    parser.add_argument("--checkpoint", help="trained weights for the default preset (optional)")
    parser.add_argument("--num-classes", type=int, default=3, help="label-map classes")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--runs", type=int, default=30, help="timed runs per file and round")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved passes over the files")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="bench_edge-") as tmp:
        if args.model_dir:
            files = sorted(args.model_dir.glob("*.tflite")) + sorted(args.model_dir.glob("*.onnx"))
        else:
            files = build_variants(
                pathlib.Path(tmp), args.image_size, args.checkpoint, args.num_classes
            )
        results = interleaved(files, args.threads, args.runs, args.warmup, args.rounds)

    float_name = next((n for n in results if n in ("model.tflite", "model_float.tflite")), None)
    print(
        f"{'file':24} {'MB':>6} " + " ".join(f"{t}thr med/p90 ms".rjust(18) for t in args.threads)
    )
    for name, result in results.items():
        cells = " ".join(
            f"{row['median_ms']:8.2f}/{row['p90_ms']:<8.2f}".rjust(18) for row in result["results"]
        )
        print(f"{name:24} {result['size_bytes'] / 1e6:6.2f} {cells}")
    summary = {"results": results}
    if float_name:
        base = results[float_name]
        ratios = {}
        for name, result in results.items():
            ratios[name] = {
                "size": round(result["size_bytes"] / base["size_bytes"], 3),
                **{
                    f"latency_{row['threads']}thr": round(
                        row["median_ms"] / base_row["median_ms"], 3
                    )
                    for row, base_row in zip(result["results"], base["results"], strict=True)
                },
            }
            print(f"{name:24} vs float: {ratios[name]}")
        summary["ratios_vs_float"] = ratios
        int8 = next((n for n in results if "int8" in n), None)
        if int8:
            worst_latency = max(v for k, v in ratios[int8].items() if k.startswith("latency"))
            verdict = worst_latency <= LATENCY_TARGET and ratios[int8]["size"] <= SIZE_TARGET
            print(
                f"int8 targets (latency <= {LATENCY_TARGET}x, size <= {SIZE_TARGET}x): "
                f"latency {worst_latency}x, size {ratios[int8]['size']}x -> "
                f"{'met' if verdict else 'NOT met'}"
            )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
