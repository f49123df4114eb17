"""Pure parts of the edge exports: the quantisation gate and the TFLite post-processing setup."""

from __future__ import annotations

import numpy as np
import pytest

from sagemaker_tfod.container import export_edge, export_tflite


@pytest.mark.parametrize(
    "float_ap50, quantized_ap50, ships",
    [(0.80, 0.80, True), (0.80, 0.777, True), (0.80, 0.775, False), (0.80, 0.0, False)],
)
def test_quantised_model_ships_only_at_97_percent_of_float_ap50(float_ap50, quantized_ap50, ships):
    accepted, reason = export_edge.quantization_verdict(float_ap50, quantized_ap50)
    assert accepted is ships
    assert f"{quantized_ap50:.4f}" in reason
    if not ships:
        assert "below the 97% floor" in reason


def test_gate_floor_is_the_users_choice():
    assert export_edge.quantization_verdict(0.80, 0.60, ratio_floor=0.5)[0] is True
    accepted, reason = export_edge.quantization_verdict(0.80, 0.30, ratio_floor=0.5)
    assert accepted is False and "below the 50% floor" in reason


def test_gate_says_when_it_cannot_judge():
    accepted, reason = export_edge.quantization_verdict(0.0, 0.0)
    assert accepted and "cannot tell" in reason


def test_inference_types_map_to_the_issue_file_names():
    assert export_edge.QUANTIZED_FILES["FLOAT"][0] == "model_fp16.tflite"
    for kind in ("QUANTIZED_UINT8", "INT8"):
        name, recipes = export_edge.QUANTIZED_FILES[kind]
        assert name == "model_int8.tflite"
        # The preferred recipe first, then the safer one with float input and outputs.
        assert recipes[0] == "int8"
        assert export_tflite.RECIPES[recipes[-1]].input_dtype.name == "float32"


def test_postprocess_op_excludes_background_so_class_indices_are_0_based():
    text = export_tflite._postprocess_signature(
        num_classes=3, max_detections=50, score_threshold=0.05, iou_threshold=0.5
    )
    assert 'name: "TFLite_Detection_PostProcess"' in text
    assert 'key: "num_classes" value { i: 3 }' in text
    assert 'key: "max_classes_per_detection" value { i: 1 }' in text
    assert 'key: "max_detections" value { i: 50 }' in text


def test_anchors_are_normalised_centre_size_in_head_order():
    from official.core import exp_factory

    params = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
    params.task.model.min_level, params.task.model.max_level = 3, 6
    anchors = export_tflite.normalised_center_anchors(params, 64, 64)
    per_location = params.task.model.anchor.num_scales * len(params.task.model.anchor.aspect_ratios)
    assert anchors.shape == ((8 * 8 + 4 * 4 + 2 * 2 + 1) * per_location, 4)
    # The first anchor is centred on the first stride-8 cell: (4, 4) pixels of 64.
    np.testing.assert_allclose(anchors[0, :2], [4 / 64, 4 / 64], atol=1e-6)
    assert (anchors[:, 2:] > 0).all()


def test_uint8_anchors_stay_within_half_a_step_of_the_float_table():
    from official.core import exp_factory

    params = exp_factory.get_exp_config("retinanet_resnetfpn_coco")
    params.task.model.min_level, params.task.model.max_level = 3, 6
    anchors = export_tflite.normalised_center_anchors(params, 320, 320)
    codes, scale, zero_point = export_tflite.quantise_anchors(anchors)
    assert codes.dtype == np.uint8 and codes.shape == anchors.shape
    assert zero_point == 0  # centres and sizes are positive: 0 is the bottom of the range
    restored = (codes.astype(np.float32) - zero_point) * scale
    assert np.abs(restored - anchors).max() <= scale / 2 + 1e-6
    # At 320 px that is about a pixel, inside the issue's few-pixel agreement between files.
    assert np.abs(restored - anchors).max() * 320 < 1.5
    assert codes.max() == 255


def test_anchor_quantisation_keeps_negative_values_and_a_flat_table():
    codes, scale, zero_point = export_tflite.quantise_anchors(np.array([[-0.5, 0.0, 1.0, 1.5]]))
    np.testing.assert_allclose(
        (codes.astype(np.float32) - zero_point) * scale, [[-0.5, 0, 1, 1.5]], atol=scale / 2
    )
    codes, scale, zero_point = export_tflite.quantise_anchors(np.zeros((2, 4), np.float32))
    assert (codes == zero_point).all() and scale > 0
