"""SageMaker's stop and a full disk, on real `python -m container` processes (tiny model).

SIGTERM is sent at a known phase: during `import tensorflow` (seen from /proc: the moment
the handler is installed), and during the exports (seen from the log). The grace period and
margin are shrunk through the hyperparameters so each test ends in seconds. (A stop during
training is tested with the resumed run of test_container_train.py.) The full disk is a
small tmpfs mounted where the model or the checkpoints go.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    REPO,
    TINY_HYPERPARAMETERS,
    container_command,
    container_env,
    make_base_dir,
)
from fault_helpers import small_filesystem

pytestmark = pytest.mark.slow

# Float edge exports only: int8 under a stop is covered by the training-phase run, and
# the export command below would spend a minute calibrating it. No ONNX either (its own
# tests convert it), so the logged command must carry --no-onnx through.
EDGE_EXPORTS = {"export_edge": "true", "quantize": "false", "export_onnx": "false"}


@dataclass
class StoppedRun:
    base: Path
    returncode: int
    log: str
    seconds: float  # from the SIGTERM to the end of the process

    @property
    def failure(self) -> str:
        path = self.base / "output" / "failure"
        return path.read_text() if path.exists() else ""

    def json(self, name: str) -> dict:
        return json.loads((self.base / "model" / name).read_text())


def catches(pid: int, signum: int) -> bool:
    """True once process `pid` has a handler for `signum` (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    return False


def run_and_stop(base: Path, ready: Callable[[int, list[str]], bool], timeout=600) -> StoppedRun:
    """`python -m container train` on `base`; SIGTERM as soon as `ready(pid, log lines)`."""
    process = subprocess.Popen(
        container_command(),
        env=container_env(base),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    try:
        give_up = time.monotonic() + timeout
        while not ready(process.pid, lines):
            if process.poll() is not None or time.monotonic() > give_up:
                pytest.fail(f"the phase to stop in never came:\n{''.join(lines)[-3000:]}")
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        stopped_at = time.monotonic()
        process.wait(timeout=timeout)
        seconds = time.monotonic() - stopped_at
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    return StoppedRun(base, process.returncode, "".join(lines), seconds)


def test_a_stop_during_the_imports_ends_with_a_failure_file(synthetic_channel, tmp_path):
    """Before the fix this exited 143 with no output/failure. The deadline (4 - 1 = 3 s)
    ends the job even if the imports are not done by then."""
    grace = 4.0
    base = make_base_dir(
        tmp_path / "opt_ml",
        synthetic_channel,
        {**TINY_HYPERPARAMETERS, "stop_grace_seconds": str(grace), "stop_margin_seconds": "1"},
    )
    run = run_and_stop(base, lambda pid, _lines: catches(pid, signal.SIGTERM))
    assert run.returncode == 1, run.log[-3000:]
    assert "stopped" in run.failure and "before training started" in run.failure, run.failure
    assert len(run.failure.strip().splitlines()) == 1
    assert not (base / "model" / "saved_model").exists()
    assert run.seconds < grace
    print(f"stop during the imports: ended {run.seconds:.2f} s after SIGTERM (grace {grace} s)")


@pytest.fixture(scope="module")
def stopped_in_exports(trained_run, tmp_path_factory) -> StoppedRun:
    """The trained run's checkpoint (step 6 of 6: nothing to train), edge exports asked for;
    SIGTERM while the SavedModel is being evaluated, 2 s before the deadline."""
    base = make_base_dir(
        tmp_path_factory.mktemp("stopped_in_exports") / "opt_ml",
        trained_run.channel_dir,
        {
            **TINY_HYPERPARAMETERS,
            **EDGE_EXPORTS,
            "stop_grace_seconds": "5",
            "stop_margin_seconds": "3",
        },
        pipeline_yaml=None,  # the copied channel already holds it
    )
    shutil.copytree(trained_run.checkpoint_dir, base / "checkpoints")
    return run_and_stop(
        base, lambda _pid, lines: any("evaluating the SavedModel on" in line for line in lines)
    )


def test_a_stop_during_the_exports_keeps_the_savedmodel_and_lists_the_rest(stopped_in_exports):
    run = stopped_in_exports
    assert run.returncode == 0, run.log[-3000:]
    assert run.seconds < 5.0
    assert "stop deadline reached" in run.log  # the evaluation was cut off, not waited for
    assert (run.base / "model/saved_model/saved_model.pb").is_file()
    assert not run.failure
    metrics = run.json("metrics.json")
    skipped = metrics["skipped_exports"]
    assert "cut off at the stop deadline" in skipped["metrics.json eval"]["reason"]
    for name in ("frozen_inference_graph.pb", "model.tflite"):
        assert "not started" in skipped[name]["reason"]
        assert not (run.base / "model" / name).exists()
    export_json = run.json("export.json")
    assert set(export_json["skipped"]) >= {"frozen_inference_graph.pb", "model.tflite"}
    assert export_json["files"] == {}
    hidden = [p.name for p in (run.base / "model").iterdir() if p.name.startswith(".")]
    assert hidden == []
    print(f"stop during the exports: ended {run.seconds:.2f} s after SIGTERM (grace 5 s)")


def test_the_logged_export_command_writes_what_the_stop_left_out(stopped_in_exports):
    """The exact command export.json gives, run from the repository (in the image:
    `docker run IMAGE export ...`)."""
    model = stopped_in_exports.base / "model"
    command = stopped_in_exports.json("export.json")["skipped"]["model.tflite"]["command"]
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "container", "export"]
    assert "--no-onnx" in words
    done = subprocess.run(
        [sys.executable, *words[1:]],
        cwd=REPO,
        env=container_env(stopped_in_exports.base),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    for name in ("frozen_inference_graph.pb", "model.tflite", "eval.png", "export.png"):
        assert (model / name).is_file(), name
    export_json = json.loads((model / "export.json").read_text())
    assert "skipped" not in export_json
    assert set(export_json["files"]) == {"saved_model", "frozen_inference_graph.pb", "model.tflite"}
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["step"] == 6 and metrics["eval"] is not None
    assert "skipped_exports" not in metrics


def test_a_disk_that_fills_up_during_an_export_is_one_line(trained_run, tmp_path):
    """`export` into a tmpfs half the SavedModel's size (the first and largest write): one
    line, exit 1, no staging folder or partial SavedModel left."""
    saved_model_bytes = sum(
        p.stat().st_size for p in (trained_run.model_dir / "saved_model").rglob("*") if p.is_file()
    )
    size_kb = saved_model_bytes // 2048
    with small_filesystem(tmp_path / "disk", f"{size_kb}k") as disk:
        model = disk / "model"
        model.mkdir()
        shutil.copy(trained_run.model_dir / "pipeline.yaml", model / "pipeline.yaml")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "container",
                "export",
                "--checkpoint",
                str(trained_run.checkpoint_dir),
                "--channel",
                str(trained_run.channel_dir),
                "--model-dir",
                str(model),
            ],
            cwd=REPO,
            env=container_env(trained_run.base_dir),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        left = sorted(p.name for p in model.iterdir())
        saved_model_complete = (model / "saved_model" / "saved_model.pb").is_file()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert len(errors) == 1 and "no space left on the device" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert [name for name in left if name.startswith(".") or ".tmp" in name] == []
    assert "saved_model" not in left or saved_model_complete
    assert "export.json" not in left and "metrics.json" not in left  # nothing claims a model
    print(f"full disk during export: {errors[0]}; left {left}")


def test_a_disk_that_fills_up_with_checkpoints_ends_with_a_failure_file(
    synthetic_channel, tmp_path
):
    base = make_base_dir(tmp_path / "opt_ml", synthetic_channel, TINY_HYPERPARAMETERS)
    with small_filesystem(base / "checkpoints", "1m"):
        done = subprocess.run(
            container_command(),
            env=container_env(base),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        left = sorted(p.name for p in (base / "checkpoints").iterdir())
    failure = (base / "output" / "failure").read_text()
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert len(failure.strip().splitlines()) == 1
    assert "no space left on the device" in failure and "--volume-gb" in failure, failure
    assert not [name for name in left if name.endswith(".index")], left  # no checkpoint claimed
    assert not [name for name in left if "_temp" in name], left  # TF's partial one is removed
    assert not (base / "model" / "saved_model").exists()
    print(f"full disk with checkpoints: left {left}; failure: {failure.strip()[:200]}")
