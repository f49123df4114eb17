"""Anchors: data_prep's numpy anchors against Model Garden's, the fit measures, the fit itself,
and `anchors=auto|default` applied to a real experiment config."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sagemaker_tfod.data_prep import anchors


def _boxes(rng, ratios, count, size, area=(24, 90)):
    """`count` boxes of aspect ratios (w/h) drawn from `ratios`, with 10% noise, in pixels."""
    ratio = rng.choice(ratios, count) * np.exp(rng.normal(0, 0.1, count))
    side = rng.uniform(*area, count)
    width = np.minimum(side * np.sqrt(ratio), size - 2)
    height = np.minimum(side / np.sqrt(ratio), size - 2)
    centre_x = rng.uniform(width / 2, size - width / 2)
    centre_y = rng.uniform(height / 2, size - height / 2)
    return np.stack(
        [centre_y - height / 2, centre_x - width / 2, centre_y + height / 2, centre_x + width / 2],
        axis=-1,
    )


def _iou_matrix(boxes, table):
    top = np.maximum(boxes[:, None, :2], table[None, :, :2])
    bottom = np.minimum(boxes[:, None, 2:], table[None, :, 2:])
    intersection = np.prod(np.clip(bottom - top, 0, None), axis=-1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return intersection / (area(boxes)[:, None] + area(table)[None, :] - intersection)


def test_presets_and_anchor_boxes_match_model_garden():
    """data_prep cannot import the presets (TensorFlow): its table and anchor boxes must agree
    with the container's presets and Model Garden's two anchor generators (training, export)."""
    from official.vision.ops import anchor as mg_anchor

    from sagemaker_tfod.container.anchors import model_anchor_config
    from sagemaker_tfod.container.presets import PRESETS

    assert set(anchors.PRESET_ANCHORS) == set(PRESETS)
    fitted = anchors.AnchorConfig(3, 6, 3, (0.1768, 1.0, 5.6569), 2.8284)
    cases = []
    for name, preset in PRESETS.items():
        config = preset.build()
        mine = anchors.PRESET_ANCHORS[name]
        assert mine.config == model_anchor_config(config), name
        assert mine.image_size == preset.image_size, name
        assert config.task.train_data.parser.match_threshold == anchors.MATCH_THRESHOLD
        cases.append((mine.config, 128, 256))
    cases.append((fitted, 192, 128))
    for config, height, width in cases:
        table = anchors.anchor_boxes(config, height, width)
        levels = range(config.min_level, config.max_level + 1)
        training = mg_anchor.Anchor(
            config.min_level,
            config.max_level,
            config.num_scales,
            list(config.aspect_ratios),
            config.anchor_size,
            (height, width),
        ).multilevel_boxes
        export = mg_anchor.build_anchor_generator(
            config.min_level,
            config.max_level,
            config.num_scales,
            list(config.aspect_ratios),
            config.anchor_size,
        )(image_size=(height, width))
        for generated in (training, export):
            flat = np.concatenate(
                [np.reshape(generated[str(lv)].numpy(), (-1, 4)) for lv in levels]
            )
            np.testing.assert_allclose(table, flat, atol=1e-3)
        assert (
            len(table)
            == sum(math.ceil(height / 2**lv) * math.ceil(width / 2**lv) for lv in levels)
            * config.per_location
        )


def test_best_possible_recall_of_a_hand_computed_case():
    # One level (stride 8), one 32x32 anchor per cell at centres 4, 12, 20, ... of a 64 px input.
    config = anchors.AnchorConfig(3, 3, 1, (1.0,), 4.0)
    boxes = np.array(
        [
            [0, 0, 32, 32],  # centre (16, 16): nearest anchors 4 px away on each axis
            [12, 0, 20, 32],  # 32 wide, 8 tall, centre (16, 16)
            [4, 4, 36, 36],  # exactly the anchor at (20, 20)
            [10, 10, 10, 30],  # no height: left out
        ],
        dtype=np.float64,
    )
    # 28 x 28 overlap: 784 / (1024 + 1024 - 784); 8 x 28: 224 / (256 + 1024 - 224); then 1.
    expected = [784 / 1264, 224 / 1056, 1.0]
    np.testing.assert_allclose(anchors.best_anchor_iou(boxes[:3], config, 64, 64), expected)
    fit = anchors.anchor_fit(boxes, config, 64, 64)
    assert fit.boxes == 3
    assert fit.best_possible_recall == pytest.approx(2 / 3)
    assert fit.mean_best_iou == pytest.approx(sum(expected) / 3)
    assert anchors.anchor_fit(boxes, config, 64, 64, iou_threshold=0.7).best_possible_recall == (
        pytest.approx(1 / 3)
    )
    # A 100 x 200 image fits a 64 px input at scale 0.32: its full-image box is 32 x 64 there.
    np.testing.assert_allclose(
        anchors.boxes_in_input(np.array([[0, 0, 1, 1.0]]), np.array([[100, 200]]), 64, 64),
        [[0, 0, 32, 64]],
    )


def test_best_anchor_iou_is_the_maximum_over_every_anchor():
    rng = np.random.default_rng(0)
    config = anchors.PRESET_ANCHORS[anchors.DEFAULT_PRESET].config
    boxes = np.concatenate([_boxes(rng, [0.5, 1, 3], 300, 256), _boxes(rng, [1], 50, 256, (4, 12))])
    brute_force = _iou_matrix(boxes, anchors.anchor_boxes(config, 256, 256).astype(np.float64))
    np.testing.assert_allclose(
        anchors.best_anchor_iou(boxes, config, 256, 256), brute_force.max(axis=1), atol=1e-5
    )


def test_fit_recovers_the_aspect_ratios_of_a_synthetic_distribution():
    rng = np.random.default_rng(1)
    config = anchors.PRESET_ANCHORS[anchors.DEFAULT_PRESET].config
    boxes = _boxes(rng, [0.25, 1.0, 4.0], 3000, 320)
    fitted, fit = anchors.fit_anchors(boxes, config, 320, 320)
    assert (fitted.num_scales, len(fitted.aspect_ratios)) == (3, 3)  # the head keeps its size
    np.testing.assert_allclose(np.log2(fitted.aspect_ratios), np.log2([0.25, 1.0, 4.0]), atol=0.26)
    default = anchors.anchor_fit(boxes, config, 320, 320)
    assert default.best_possible_recall < 0.95 <= fit.best_possible_recall
    assert fit.mean_best_iou > default.mean_best_iou

    decision = anchors.choose_anchors(boxes, config, 320, 320)
    assert decision.fitted and decision.config == fitted
    assert decision.candidate_fit == fit and "fitted anchors reach" in decision.reason
    # Deterministic: a restarted (spot) job must fit the same anchors.
    assert anchors.fit_anchors(boxes, config, 320, 320)[0] == fitted


def test_auto_keeps_the_defaults_where_they_fit():
    rng = np.random.default_rng(2)
    config = anchors.PRESET_ANCHORS[anchors.DEFAULT_PRESET].config
    decision = anchors.choose_anchors(_boxes(rng, [0.6, 1.0, 1.6], 500, 320), config, 320, 320)
    assert not decision.fitted and decision.config == config
    assert decision.default_fit.best_possible_recall >= anchors.AUTO_FIT_BELOW
    assert decision.candidate is None and "kept" in decision.reason
    empty = anchors.choose_anchors(np.zeros((0, 4)), config, 320, 320)
    assert not empty.fitted and empty.default_fit.boxes == 0


def _experiment(tmp_path, **hyperparameters):
    from sagemaker_tfod.container.hyperparameters import parse_hyperparameters
    from sagemaker_tfod.container.pipeline_config import DataPaths, build_experiment
    from sagemaker_tfod.container.presets import get_preset

    hp = parse_hyperparameters({"image_size": "128", **hyperparameters})
    data = DataPaths(str(tmp_path / "train-*"), None, 0)
    return hp, build_experiment(get_preset(hp.model), hp, 3, data)


def test_anchors_hyperparameter_applies_the_fit_to_the_experiment(tmp_path):
    from sagemaker_tfod.container import anchors as container_anchors
    from sagemaker_tfod.container.errors import UserError
    from sagemaker_tfod.container.hyperparameters import parse_hyperparameters

    # Boxes of 6:1 and 1:6 in 512 px images, which the 128 px input scales by 1/4.
    rng = np.random.default_rng(3)
    pixels = _boxes(rng, [1 / 6, 6.0], 400, 128, area=(20, 45))
    sizes = np.tile([512, 512], (len(pixels), 1))
    normalised = pixels / 128

    hp, params = _experiment(tmp_path, anchors="AUTO")
    assert hp.anchors == "auto"
    decision = container_anchors.resolve_anchors(params, hp.anchors, normalised, sizes)
    assert decision["fitted"] and decision["input_size"] == [128, 128]
    ratios = list(params.task.model.anchor.aspect_ratios)
    assert ratios == decision["anchors"]["aspect_ratios"]
    assert min(ratios) < 0.25 and max(ratios) > 4  # reaches 1:6 and 6:1
    assert decision["candidate_fit"]["best_possible_recall"] > 0.9
    assert decision["default_fit"]["best_possible_recall"] < 0.1

    hp, params = _experiment(tmp_path, anchors="default")
    decision = container_anchors.resolve_anchors(params, hp.anchors, normalised, sizes)
    assert not decision["fitted"] and list(params.task.model.anchor.aspect_ratios) == [0.5, 1, 2]

    # Anchors in the channel's pipeline.yaml win over the fit.
    override = tmp_path / "pipeline.yaml"
    override.write_text("task:\n  model:\n    anchor:\n      aspect_ratios: [0.25, 1.0, 4.0]\n")
    hp, params = _experiment(tmp_path)
    from sagemaker_tfod.container.pipeline_config import apply_yaml_override

    apply_yaml_override(params, override)
    decision = container_anchors.resolve_anchors(params, hp.anchors, normalised, sizes, override)
    assert not decision["fitted"] and "pipeline.yaml sets" in decision["reason"]
    assert list(params.task.model.anchor.aspect_ratios) == [0.25, 1.0, 4.0]

    with pytest.raises(UserError, match="anchors='fitted' must be one of auto, default"):
        parse_hyperparameters({"anchors": "fitted"})
