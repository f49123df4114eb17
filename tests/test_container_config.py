"""Presets, the resolved Model Garden experiment, pipeline.yaml overrides and the OD API reader."""

from __future__ import annotations

import pytest
import yaml

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.hyperparameters import parse_hyperparameters
from sagemaker_tfod.container.pipeline_config import (
    DataPaths,
    build_experiment,
    eval_batch_size,
    read_od_api_pipeline_config,
    save_experiment_yaml,
)
from sagemaker_tfod.container.presets import PRESETS, get_preset

DATA = DataPaths(train_pattern="/c/train-*", eval_pattern="/c/eval-*", num_eval_examples=12)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_a_valid_experiment(name, tmp_path):
    preset = get_preset(name)
    config = build_experiment(preset, parse_hyperparameters({"model": name}), 3, DATA)
    model = config.task.model
    assert model.num_classes == 4  # three classes + Model Garden's background
    assert model.input_size == [preset.image_size, preset.image_size, 3]
    assert preset.image_size % preset.stride == 0
    # The TPU defaults of the COCO configs are gone.
    assert config.runtime.mixed_precision_dtype == "float32"
    assert not model.norm_activation.use_sync_bn
    assert config.task.init_checkpoint is None
    assert config.task.annotation_file == ""
    assert config.task.train_data.global_batch_size == preset.batch_size
    assert config.task.validation_data.decoder.simple_decoder.regenerate_source_id
    save_experiment_yaml(config, tmp_path / "pipeline.yaml")
    saved = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    assert saved["task"]["model"]["num_classes"] == 4


def test_saved_pipeline_yaml_names_no_scratch_checkpoint_and_reloads(tmp_path):
    """A job's init_checkpoint is its scratch copy of the checkpoint channel, deleted once the
    model is initialised: model/pipeline.yaml leaves it out, so that the file works as the
    channel pipeline.yaml of a job without a checkpoint channel."""
    hp = parse_hyperparameters({"init_checkpoint_modules": "backbone"})
    config = build_experiment(
        get_preset(hp.model), hp, 3, DATA, init_checkpoint="/opt/ml/scratch/initial/ckpt-6"
    )
    save_experiment_yaml(config, tmp_path / "pipeline.yaml")
    assert config.task.init_checkpoint == "/opt/ml/scratch/initial/ckpt-6"  # left unchanged
    saved = yaml.safe_load((tmp_path / "pipeline.yaml").read_text())
    assert saved["task"]["init_checkpoint"] is None
    assert saved["task"]["init_checkpoint_modules"] == "backbone"
    reused = build_experiment(
        get_preset(hp.model), parse_hyperparameters({}), 3, DATA,
        override_yaml=tmp_path / "pipeline.yaml",
    )  # fmt: skip
    assert reused.task.init_checkpoint is None
    assert reused.task.model.num_classes == 4


def test_default_preset_is_mobilenetv2_with_separable_fpn_and_head():
    config = build_experiment(get_preset(parse_hyperparameters({}).model),
                              parse_hyperparameters({}), 1, DATA)  # fmt: skip
    model = config.task.model
    assert model.backbone.type == "mobilenet"
    assert model.backbone.mobilenet.model_id == "MobileNetV2"
    assert model.decoder.fpn.use_separable_conv
    assert model.head.use_separable_conv
    assert model.max_level == 6


def test_default_preset_builds_a_model():
    from official.vision.tasks.retinanet import RetinaNetTask

    hp = parse_hyperparameters({"image_size": "64"})
    config = build_experiment(get_preset(hp.model), hp, 2, DATA)
    model = RetinaNetTask(config.task).build_model()
    assert model.head._config_dict["num_classes"] == 3  # two classes + background


def test_hyperparameters_reach_the_experiment():
    hp = parse_hyperparameters(
        {
            "num_steps": "300",
            "batch_size": "4",
            "image_size": "128",
            "learning_rate": "0.02",
            "warmup_steps": "30",
            "eval_interval_steps": "100",
            "checkpoint_interval_steps": "50",
            "log_interval_steps": "10",
            "random_flip": "false",
            "scale_min": "0.5",
            "scale_max": "2.0",
            "freeze_backbone": "true",
            "max_detections": "20",
            "score_threshold": "0.2",
            "batchnorm_momentum": "0.9",
        }
    )
    config = build_experiment(get_preset(hp.model), hp, 5, DATA, init_checkpoint="/ck/ckpt-3")
    task, trainer = config.task, config.trainer
    assert trainer.train_steps == 300
    assert trainer.validation_interval == 100
    assert trainer.checkpoint_interval == 50
    assert trainer.steps_per_loop == trainer.summary_interval == 10
    assert trainer.validation_steps == 12 // eval_batch_size(12)
    optimizer = trainer.optimizer_config
    assert optimizer.learning_rate.cosine.initial_learning_rate == pytest.approx(0.02)
    assert optimizer.warmup.linear.warmup_steps == 30
    assert task.train_data.global_batch_size == 4
    assert task.train_data.parser.aug_rand_hflip is False
    assert (task.train_data.parser.aug_scale_min, task.train_data.parser.aug_scale_max) == (
        0.5,
        2.0,
    )
    assert task.freeze_backbone
    assert task.model.detection_generator.max_num_detections == 20
    assert task.model.detection_generator.pre_nms_score_threshold == pytest.approx(0.2)
    assert task.model.norm_activation.norm_momentum == pytest.approx(0.9)
    assert task.init_checkpoint == "/ck/ckpt-3"
    assert task.init_checkpoint_modules == "backbone"


