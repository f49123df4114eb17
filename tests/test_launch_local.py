"""launch against the container's real training: metric regexes and `launch local`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from conftest import TINY_HYPERPARAMETERS, TINY_PIPELINE_YAML
from launch_helpers import sagemaker_metrics

from sagemaker_tfod.container.metrics import METRIC_DEFINITIONS, parse_metric_line
from sagemaker_tfod.launch.training_job import build_create_training_job_request

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_metric_definitions_read_real_training_lines(trained_run):
    metric_lines = [line for line in trained_run.log.splitlines() if parse_metric_line(line)]
    assert metric_lines, "the training run printed no `metric` lines"
    assert all(" INFO training: metric step=" in line for line in metric_lines), metric_lines[0]
    expected: dict[str, list[float]] = {}
    for line in metric_lines:
        step, values = parse_metric_line(line)
        prefix = "eval" if "AP" in values else "train"
        if prefix == "train":
            expected.setdefault("train:step", []).append(float(step))
        for key, value in values.items():
            expected.setdefault(f"{prefix}:{key}", []).append(value)
    found = sagemaker_metrics(trained_run.log.splitlines(), METRIC_DEFINITIONS)
    assert "train:total_loss" in found
    names = {definition["Name"] for definition in METRIC_DEFINITIONS}
    for name, values in expected.items():
        if name in names:
            assert found.get(name) == pytest.approx(values, nan_ok=True), name
    # Every definition the job sends finds its value in a real log line.
    request_names = [
        item["Name"]
        for item in build_create_training_job_request(_spec(), METRIC_DEFINITIONS)[
            "AlgorithmSpecification"
        ]["MetricDefinitions"]
    ]
    train_names = [name for name in request_names if name.startswith("train:")]
    assert all(name in found for name in train_names), set(train_names) - set(found)


def _spec():
    from sagemaker_tfod.launch.training_job import TrainingJobSpec

    return TrainingJobSpec(
        job_name="j",
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1",
        role_arn="arn:aws:iam::123456789012:role/r",
        training_s3_uri="s3://my-bucket/c",
        output_s3_uri="s3://my-bucket/o",
        checkpoint_s3_uri="s3://my-bucket/k",
        instance_type="ml.g4dn.xlarge",
    )


@pytest.mark.slow
def test_launch_local_trains_with_the_container(synthetic_channel, tmp_path):
    channel = tmp_path / "channel"
    shutil.copytree(synthetic_channel, channel)
    (channel / "pipeline.yaml").write_text(TINY_PIPELINE_YAML)
    (tmp_path / "launch.toml").write_text(
        "[hyperparameters]\n" + "".join(f'{k} = "{v}"\n' for k, v in TINY_HYPERPARAMETERS.items())
    )
    base = tmp_path / "opt_ml"
    result = subprocess.run(
        [sys.executable, "-m", "launch", "local", str(channel), "--base-dir", str(base),
         "--config", str(tmp_path / "launch.toml"), "--hp", "num_steps=4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"model_dir": str(base / "model")}
    hyperparameters = json.loads((base / "input/config/hyperparameters.json").read_text())
    assert hyperparameters["num_steps"] == "4"  # --hp over launch.toml, as a string
    assert (base / "input/data/training").resolve() == channel.resolve()
    assert (base / "model" / "saved_model").is_dir()
    assert (base / "model" / "labels.txt").read_text().split() == (
        channel / "labels.txt"
    ).read_text().split()
    steps = [
        parse_metric_line(line)[0] for line in result.stdout.splitlines() if parse_metric_line(line)
    ]
    assert steps and max(steps) <= 4


def test_launch_local_failure_is_one_line(tmp_path):
    empty = tmp_path / "channel"
    empty.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "launch", "local", str(empty), "--base-dir", str(tmp_path / "b"),
         "--config", str(tmp_path / "none.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "config file not found" in result.stderr

    result = subprocess.run(
        [sys.executable, "-m", "launch", "local", str(empty), "--base-dir", str(tmp_path / "b")],
        cwd=tmp_path,
        env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: local training failed (exit 1):")
