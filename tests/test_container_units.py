"""Pure parts of the container: hyperparameters, metric lines, SageMaker paths, OD API reader."""

from __future__ import annotations

import json
import math
import pathlib
import re

import pytest

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.hyperparameters import (
    Hyperparameters,
    describe,
    known_names,
    parse_hyperparameters,
)
from sagemaker_tfod.container.metrics import (
    METRIC_DEFINITIONS,
    format_metric_line,
    parse_metric_line,
)
from sagemaker_tfod.container.sagemaker_env import ConfigFileError, SageMakerEnv


# --- hyperparameters --------------------------------------------------------------------
def test_strings_become_typed_values():
    hp = parse_hyperparameters(
        {
            "num_steps": "1200",
            "quantize": "True",
            "random_flip": "false",
            "learning_rate": "0.01",
            "image_size": "256",
            "inference_type": "int8",
            "sagemaker_program": "ignored",  # the SDK's own keys are not ours
        }
    )
    assert hp.num_steps == 1200
    assert hp.quantize is True
    assert hp.random_flip is False
    assert hp.learning_rate == pytest.approx(0.01)
    assert hp.image_size == 256
    assert hp.inference_type == "INT8"
    assert hp.batch_size is None  # the preset decides


def test_defaults_are_the_documented_ones():
    hp = parse_hyperparameters({})
    assert hp == Hyperparameters()
    assert hp.model == "retinanet_mobilenetv2_fpnlite_320"
    assert hp.calibration_samples == 100
    assert hp.export_edge is True
    assert hp.inference_type == "FLOAT"
    rows = {row[0]: row for row in describe()}
    assert set(rows) == set(known_names())
    assert rows["num_steps"][1:3] == ("int", "2000")
    assert rows["image_size"][2] == "preset"


def test_unknown_hyperparameter_lists_the_known_ones():
    with pytest.raises(UserError) as error:
        parse_hyperparameters({"num_step": "10"})
    message = str(error.value)
    assert "num_step" in message
    for name in ("num_steps", "quantize", "inference_type", "calibration_samples"):
        assert name in message


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("num_steps", "lots", "num_steps='lots' is not a valid int"),
        ("num_steps", "10.5", "not a valid int"),
        ("num_steps", "0", "num_steps=0 must be at least 1"),
        ("quantize", "maybe", "quantize='maybe' is not a valid bool"),
        ("learning_rate", "nan", "not a valid float"),
        ("inference_type", "FP16", "must be one of FLOAT, QUANTIZED_UINT8, INT8"),
        ("init_checkpoint_modules", "head", "'head' is not accepted; Model Garden restores"),
        ("init_checkpoint_modules", "['all']", "must be a plain comma-separated value, not a list"),
        ("init_checkpoint_modules", "decoder", "use backbone,decoder"),
        ("init_checkpoint_modules", "backbone,decoder,head", "use all, or backbone,decoder"),
        ("init_checkpoint_modules", "everything", "one of backbone, backbone,decoder, all, none"),
        ("scale_min", "2", "scale_min <= scale_max"),
        ("quantized_ap50_floor", "1.2", "quantized_ap50_floor=1.2 must be between 0 and 1"),
    ],
)
def test_bad_values_name_the_hyperparameter(key, value, expected):
    with pytest.raises(UserError, match=re.escape(expected)):
        parse_hyperparameters({key: value})


# --- metric lines -----------------------------------------------------------------------
def _definition(name: str) -> str:
    return next(d["Regex"] for d in METRIC_DEFINITIONS if d["Name"] == name)


def test_metric_lines_match_the_documented_regexes():
    train = format_metric_line(
        1200, {"total_loss": 0.41234, "learning_rate": 0.0081, "steps_per_sec": 3.1}
    )
    assert train == "metric step=1200 total_loss=0.4123 learning_rate=0.0081 steps_per_sec=3.1"
    evaluation = format_metric_line(2000, {"AP": 0.5, "AP50": 0.81, "AP75": 0.55})
    assert evaluation == "metric step=2000 AP=0.5 AP50=0.81 AP75=0.55"
    log_line = f"2026-01-01 12:00:00,000 INFO container.training: {evaluation}"
    assert re.search(_definition("eval:AP"), log_line).group(1) == "0.5"
    assert re.search(_definition("eval:AP50"), log_line).group(1) == "0.81"
    assert re.search(_definition("eval:AP75"), log_line).group(1) == "0.55"
    assert re.search(_definition("train:total_loss"), train).group(1) == "0.4123"
    assert re.search(_definition("train:learning_rate"), train).group(1) == "0.0081"
    assert re.search(_definition("train:step"), train).group(1) == "1200"
    # Train lines carry no AP and evaluation lines no loss.
    assert re.search(_definition("eval:AP"), train) is None
    assert re.search(_definition("train:total_loss"), evaluation) is None


def test_metric_definitions_fit_sagemaker():
    names = [d["Name"] for d in METRIC_DEFINITIONS]
    assert len(names) == len(set(names))
    for definition in METRIC_DEFINITIONS:
        assert set(definition) == {"Name", "Regex"}
        assert re.compile(definition["Regex"]).groups == 1
        assert len(definition["Regex"]) <= 500  # SageMaker's limit


def test_metric_values_round_trip_including_nan_and_small_numbers():
    line = format_metric_line(7, {"total_loss": float("nan"), "learning_rate": 1.5e-6})
    step, values = parse_metric_line("prefix " + line)
    assert step == 7
    assert math.isnan(values["total_loss"])
    assert values["learning_rate"] == pytest.approx(1.5e-6)
    assert re.search(_definition("train:learning_rate"), line).group(1) == "1.5000e-06"
    assert parse_metric_line("train | step: 3 | steps/sec: 0.3") is None


