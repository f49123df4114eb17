"""Fixtures of the image tests (`make image-test`; not part of `make test`).

`image` builds this checkout's Dockerfile once per session on the cached stand-in base and
returns a `BuiltImage`; `opt_ml` lays out a SageMaker tree on the host for one container run.
A new check of the same image (the `serve` command, say) is one more test module here using
`image`, `opt_ml` and `image_engine.run_image` / `started_container`.

`IMAGE_TEST_REUSE=1` (ignored under CI) reuses the image the previous run built, to iterate on
the tests themselves.

Where podman cannot run (not root, podman missing) the tests fail under CI (`CI` set, as
.ci/run is run) and are skipped with the reason when run by hand.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import sys

import image_engine
import pytest

TESTS = pathlib.Path(__file__).resolve().parents[1]


def _suite_conftest():
    """tests/conftest.py as a module (its `make_base_dir` and tiny training settings)."""
    spec = importlib.util.spec_from_file_location("suite_conftest", TESTS / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


suite = _suite_conftest()
TINY_PIPELINE_YAML: str = suite.TINY_PIPELINE_YAML
TINY_HYPERPARAMETERS: dict[str, str] = suite.TINY_HYPERPARAMETERS

_built: list[image_engine.BuiltImage] = []
# Lines the tests want a person to read at the end of the run (the stop-and-resume figures).
report_lines: list[str] = []


@pytest.fixture(scope="session")
def image() -> image_engine.BuiltImage:
    reason = image_engine.why_podman_cannot_run()
    if reason:
        suite.cannot_run_here(f"the image test cannot run here: {reason}")
    cache = image_engine.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    podman = image_engine.Podman.at(cache / "podman")
    # One tag per checkout, so two worktrees on one machine do not replace each other's image.
    checkout = hashlib.sha256(str(image_engine.REPO).encode()).hexdigest()[:12]
    tag = f"localhost/tfod-image-test:{checkout}"
    if os.environ.get("IMAGE_TEST_REUSE") and not os.environ.get("CI"):
        # For iterating on the tests themselves: the image the previous run built, as it is.
        built = image_engine.existing_image(podman, cache, tag)
    else:
        built = image_engine.build_image(podman, cache, tag)
    _built.append(built)
    return built


def pytest_terminal_summary(terminalreporter):
    for built in _built:
        terminalreporter.write_line(f"image test: {built.summary()}")
    for line in report_lines:
        terminalreporter.write_line(f"image test: {line}")


@pytest.fixture
def opt_ml(tmp_path, synthetic_channel):
    """A factory: `opt_ml(hyperparameters)` -> a host folder laid out as SageMaker's /opt/ml,
    with a copy of the session's synthetic channel (shrunk by the tiny pipeline.yaml)."""

    def make(hyperparameters: dict[str, str], name: str = "opt_ml") -> pathlib.Path:
        return make_opt_ml(tmp_path / name, synthetic_channel, hyperparameters)

    return make


def make_opt_ml(
    root: pathlib.Path, channel: pathlib.Path, hyperparameters: dict[str, str]
) -> pathlib.Path:
    """`root` laid out as /opt/ml: hyperparameters.json and a copy of `channel` as `training`."""
    return suite.make_base_dir(root, channel, hyperparameters)


@pytest.fixture(scope="session")
def train_run(image, tmp_path_factory, synthetic_channel):
    """`IMAGE train` with every export (frozen graph, float and int8 TFLite): the model the
    training checks inspect and the serving check serves."""
    hyperparameters = {
        **TINY_HYPERPARAMETERS,
        "export_edge": "true",
        "quantize": "true",
        "inference_type": "QUANTIZED_UINT8",
        "calibration_samples": "8",
    }
    opt_ml = make_opt_ml(
        tmp_path_factory.mktemp("train") / "opt_ml", synthetic_channel, hyperparameters
    )
    return opt_ml, image_engine.run_image(image, opt_ml, ["train"], timeout=1500)
