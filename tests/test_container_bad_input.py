"""Bad input: each case fails before training with one line in output/failure and exit 1."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO, TINY_HYPERPARAMETERS, container_env, make_base_dir

from sagemaker_tfod.container.__main__ import EXIT_USER_ERROR, train
from sagemaker_tfod.container.sagemaker_env import SageMakerEnv


def failure_of(base) -> str:
    env = SageMakerEnv(base)
    assert train(env) == EXIT_USER_ERROR
    message = env.failure_file.read_text()
    assert len(message.strip().splitlines()) == 1, message
    return message


def test_missing_training_channel(tmp_path):
    base = make_base_dir(tmp_path, None, TINY_HYPERPARAMETERS)
    message = failure_of(base)
    assert "input/data/training does not exist" in message
    assert "python -m data_prep build" in message  # the fix


def test_empty_training_channel(tmp_path):
    base = make_base_dir(tmp_path, None, TINY_HYPERPARAMETERS)
    (base / "input/data/training").mkdir(parents=True)
    message = failure_of(base)
    assert "has no train-*-of-*.tfrecord shards" in message
    assert "python -m data_prep build" in message


def test_label_id_missing_from_the_label_map(synthetic_channel, tmp_path):
    base = make_base_dir(tmp_path, synthetic_channel, TINY_HYPERPARAMETERS)
    (base / "input/data/training/label_map.pbtxt").write_text(
        "item { id: 1 name: 'circle' }\nitem { id: 2 name: 'square' }\n"
    )
    message = failure_of(base)
    assert "use class id(s) [3] that label_map.pbtxt lacks" in message
    assert "rebuild the channel with the same label map" in message


def test_unknown_hyperparameter_lists_the_known_ones(synthetic_channel, tmp_path):
    base = make_base_dir(tmp_path, synthetic_channel, {**TINY_HYPERPARAMETERS, "epochs": "3"})
    message = failure_of(base)
    assert "unknown hyperparameter(s) epochs" in message
    assert "num_steps" in message


def test_non_numeric_num_steps(synthetic_channel, tmp_path):
    base = make_base_dir(tmp_path, synthetic_channel, {**TINY_HYPERPARAMETERS, "num_steps": "1k"})
    assert "hyperparameter num_steps='1k' is not a valid int; give e.g. 2000" in failure_of(base)


def test_image_size_not_a_multiple_of_the_preset_stride(synthetic_channel, tmp_path):
    base = make_base_dir(tmp_path, synthetic_channel, {**TINY_HYPERPARAMETERS, "image_size": "100"})
    message = failure_of(base)
    assert "hyperparameter image_size=100 must be a multiple of 64" in message
    assert "use e.g. 64 or 128" in message


def test_checkpoint_channel_without_a_checkpoint(synthetic_channel, tmp_path):
    base = make_base_dir(tmp_path, synthetic_channel, TINY_HYPERPARAMETERS)
    checkpoint = base / "input/data/checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "notes.txt").write_bytes(b"not a checkpoint")
    message = failure_of(base)
    assert "input/data/checkpoint holds no TensorFlow checkpoint" in message
    assert "notes.txt" in message
    assert "point it at an earlier job's checkpoints or remove the channel" in message


def test_empty_checkpoint_channel(synthetic_channel, tmp_path):
    base = make_base_dir(tmp_path, synthetic_channel, TINY_HYPERPARAMETERS)
    (base / "input/data/checkpoint/empty_folder").mkdir(parents=True)
    message = failure_of(base)
    assert "checkpoint channel" in message and "is empty" in message
    assert "launch train --pretrained NAME" in message


def test_head_alone_is_refused_before_anything_loads(synthetic_channel, tmp_path):
    """Model Garden would load nothing and say nothing (tensorflow/models#9284)."""
    base = make_base_dir(
        tmp_path, synthetic_channel, {**TINY_HYPERPARAMETERS, "init_checkpoint_modules": "head"}
    )
    message = failure_of(base)
    assert "init_checkpoint_modules='head' is not accepted" in message
    assert "use all, or backbone,decoder" in message


def test_list_form_is_refused(synthetic_channel, tmp_path):
    base = make_base_dir(
        tmp_path, synthetic_channel, {**TINY_HYPERPARAMETERS, "init_checkpoint_modules": "['all']"}
    )
    assert "must be a plain comma-separated value, not a list" in failure_of(base)


def test_keras_h5_that_is_not_hdf5(synthetic_channel, tmp_path):
    base = make_base_dir(tmp_path, synthetic_channel, TINY_HYPERPARAMETERS)
    checkpoint = base / "input/data/checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "model.h5").write_bytes(b"not a checkpoint")
    assert "model.h5: not a readable HDF5 (.h5) file" in failure_of(base)


def test_checkpoint_of_another_preset_names_the_preset_it_fits(synthetic_channel, tmp_path):
    """A SpineNet-49 mobile checkpoint (keyed as a Model Garden trainer writes it) offered to
    the MobileNetV2 preset: refused before training, naming the preset it fits."""
    import tensorflow as tf

    from sagemaker_tfod.container import checkpoint_source
    from sagemaker_tfod.container.presets import get_preset

    config = get_preset("retinanet_spinenet49_mobile_384").base_config().task.model
    config.num_classes = 91
    spinenet = checkpoint_source.build_model(config)
    base = make_base_dir(tmp_path, synthetic_channel, TINY_HYPERPARAMETERS)
    prefix = str(base / "input/data/checkpoint/spinenet49mobile/ckpt-277200")
    tf.train.Checkpoint(**spinenet.checkpoint_items).write(prefix)
    message = failure_of(base)
    assert "does not fit model=retinanet_mobilenetv2_fpnlite_320" in message
    assert "the checkpoint fits model=retinanet_spinenet49_mobile_384 (backbone)" in message
    assert not (base / "checkpoints/checkpoint").exists()  # nothing was trained


def test_checkpoint_channel_with_a_broken_checkpoint(synthetic_channel, tmp_path):
    base = make_base_dir(tmp_path, synthetic_channel, TINY_HYPERPARAMETERS)
    checkpoint = base / "input/data/checkpoint"
    checkpoint.mkdir(parents=True)
    (checkpoint / "ckpt-5.index").write_bytes(b"garbage")
    message = failure_of(base)
    assert "ckpt-5.index has no ckpt-5.data-* file beside it" in message
    assert "upload the complete ckpt-N.index and ckpt-N.data-* files" in message
    (checkpoint / "ckpt-5.data-00000-of-00001").write_bytes(b"garbage too")
    message = failure_of(base)
    assert "ckpt-5 cannot be read" in message
    assert "upload the complete ckpt-N.index and ckpt-N.data-* files" in message


def test_pipeline_yaml_with_an_unknown_field(synthetic_channel, tmp_path):
    base = make_base_dir(
        tmp_path, synthetic_channel, TINY_HYPERPARAMETERS, pipeline_yaml="task:\n  modle: {}\n"
    )
    assert "pipeline.yaml" in failure_of(base)


def test_cli_without_arguments_runs_train_and_fails_cleanly(tmp_path):
    """SDK local mode passes no argument: the same job runs; a bad input exits 1."""
    base = make_base_dir(tmp_path, None, TINY_HYPERPARAMETERS)
    completed = subprocess.run(
        [sys.executable, "-m", "container"],
        env=container_env(base),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == EXIT_USER_ERROR
    assert "Traceback" not in completed.stdout + completed.stderr
    assert (base / "output/failure").read_text().startswith("training channel")


@pytest.mark.parametrize("argv", [["--help"]])
def test_help_documents_hyperparameters_and_presets(argv, capsys):
    from sagemaker_tfod.container.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "calibration_samples" in text
    assert "retinanet_resnet50_fpn_640" in text


def test_od_api_pipeline_config_feeds_the_job_and_warns_about_ignored_fields(
    synthetic_channel, tmp_path, caplog
):
    """The channel's pipeline.config supplies image_size (here a bad one); hyperparameters win."""
    hyperparameters = {k: v for k, v in TINY_HYPERPARAMETERS.items() if k != "image_size"}
    base = make_base_dir(tmp_path, synthetic_channel, hyperparameters)
    (base / "input/data/training/pipeline.config").write_text(
        "model { ssd { num_classes: 3 image_resizer { fixed_shape_resizer { height: 100 "
        "width: 100 } } feature_extractor { type: 'ssd_mobilenet_v2_keras' } } }\n"
        "train_config { batch_size: 64 fine_tune_checkpoint: 'x/ckpt-0' }\n"
    )
    with caplog.at_level("WARNING"):
        message = failure_of(base)
    assert "image_size=100 must be a multiple of 64" in message
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert "model.ssd.feature_extractor.type" in warning
    assert "train_config.fine_tune_checkpoint" in warning
