"""Real training runs of `python -m container train` on CPU (tiny model, a few steps)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import (
    REPO,
    TINY_HYPERPARAMETERS,
    checkpoint_archive,
    container_command,
    container_env,
    make_base_dir,
    run_container,
)

from sagemaker_tfod.container.metrics import METRIC_DEFINITIONS, parse_metric_line

pytestmark = pytest.mark.slow

MODEL_FILES = (
    "saved_model/saved_model.pb",
    "label_map.pbtxt",
    "labels.txt",
    "pipeline.yaml",
    "metrics.json",
    "eval.png",
)


def metric_steps(log: str) -> list[int]:
    steps = []
    for line in log.splitlines():
        parsed = parse_metric_line(line)
        if parsed and "total_loss" in parsed[1]:
            steps.append(parsed[0])
    return steps


def test_a_run_writes_every_output(trained_run):
    for name in MODEL_FILES:
        assert (trained_run.model_dir / name).is_file(), name
    assert (trained_run.model_dir / "labels.txt").read_text() == "circle\nsquare\ntriangle\n"
    assert (trained_run.checkpoint_dir / "ckpt-6.index").is_file()
    assert list((trained_run.base_dir / "output/tensorboard/train").glob("events.out.tfevents*"))
    assert list((trained_run.base_dir / "output/tensorboard/validation").glob("events.out.*"))
    assert not (trained_run.base_dir / "output/failure").exists()
    metrics = trained_run.metrics
    assert metrics["step"] == 6
    assert metrics["stopped_early"] is False
    assert set(metrics["eval"]["per_class"]) == {"circle", "square", "triangle"}
    for values in metrics["eval"]["per_class"].values():
        assert -1.0 <= values["AP"] <= 1.0
    assert 0.0 <= metrics["eval"]["overall"]["AP50"] <= 1.0
    assert "AP" in metrics["model_garden_eval"]
    resolved = (trained_run.model_dir / "pipeline.yaml").read_text()
    assert "num_classes: 4" in resolved
    assert "num_filters: 32" in resolved  # the channel's pipeline.yaml override


def test_eval_png_is_a_picture(trained_run):
    from PIL import Image

    with Image.open(trained_run.model_dir / "eval.png") as image:
        assert image.width >= 600
        assert image.height >= 400
        colours = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(colours[::97], axis=0)) > 20  # not a blank canvas


def test_metric_lines_match_the_metric_definitions(trained_run):
    assert metric_steps(trained_run.log) == [3, 6]  # one line per interval, no echoes
    assert "train | step:" not in trained_run.log  # Orbit's own dumps are replaced
    assert trained_run.log.count("progress: step 3/6") == 1
    found = {}
    for definition in METRIC_DEFINITIONS:
        for line in trained_run.log.splitlines():
            match = re.search(definition["Regex"], line)
            if match:
                found[definition["Name"]] = float(match.group(1))
    for name in ("train:step", "train:total_loss", "train:learning_rate", "train:steps_per_sec"):
        assert name in found
    for name in ("eval:AP", "eval:AP50", "eval:AP75"):
        assert 0.0 <= found[name] <= 1.0


def test_saved_model_takes_uint8_images_of_any_size(trained_run):
    import tensorflow as tf

    serve = tf.saved_model.load(str(trained_run.model_dir / "saved_model")).signatures[
        "serving_default"
    ]
    for height, width in ((50, 70), (130, 90)):
        image = tf.zeros([1, height, width, 3], tf.uint8)
        outputs = serve(inputs=image)
        boxes = outputs["detection_boxes"].numpy()
        assert boxes.shape[-1] == 4
        assert boxes.min() >= 0.0
        assert boxes.max() <= 1.0  # normalised, whatever the input size
        classes = outputs["detection_classes"].numpy()
        count = int(outputs["num_detections"].numpy()[0])
        assert set(np.unique(classes[0][:count])) <= {1, 2, 3}


# SageMaker's SIGTERM -> SIGKILL; the job runs with the default grace and margin.
SAGEMAKER_GRACE_SECONDS = 120.0


@pytest.fixture(scope="module")
def resumed_then_stopped(trained_run, tmp_path_factory):
    """Reuse the trained run's checkpoints, train towards 400 steps, SIGTERM after one loop;
    edge exports and int8 asked for, SageMaker's grace period (the defaults)."""
    base = make_base_dir(
        tmp_path_factory.mktemp("sigterm") / "opt_ml",
        trained_run.channel_dir,
        {
            **TINY_HYPERPARAMETERS,
            "num_steps": "400",
            "log_interval_steps": "2",
            "export_edge": "true",
            "quantize": "true",
            "inference_type": "INT8",
            "calibration_samples": "8",
        },
        pipeline_yaml=None,  # the copied channel already holds it
    )
    shutil.copytree(trained_run.checkpoint_dir, base / "checkpoints")
    process = subprocess.Popen(
        container_command(),
        env=container_env(base),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if parse_metric_line(line):
            process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            break
    rest, _ = process.communicate(timeout=600)
    seconds = time.monotonic() - stopped_at
    print(f"SIGTERM during training: ended {seconds:.1f} s later")
    return base, process.returncode, "".join(lines) + rest, seconds


def test_second_run_resumes_from_the_checkpoints(resumed_then_stopped):
    _base, _returncode, log, _seconds = resumed_then_stopped
    assert "resuming from step 6" in log
    assert metric_steps(log)[0] == 8  # continues after step 6


def test_sigterm_saves_a_checkpoint_exports_and_exits_cleanly(resumed_then_stopped):
    base, returncode, log, seconds = resumed_then_stopped
    assert returncode == 0, log[-3000:]
    assert "SIGTERM received" in log
    metrics = json.loads((base / "model/metrics.json").read_text())
    assert metrics["stopped_early"] is True
    stopped_at = metrics["step"]
    assert 8 <= stopped_at < 400
    assert (base / f"checkpoints/ckpt-{stopped_at}.index").is_file()
    assert (base / "model/saved_model/saved_model.pb").is_file()
    assert not (base / "output/failure").exists()
    assert seconds < SAGEMAKER_GRACE_SECONDS


def test_sigterm_exports_what_fits_and_says_how_to_make_the_rest(resumed_then_stopped):
    """SavedModel first; then what fits before the deadline (on 2 shared cores, int8 usually
    does not); whatever was left out is listed with the command that writes it from the
    checkpoint, and nothing half-written remains. (test_faults_stop.py cuts exports short
    deterministically, with a 5 s grace period.)"""
    base, returncode, log, _seconds = resumed_then_stopped
    assert returncode == 0, log[-3000:]
    model = base / "model"
    metrics = json.loads((model / "metrics.json").read_text())
    skipped = metrics.get("skipped_exports", {})
    for name, entry in skipped.items():
        assert entry["reason"], name
        assert entry["command"].startswith("python -m container export --checkpoint ")
        assert f"ckpt-{metrics['step']}" in entry["command"]
        assert "--quantize --inference-type INT8" in entry["command"]
        assert f"{name}: " in log  # and in the log
    export_json = json.loads((model / "export.json").read_text())
    assert export_json.get("skipped", {}).keys() <= skipped.keys()
    for name in ("frozen_inference_graph.pb", "model.tflite", "model_int8.tflite"):
        written = (model / name).is_file()
        assert written == (name in export_json["files"]), name
        assert written or name in skipped, name
    hidden = [p.name for p in model.iterdir() if p.name.startswith(".") or ".tmp" in p.name]
    assert hidden == []
    print(f"SIGTERM during training left out: {sorted(skipped) or 'nothing'}")


def two_class_channel(synthetic_voc, tmp_path, eval_fraction):
    from sagemaker_tfod.data_prep.build import build_channel

    classes = tmp_path / "classes.txt"
    classes.write_text("circle\nsquare\n")
    channel = tmp_path / "two_class_channel"
    build_channel(
        synthetic_voc,
        channel,
        eval_fraction=eval_fraction,
        workers=1,
        label_map=classes,
        skip_unknown_classes=True,
    )
    return channel


def test_backbone_and_decoder_from_an_archive_across_class_counts(
    trained_run, synthetic_voc, tmp_path
):
    """A 2-class, train-only channel starts from the 3-class run's backbone and FPN, given as
    the .tar.gz Model Garden publishes; every variable of both is counted as restored."""
    channel = two_class_channel(synthetic_voc, tmp_path, eval_fraction=0.0)
    base = make_base_dir(
        tmp_path / "opt_ml",
        channel,
        {
            **TINY_HYPERPARAMETERS,
            "num_steps": "2",
            "log_interval_steps": "2",
            "init_checkpoint_modules": "Backbone, Decoder",
        },
    )
    (base / "input/data/checkpoint").mkdir(parents=True)
    checkpoint_archive(trained_run.checkpoint_dir, base / "input/data/checkpoint/tiny.tar.gz")
    run = run_container(base)
    assert run.returncode == 0, run.log[-3000:]
    assert "Finished loading pretrained checkpoint" in run.log
    restored = dict(
        re.findall(r"(backbone|decoder|head): restored (\d+ of \d+) variables", run.log)
    )
    assert restored == {"backbone": "260 of 260", "decoder": "37 of 37"}, run.log[-3000:]
    assert "no eval examples" in run.log
    metrics = run.metrics
    assert metrics["eval"] is None
    assert "nothing was evaluated" in metrics["note"]
    assert (run.model_dir / "eval.png").is_file()
    assert (run.model_dir / "labels.txt").read_text() == "circle\nsquare\n"


def test_all_with_another_class_count_is_a_clear_error(trained_run, synthetic_voc, tmp_path):
    channel = two_class_channel(synthetic_voc, tmp_path, eval_fraction=0.25)
    base = make_base_dir(
        tmp_path / "opt_ml",
        channel,
        {**TINY_HYPERPARAMETERS, "init_checkpoint_modules": "all"},
    )
    shutil.copytree(trained_run.checkpoint_dir, base / "input/data/checkpoint")
    run = run_container(base)
    assert run.returncode == 1, run.log[-3000:]
    expected = (
        "does not fit model=retinanet_mobilenetv2_fpnlite_320 with init_checkpoint_modules=all"
    )
    assert expected in run.failure
    assert "head: of 82 model variables, 2 differ in shape" in run.failure
    assert "use init_checkpoint_modules=backbone,decoder to start a new head" in run.failure
    assert len(run.failure.strip().splitlines()) == 1


def test_nan_loss_stops_with_the_step_and_the_cause(synthetic_channel, tmp_path):
    base = make_base_dir(
        tmp_path / "opt_ml",
        synthetic_channel,
        {
            **TINY_HYPERPARAMETERS,
            "learning_rate": "1e12",
            "warmup_steps": "0",
            "log_interval_steps": "2",
            "num_steps": "20",
        },
    )
    run = run_container(base)
    assert run.returncode == 1, run.log[-3000:]
    assert re.search(r"the training loss became (nan|inf) by step \d+", run.failure)
    assert "lower learning_rate" in run.failure
    assert max(metric_steps(run.log)) < 20


def test_resuming_checkpoints_of_another_model_is_a_clear_error(
    trained_run, synthetic_voc, tmp_path
):
    channel = two_class_channel(synthetic_voc, tmp_path, eval_fraction=0.25)
    base = make_base_dir(tmp_path / "opt_ml", channel, TINY_HYPERPARAMETERS)
    shutil.copytree(trained_run.checkpoint_dir, base / "checkpoints")
    run = run_container(base)
    assert run.returncode == 1, run.log[-3000:]
    assert "cannot resume from" in run.failure
    assert "new checkpoint S3 location" in run.failure
