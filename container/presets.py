"""Named model presets: each a Model Garden RetinaNet experiment with CPU/GPU-sane defaults.

A preset fixes the architecture (backbone, FPN, head, levels) and suggests an input size,
batch size and learning rate; `pipeline_config.build_experiment` fills in the data, classes
and hyperparameters. The COCO configs these start from assume TPUs, so each preset clears
the TPU-only settings (bfloat16, sync BN, batch 256, `gs://` init checkpoint, COCO
annotation file).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from official.core import config_definitions as cfg
from official.core import exp_factory
from official.vision.configs import backbones, decoders
from official.vision.configs import retinanet as retinanet_cfg

from sagemaker_tfod.container.errors import UserError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    image_size: int
    batch_size: int
    learning_rate: float
    build: Callable[[], cfg.ExperimentConfig]

    def base_config(self) -> cfg.ExperimentConfig:
        return self.build()

    @property
    def stride(self) -> int:
        """Input sizes must be a multiple of this (2**max_level), or the pipeline pads."""
        return 2 ** int(self.build().task.model.max_level)


def _clear_tpu_defaults(config: cfg.ExperimentConfig) -> cfg.ExperimentConfig:
    config.runtime.mixed_precision_dtype = "float32"
    config.task.init_checkpoint = None
    config.task.annotation_file = ""
    config.task.model.norm_activation.use_sync_bn = False
    for data in (config.task.train_data, config.task.validation_data):
        data.dtype = "float32"
    return config


def _mobilenetv2_fpnlite() -> cfg.ExperimentConfig:
    config = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
    model = config.task.model
    model.backbone = backbones.Backbone(
        type="mobilenet", mobilenet=backbones.MobileNet(model_id="MobileNetV2")
    )
    model.decoder = decoders.Decoder(
        type="fpn", fpn=decoders.FPN(num_filters=128, use_separable_conv=True)
    )
    model.head = retinanet_cfg.RetinaNetHead(num_convs=4, num_filters=128, use_separable_conv=True)
    # max_level 6 so that 320 (the Pi-sized input) is a multiple of the largest stride.
    model.min_level, model.max_level = 3, 6
    model.input_size = [320, 320, 3]
    model.norm_activation.activation = "relu6"
    config.task.losses.l2_weight_decay = 4e-5
    return _clear_tpu_defaults(config)


def _mobilenetv2_fpnlite_256() -> cfg.ExperimentConfig:
    """Model Garden's COCO MobileNetV2 RetinaNet, exactly: the float model that the QAT project
    publishes (`mobilenetv2_ssd_i256_ckpt.tar.gz`, 23.3 AP), trained with
    `official/vision/configs/experiments/retinanet/coco_mobilenetv2_tpu.yaml`: levels 3-7,
    separable FPN (Keras layers) and head of 128 filters, relu6, anchor size 3."""
    config = _mobilenetv2_fpnlite()
    model = config.task.model
    model.decoder.fpn.use_keras_layer = True
    model.min_level, model.max_level = 3, 7
    model.input_size = [256, 256, 3]
    model.anchor = retinanet_cfg.Anchor(num_scales=3, aspect_ratios=[0.5, 1.0, 2.0], anchor_size=3)
    config.task.losses.l2_weight_decay = 3e-5
    return config


def _spinenet49_mobile() -> cfg.ExperimentConfig:
    config = exp_factory.get_exp_config("retinanet_mobile_coco")
    config.task.model.input_size = [384, 384, 3]
    return _clear_tpu_defaults(config)


def _resnet50_fpn() -> cfg.ExperimentConfig:
    config = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
    config.task.model.input_size = [640, 640, 3]
    return _clear_tpu_defaults(config)


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "retinanet_mobilenetv2_fpnlite_320",
            "MobileNetV2, separable FPN and head (128 filters), levels 3-6; for a Raspberry Pi",
            image_size=320,
            batch_size=16,
            learning_rate=0.04,
            build=_mobilenetv2_fpnlite,
        ),
        Preset(
            "retinanet_mobilenetv2_fpnlite_256",
            "MobileNetV2, separable FPN and head (128 filters), levels 3-7: Model Garden's COCO "
            "model, so its published checkpoint carries backbone and FPN over",
            image_size=256,
            batch_size=16,
            learning_rate=0.04,
            build=_mobilenetv2_fpnlite_256,
        ),
        Preset(
            "retinanet_spinenet49_mobile_384",
            "SpineNet-49 mobile, separable head (48 filters), levels 3-7",
            image_size=384,
            batch_size=16,
            learning_rate=0.04,
            build=_spinenet49_mobile,
        ),
        Preset(
            "retinanet_resnet50_fpn_640",
            "ResNet-50 FPN, levels 3-7; for accuracy on a GPU",
            image_size=640,
            batch_size=8,
            learning_rate=0.01,
            build=_resnet50_fpn,
        ),
    )
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UserError(
            f"hyperparameter model={name!r} is not a preset; choose one of: {', '.join(PRESETS)}"
        ) from None