def test_image_size_must_fit_the_preset_stride():
    hp = parse_hyperparameters({"image_size": "300"})
    with pytest.raises(UserError, match=r"image_size=300 must be a multiple of 64.*256 or 320"):
        build_experiment(get_preset(hp.model), hp, 1, DATA)
    hp = parse_hyperparameters({"model": "retinanet_resnet50_fpn_640", "image_size": "320"})
    with pytest.raises(UserError, match="multiple of 128"):
        build_experiment(get_preset(hp.model), hp, 1, DATA)


def test_unknown_preset_lists_the_presets():
    with pytest.raises(UserError, match="retinanet_spinenet49_mobile_384"):
        get_preset("yolo")


def test_eval_batch_divides_the_eval_set():
    assert eval_batch_size(40) == 8
    assert eval_batch_size(7) == 7
    assert eval_batch_size(11) == 1


def test_pipeline_yaml_overrides_and_rejects_unknown_fields(tmp_path):
    hp = parse_hyperparameters({})
    good = tmp_path / "pipeline.yaml"
    good.write_text("task:\n  model:\n    head:\n      num_filters: 64\n")
    config = build_experiment(get_preset(hp.model), hp, 1, DATA, override_yaml=good)
    assert config.task.model.head.num_filters == 64
    bad = tmp_path / "bad.yaml"
    bad.write_text("task:\n  model:\n    hed:\n      num_filters: 64\n")
    with pytest.raises(UserError, match=r"bad\.yaml: .*hed"):
        build_experiment(get_preset(hp.model), hp, 1, DATA, override_yaml=bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("task: [unclosed\n")
    with pytest.raises(UserError, match=r"broken\.yaml: not valid YAML"):
        build_experiment(get_preset(hp.model), hp, 1, DATA, override_yaml=broken)


OD_API_CONFIG = """
# An SSD config as the TF1/TF2 Object Detection API writes it.
model {
  ssd {
    num_classes: 3
    image_resizer { fixed_shape_resizer { height: 256 width: 256 } }
    feature_extractor { type: "ssd_mobilenet_v2_fpn_keras" use_depthwise: true }
  }
}
train_config: {
  batch_size: 12
  num_steps: 5000
  optimizer {
    momentum_optimizer: {
      learning_rate: {
        cosine_decay_learning_rate { learning_rate_base: .08 total_steps: 5000 warmup_steps: 100 }
      }
      momentum_optimizer_value: 0.9
    }
  }
  fine_tune_checkpoint: "PATH_TO_BE_CONFIGURED/ckpt-0"
}
"""


def test_od_api_pipeline_config_maps_what_it_can_and_lists_the_rest():
    settings = read_od_api_pipeline_config(OD_API_CONFIG)
    assert settings.hyperparameters == {
        "image_size": "256",
        "batch_size": "12",
        "num_steps": "5000",
        "learning_rate": ".08",
        "warmup_steps": "100",
    }
    assert settings.num_classes == 3
    assert settings.ignored_fields == [
        "model.ssd.feature_extractor.type",
        "model.ssd.feature_extractor.use_depthwise",
        "train_config.fine_tune_checkpoint",
        "train_config.optimizer.momentum_optimizer.learning_rate.cosine_decay_learning_rate"
        ".total_steps",
        "train_config.optimizer.momentum_optimizer.momentum_optimizer_value",
    ]
    hp = parse_hyperparameters({**settings.hyperparameters, "num_steps": "1000"})
    assert (hp.num_steps, hp.batch_size, hp.image_size) == (1000, 12, 256)


def test_od_api_pipeline_config_syntax_errors_name_the_file():
    with pytest.raises(UserError, match=r"my\.config: missing '}'"):
        read_od_api_pipeline_config("model { ssd { num_classes: 3 }", "my.config")