# --- SageMaker paths --------------------------------------------------------------------
def test_base_dir_override_moves_every_path(tmp_path):
    env = SageMakerEnv.from_environ({"SAGEMAKER_BASE_DIR": str(tmp_path)})
    assert env.training_dir == tmp_path / "input/data/training"
    assert env.checkpoint_channel_dir == tmp_path / "input/data/checkpoint"
    assert env.hyperparameters_file == tmp_path / "input/config/hyperparameters.json"
    assert env.checkpoints_dir == tmp_path / "checkpoints"
    assert env.failure_file == tmp_path / "output/failure"
    assert env.tensorboard_dir == tmp_path / "output/tensorboard"
    assert SageMakerEnv.from_environ({}).base_dir == pathlib.Path("/opt/ml")


def test_hyperparameters_file_is_read_as_strings(tmp_path):
    env = SageMakerEnv(tmp_path)
    assert env.read_hyperparameters() == {}  # no file: no hyperparameters
    env.config_dir.mkdir(parents=True)
    env.hyperparameters_file.write_text(json.dumps({"num_steps": 5, "quantize": True}))
    assert env.read_hyperparameters() == {"num_steps": "5", "quantize": "true"}
    env.hyperparameters_file.write_text("{not json")
    with pytest.raises(ConfigFileError, match=r"hyperparameters\.json: not valid JSON"):
        env.read_hyperparameters()


def test_json_quoted_values_from_the_sdk_mean_the_bare_values():
    """The SDK's framework estimators JSON-encode values: '"retinanet_..."', '"10"', '"true"'."""
    hp = parse_hyperparameters(
        {
            "model": '"retinanet_spinenet49_mobile_384"',
            "num_steps": '"10.0"',
            "quantize": '"true"',
            "inference_type": '"int8"',
            "init_checkpoint_modules": "Backbone",
        }
    )
    assert (
        parse_hyperparameters(
            {"init_checkpoint_modules": '"Decoder, BACKBONE"'}
        ).init_checkpoint_modules
        == "backbone,decoder"
    )
    assert hp.model == "retinanet_spinenet49_mobile_384"
    assert hp.num_steps == 10
    assert hp.quantize is True
    assert hp.inference_type == "INT8"
    assert hp.init_checkpoint_modules == "backbone"
    with pytest.raises(UserError, match=re.escape("num_steps='1k' is not a valid int")):
        parse_hyperparameters({"num_steps": '"1k"'})


def test_a_broken_install_still_writes_the_failure_file(tmp_path, monkeypatch):
    """Even an import error of the training stack ends in output/failure and exit 2."""
    import sys

    from sagemaker_tfod.container.__main__ import EXIT_INTERNAL_ERROR, train

    monkeypatch.setitem(sys.modules, "sagemaker_tfod.container.job", None)  # makes the import fail
    env = SageMakerEnv(tmp_path)
    assert train(env) == EXIT_INTERNAL_ERROR
    failure = env.failure_file.read_text()
    assert "internal error (ModuleNotFoundError" in failure
    assert len(failure.strip().splitlines()) == 1


def test_stale_temporaries_of_a_killed_run_are_removed_from_model(tmp_path):
    from sagemaker_tfod.container import export

    model = tmp_path / "model"
    for folder in (".export-abc123", ".saved_model.tmp-x1", "saved_model"):
        (model / folder / "variables").mkdir(parents=True)
    stale_files = (".labels.txt.tmp-k2", "model.tflite.tmp", "eval.png.tmp.png", ".trial-a.tflite")
    for name in (*stale_files, "labels.txt", "metrics.json"):
        (model / name).write_text("x")
    removed = export.remove_stale_temporaries(model)
    assert sorted(p.name for p in model.iterdir()) == ["labels.txt", "metrics.json", "saved_model"]
    assert len(removed) == 6
    assert export.EXPORT_STAGING_PREFIX.startswith(".")  # the export's own staging name is stale
    assert export.is_stale_temporary(export.EXPORT_STAGING_PREFIX + "abc")


def test_a_sigterm_during_setup_ends_with_a_failure_file_not_a_kill(
    synthetic_channel, tmp_path, monkeypatch
):
    """SIGTERM while the channel is scanned: output/failure says so and the exit code is 1,
    without training; stale export folders of an earlier run are gone from model/."""
    import os
    import signal

    from conftest import TINY_HYPERPARAMETERS, make_base_dir

    from sagemaker_tfod.container import job
    from sagemaker_tfod.container.__main__ import EXIT_USER_ERROR, train

    env = SageMakerEnv(make_base_dir(tmp_path / "opt_ml", synthetic_channel, TINY_HYPERPARAMETERS))
    (env.model_dir / ".export-killed").mkdir(parents=True)
    real_scan = job.channel_lib.scan_split

    def scan_while_stopped(shards):
        os.kill(os.getpid(), signal.SIGTERM)  # SageMaker's stop notice, mid-setup
        return real_scan(shards)

    def unhandled(signum, frame):
        raise RuntimeError("SIGTERM reached the process's own handler: the job would be killed")

    monkeypatch.setattr(job.channel_lib, "scan_split", scan_while_stopped)
    monkeypatch.setattr(job.training, "run_training", None)  # training must not start
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        assert train(env) == EXIT_USER_ERROR
        assert signal.getsignal(signal.SIGTERM) is unhandled  # the job restored it
    finally:
        signal.signal(signal.SIGTERM, previous)
    failure = env.failure_file.read_text()
    assert "stopped (SIGTERM) before training started" in failure
    assert len(failure.strip().splitlines()) == 1
    assert not list(env.model_dir.glob(".export-*"))
