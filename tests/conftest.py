"""Shared fixtures: a synthetic channel (data_prep's synth + build), one tiny trained run, and
one tiny run with edge exports for serving.

`trained_run` trains the default preset once per session (64 px input, a narrowed MobileNetV2
and 32-filter FPN/head through the channel's pipeline.yaml, 6 steps) by running
`python -m container train` exactly as the image does; tests of the container and of the
exports reuse it instead of training again.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# Shrinks the default preset so a CPU trains it in seconds (applied via the channel's
# pipeline.yaml, which also exercises the override path).
TINY_PIPELINE_YAML = """\
task:
  model:
    backbone:
      mobilenet:
        filter_size_scale: 0.35
    decoder:
      fpn:
        num_filters: 32
    head:
      num_filters: 32
      num_convs: 2
"""
TINY_HYPERPARAMETERS = {
    "image_size": "64",
    "batch_size": "2",
    "num_steps": "6",
    "log_interval_steps": "3",
    "export_edge": "false",
}


@dataclass(frozen=True)
class TrainedRun:
    """A finished `python -m container train` run."""

    base_dir: pathlib.Path  # SAGEMAKER_BASE_DIR
    channel_dir: pathlib.Path  # input/data/training
    model_dir: pathlib.Path  # /opt/ml/model
    checkpoint_dir: pathlib.Path  # /opt/ml/checkpoints
    returncode: int
    log: str

    @property
    def failure(self) -> str:
        path = self.base_dir / "output" / "failure"
        return path.read_text() if path.exists() else ""

    @property
    def metrics(self) -> dict:
        return json.loads((self.model_dir / "metrics.json").read_text())


def cannot_run_here(reason: str) -> None:
    """This machine lacks what a test needs (root, a tmpfs, podman, aarch64 emulation): under CI
    (`CI` set, as .ci/run runs, which installs all of it) the test fails; by hand it skips."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def make_base_dir(
    base_dir: pathlib.Path,
    channel: pathlib.Path | None,
    hyperparameters: dict[str, str],
    pipeline_yaml: str | None = TINY_PIPELINE_YAML,
) -> pathlib.Path:
    """A SageMaker tree with a copy of `channel` as the training channel."""
    config = base_dir / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    if channel is not None:
        training = base_dir / "input" / "data" / "training"
        shutil.copytree(channel, training)
        if pipeline_yaml is not None:
            (training / "pipeline.yaml").write_text(pipeline_yaml)
    return base_dir


def container_command() -> list[str]:
    return [sys.executable, "-m", "container", "train"]


def container_env(base_dir: pathlib.Path) -> dict[str, str]:
    return {**os.environ, "SAGEMAKER_BASE_DIR": str(base_dir), "PYTHONPATH": str(REPO)}


def run_container(base_dir: pathlib.Path, timeout: float = 600) -> TrainedRun:
    completed = subprocess.run(
        container_command(),
        env=container_env(base_dir),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return TrainedRun(
        base_dir=base_dir,
        channel_dir=base_dir / "input" / "data" / "training",
        model_dir=base_dir / "model",
        checkpoint_dir=base_dir / "checkpoints",
        returncode=completed.returncode,
        log=completed.stdout + completed.stderr,
    )


def checkpoint_archive(checkpoint_dir: pathlib.Path, archive: pathlib.Path) -> pathlib.Path:
    """A `.tar.gz` of a run's checkpoints laid out as Model Garden publishes its COCO models:
    one top folder holding `ckpt-N.index` and `ckpt-N.data-*`."""
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(checkpoint_dir.iterdir()):
            tar.add(path, arcname=f"{archive.name.split('.')[0]}/{path.name}")
    return archive


@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory) -> pathlib.Path:
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc

    out = tmp_path_factory.mktemp("synthetic_voc")
    write_synthetic_voc(out, num_images=24, image_size=96, seed=0)
    return out


@pytest.fixture(scope="session")
def synthetic_channel(synthetic_voc, tmp_path_factory) -> pathlib.Path:
    """A 3-class channel (circle, square, triangle) with train and eval shards."""
    from sagemaker_tfod.data_prep.build import build_channel

    channel = tmp_path_factory.mktemp("channel") / "channel"
    build_channel(synthetic_voc, channel, eval_fraction=0.25, workers=1)
    return channel


@pytest.fixture(scope="session")
def trained_run(synthetic_channel, tmp_path_factory) -> TrainedRun:
    """One tiny training run of the default preset; read-only for the tests that use it."""
    base = make_base_dir(
        tmp_path_factory.mktemp("trained_run") / "opt_ml", synthetic_channel, TINY_HYPERPARAMETERS
    )
    run = run_container(base)
    if run.returncode != 0:
        pytest.fail(f"the shared training run failed ({run.returncode}):\n{run.log[-4000:]}")
    return run


# What the wheel is built from (pyproject.toml names README.md as the long description).
WHEEL_SOURCES = ("container", "data_prep", "edge", "launch", "pyproject.toml", "README.md")


def build_wheel(out: pathlib.Path) -> pathlib.Path:
    """The project's wheel, built by pip with the real build backend from a copy of the
    sources (setuptools' build/ folder in the checkout could hold deleted modules)."""
    source = out / "source"
    source.mkdir(parents=True)
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(REPO / name, source / name)
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    (built,) = out.glob("*.whl")
    return built


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> pathlib.Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def pytest_addoption(parser):
    parser.addoption(
        "--arm64",
        action="store_true",
        help="run the tests on the Raspberry Pi's platform too (tests/test_pi_arm64.py, "
        "as `make pi-test` does); without it they are deselected",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--arm64"):
        return
    deselected = [item for item in items if item.get_closest_marker("arm64")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("arm64")]


# The serving tests need every export kind (SavedModel, frozen graph, float TFLite) and
# detections to return: score_threshold 0 keeps the model's top boxes even after 6 steps.
SERVED_HYPERPARAMETERS = {
    **TINY_HYPERPARAMETERS,
    "export_edge": "true",
    "score_threshold": "0.0",
    "max_detections": "10",
}


@pytest.fixture(scope="session")
def served_model(synthetic_channel, tmp_path_factory) -> pathlib.Path:
    """The model folder of a tiny run with edge exports; read-only (the serving tests and the
    image test serve it)."""
    base = make_base_dir(
        tmp_path_factory.mktemp("served_run") / "opt_ml", synthetic_channel, SERVED_HYPERPARAMETERS
    )
    run = run_container(base)
    if run.returncode != 0:
        pytest.fail(
            f"the serving model's training run failed ({run.returncode}):\n{run.log[-4000:]}"
        )
    return run.model_dir
