"""Latency of a TFLite or ONNX model: median and p90 over N runs after warm-up, per thread
count."""

from __future__ import annotations

import pathlib
import time
from collections.abc import Sequence

import numpy as np

from sagemaker_tfod.edge.detect import FixedInputDetector, OnnxDetector, TfliteDetector
from sagemaker_tfod.edge.errors import EdgeError


def fixed_input_detector(model: str | pathlib.Path, threads: int) -> FixedInputDetector:
    """model.onnx runs on onnxruntime, anything else as a TFLite file."""
    if pathlib.Path(model).suffix.lower() == ".onnx":
        return OnnxDetector(model, threads=threads)
    return TfliteDetector(model, threads=threads)


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p90 and frames per second (from the median) of per-run times in seconds."""
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    median = float(np.median(values))
    return {
        "median_ms": round(median, 2),
        "p90_ms": round(float(np.percentile(values, 90)), 2),
        "fps": round(1000.0 / median, 1) if median > 0 else float("inf"),
    }


def time_model(model: str | pathlib.Path, threads: int, runs: int, warmup: int) -> dict:
    """Time `runs` inferences of `model` on one synthetic frame after `warmup` untimed ones."""
    if runs < 1 or warmup < 0:
        raise EdgeError(f"--runs {runs} / --warmup {warmup}: use runs >= 1 and warmup >= 0")
    detector = fixed_input_detector(model, threads)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    tensor, _ = detector.input_tensor(frame)
    for _ in range(warmup):
        detector.run(tensor)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        detector.run(tensor)
        times.append(time.perf_counter() - started)
    return {"threads": threads, "runs": runs, **latency_stats(times)}


def benchmark(
    model: str | pathlib.Path, threads: Sequence[int] = (1, 4), runs: int = 50, warmup: int = 5
) -> dict:
    """Latency per thread count plus the file's size and input."""
    path = pathlib.Path(model)
    detector = fixed_input_detector(path, 1)
    return {
        "model": str(path),
        "size_bytes": path.stat().st_size,
        "input_shape": [int(v) for v in detector.input["shape"]],
        "input_dtype": np.dtype(detector.input["dtype"]).name,
        "results": [time_model(path, count, runs, warmup) for count in threads],
    }
