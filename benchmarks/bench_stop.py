"""How long `python -m container train` takes to end after SIGTERM, per phase, with
SageMaker's real grace period (120 s) and the default margin, on the default preset.

    .venv/bin/python benchmarks/bench_stop.py [--image-size 256] [--work DIR]

Runs, on a synthetic channel (int8 asked for, as the slowest export):
  full      no stop: every export step's seconds, and its ratio to the SavedModel export
            (what `export_sequence.ESTIMATE_FACTORS` estimates from);
  imports   SIGTERM the moment the handler is installed (during `import tensorflow`);
  training  SIGTERM after the first training loop;
  exports   SIGTERM when the float TFLite conversion starts.
For each stop: seconds from SIGTERM to the end of the process, the margin left before
SageMaker's SIGKILL, the exit code, and what was written or left out.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRACE_S = 120.0
WRITTEN = re.compile(r"export_sequence: (.+) written in ([0-9.]+) s")


def _catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask.split()[1], 16) & (1 << (signal.SIGTERM - 1)))


def _run(base: Path, ready=None) -> dict:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "container", "train"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    started, stopped_at = time.monotonic(), None
    while process.poll() is None:
        if ready is not None and stopped_at is None and ready(process.pid, lines):
            process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
        time.sleep(0.01)
    ended = time.monotonic()
    reader.join(timeout=10)
    log = "".join(lines)
    (base.parent / f"{base.name}.log").write_text(log)
    metrics_path = base / "model" / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    return {
        "returncode": process.returncode,
        "seconds": round(ended - started, 1),
        "after_sigterm": round(ended - stopped_at, 1) if stopped_at else None,
        "steps": {name: float(s) for name, s in WRITTEN.findall(log)},
        "skipped": {k: v["reason"] for k, v in metrics.get("skipped_exports", {}).items()},
        "failure": (base / "output/failure").read_text().strip()
        if (base / "output/failure").exists()
        else "",
        "last_records": re.findall(r"last records written in ([0-9.]+) s", log),
    }


def _base(work: Path, name: str, channel: Path, hyperparameters: dict) -> Path:
    base = work / name
    shutil.rmtree(base, ignore_errors=True)
    (base / "input/config").mkdir(parents=True)
    (base / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    (base / "input/data").mkdir(parents=True, exist_ok=True)
    shutil.copytree(channel, base / "input/data/training")
    return base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--calibration-samples", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_stop"))
    parser.add_argument(
        "--phases", default="full,imports,training,exports", help="comma-separated subset"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from sagemaker_tfod.data_prep.build import build_channel
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc

    work = args.work
    channel = work / "channel"
    if not channel.exists():
        write_synthetic_voc(work / "voc", num_images=80, image_size=args.image_size, seed=1)
        build_channel(work / "voc", channel, eval_fraction=0.25, workers=1)
    hyperparameters = {
        "image_size": str(args.image_size),
        "batch_size": "8",
        "num_steps": "40",
        "log_interval_steps": "10",
        "quantize": "true",
        "inference_type": "QUANTIZED_UINT8",
        "calibration_samples": str(args.calibration_samples),
    }
    results = {}
    phases = args.phases.split(",")
    if "full" in phases or not (work / "full" / "checkpoints").is_dir():
        full = _base(work, "full", channel, hyperparameters)
        results["full"] = _run(full)
        saved_model = results["full"]["steps"].get("saved_model")
        if saved_model:
            results["full"]["ratio_to_saved_model"] = {
                name: round(seconds / saved_model, 2)
                for name, seconds in results["full"]["steps"].items()
            }
    if "imports" in phases:
        base = _base(work, "imports", channel, hyperparameters)
        results["imports"] = _run(base, lambda pid, _lines: _catches_sigterm(pid))
    if "training" in phases:
        base = _base(work, "training", channel, {**hyperparameters, "num_steps": "2000"})
        results["training"] = _run(
            base,
            lambda _pid, lines: any(" metric step=" in line for line in lines),
        )
    if "exports" in phases:
        base = _base(work, "exports", channel, hyperparameters)
        shutil.copytree(work / "full" / "checkpoints", base / "checkpoints")
        results["exports"] = _run(
            base, lambda _pid, lines: any("converting model.tflite" in line for line in lines)
        )
    for result in results.values():
        if result.get("after_sigterm") is not None:
            result["margin_before_sigkill"] = round(GRACE_S - result["after_sigterm"], 1)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
