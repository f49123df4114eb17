"""`IMAGE serve`, as SageMaker hosting starts it: the model the image itself trained, mounted at
/opt/ml/model, answers a JPEG over HTTP on the published port, and `podman stop` (SIGTERM to
PID 1) ends it within SageMaker's 30 s."""

from __future__ import annotations

import os
import time

import image_engine
import serving_helpers

STOP_GRACE_SECONDS = 30  # what SageMaker hosting gives a container between SIGTERM and SIGKILL


def test_serve_answers_a_jpeg_from_the_model_the_image_trained(image, train_run, synthetic_voc):
    opt_ml, trained = train_run
    assert trained.returncode == 0, trained.log[-4000:]
    jpeg = sorted((synthetic_voc / "images").glob("*.jpg"))[0].read_bytes()
    port = serving_helpers.free_port()
    name = f"tfod-serve-{os.getpid()}"
    with image_engine.started_container(
        image, opt_ml, ["serve"], name=name, publish=[f"127.0.0.1:{port}:8080"]
    ) as process:
        answer = serving_helpers.check_serves_jpeg(f"http://127.0.0.1:{port}", jpeg)
        assert answer["width"] == answer["height"] == 96
        assert answer["model"]["file"].endswith(".tflite"), answer["model"]  # the CPU default
        started = time.monotonic()
        stop = image.podman.run(
            "stop", "--time", str(STOP_GRACE_SECONDS), name,
            timeout=STOP_GRACE_SECONDS + 30, check=False,
        )  # fmt: skip
        stop_seconds = time.monotonic() - started
        log, _ = process.communicate(timeout=60)
    assert process.returncode == 0, (stop.stdout + stop.stderr + log)[-4000:]
    assert stop_seconds < STOP_GRACE_SECONDS, f"{stop_seconds:.1f} s"
    assert "Traceback" not in log, log[-4000:]
