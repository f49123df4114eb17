"""The stop deadline, the export sequence's choices under it, the watchdog (in a real
process whose main thread is stuck in C, as in a TensorFlow call), and the command table."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO

from sagemaker_tfod.container.export_sequence import ExportSequence, ExportSettings, ExportStep
from sagemaker_tfod.container.stopping import GracefulStop


def test_the_deadline_is_arrival_plus_grace_minus_margin():
    stop = GracefulStop(grace_seconds=120, margin_seconds=15)
    assert stop.deadline is None and stop.remaining() == float("inf") and stop.allows(1e9)
    arrival = time.monotonic() - 5.0  # the signal arrived 5 s ago
    stop.flag.set("SIGTERM", at=arrival)
    stop.flag.set("SIGINT")  # a second signal does not move the deadline
    assert stop.flag.signal_name == "SIGTERM"
    assert stop.deadline == pytest.approx(arrival + 105)
    assert 99 < stop.remaining() <= 100
    stop.configure(grace_seconds=10, margin_seconds=2)  # the job's settings, read later
    assert 2 < stop.remaining() <= 3
    assert stop.allows(2) and not stop.allows(4)


def _steps(log: list[str], slow_saved_model: float = 0.0) -> list[ExportStep]:
    def step(name: str, seconds: float = 0.0):
        def run() -> None:
            time.sleep(seconds)
            log.append(name)

        return run

    return [
        ExportStep("saved_model", step("saved_model", slow_saved_model), required=True),
        ExportStep("report", step("report"), factor=1.0),
        ExportStep("model.tflite", step("model.tflite"), factor=100.0),
        ExportStep("model_int8.tflite", step("int8"), factor=0.1, needs=("model.tflite",)),
    ]


def test_without_a_stop_every_step_runs():
    log, records = [], []
    state = ExportSequence(None, lambda *a: records.append(a), lambda _m: None).run(_steps(log))
    assert log == ["saved_model", "report", "model.tflite", "int8"]
    assert state.skipped == {} and records == [({}, True)]


def test_after_a_stop_only_what_fits_runs_and_the_rest_is_recorded():
    stop = GracefulStop(grace_seconds=15, margin_seconds=5)  # not installed: no signals here
    stop.flag.set("SIGTERM")
    log, records = [], []
    state = ExportSequence(stop, lambda *a: records.append(a), lambda _m: None).run(
        _steps(log, slow_saved_model=0.2)
    )
    # The SavedModel always; the report (~0.2 s) fits; model.tflite (~20 s) does not in 10 s;
    # int8 fits by its estimate but needs model.tflite.
    assert log == ["saved_model", "report"]
    assert re.search(r"it needs about \d+ s and \d+ s were left", state.skipped["model.tflite"])
    assert state.skipped["model_int8.tflite"] == "needs model.tflite, which was left out"
    assert records[-1] == (state.skipped, True)
    # Before each step, records that would hold if the job died in it (SIGKILL included).
    first, _complete = records[0]
    assert first["saved_model"] == "the job ended during it"
    assert first["report"].startswith("not started")
    assert [r for r, complete in records if not complete][1]["report"] == "the job ended during it"


def test_export_settings_give_the_matching_export_flags():
    assert ExportSettings(export_edge=False).flags() == ["--no-edge"]
    assert ExportSettings().flags() == []
    flags = ExportSettings(quantize=True, inference_type="INT8", calibration_samples=32).flags()
    assert flags == ["--quantize", "--inference-type", "INT8", "--calibration-samples", "32"]
    relaxed = ExportSettings(quantize=True, quantized_ap50_floor=0.5).flags()
    assert relaxed[-2:] == ["--quantized-ap50-floor", "0.5"]


_STUCK_IN_C = """
import ctypes, pathlib, signal, os, sys, time
from sagemaker_tfod.container.stopping import GracefulStop

stop = GracefulStop(grace_seconds=1.5, margin_seconds=0.5).install()
out = pathlib.Path(sys.argv[1])

def last_words():
    out.write_text(f"{time.monotonic() - stop.flag.stopped_at:.3f}")
    return 7

stop.on_deadline(last_words)
os.kill(os.getpid(), signal.SIGTERM)
libc = ctypes.CDLL(None)
while True:
    libc.sleep(30)  # C code that Python's own handler cannot interrupt for long
"""


def test_the_watchdog_ends_a_process_stuck_in_c_code_at_the_deadline(tmp_path):
    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent(_STUCK_IN_C))
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "last_words.txt")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 7, done.stderr
    # The deadline is 1 s after the signal; the last words ran at it, not 30 s later.
    assert 0.9 <= float((tmp_path / "last_words.txt").read_text()) < 1.5
    assert seconds < 10


def _container(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sagemaker_tfod.container", *args],  # what the image runs
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_command_table_offers_train_and_export():
    top = _container("--help")
    assert top.returncode == 0, top.stderr
    assert "train" in top.stdout and "export" in top.stdout
    assert "stop_grace_seconds" in top.stdout  # the hyperparameter table
    export = _container("export", "--help")
    assert export.returncode == 0, export.stderr
    for flag in ("--checkpoint", "--channel", "--model-dir", "--quantize", "--inference-type"):
        assert flag in export.stdout


def test_export_with_a_bad_checkpoint_is_one_line(tmp_path, synthetic_channel):
    model = tmp_path / "model"
    model.mkdir()
    (model / "pipeline.yaml").write_text(
        json.dumps({"task": {"model": {"num_classes": 4}}})  # YAML is a superset of JSON
    )
    done = _container(
        "export",
        "--checkpoint",
        str(tmp_path / "nowhere" / "ckpt-3"),
        "--channel",
        str(synthetic_channel),
        "--model-dir",
        str(model),
    )
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "not a readable checkpoint" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
