"""model.onnx's post-processing against the real TFLite_Detection_PostProcess op, and its gate.

The export end to end (a real training, the gate in export.json, `edge detect` without
TensorFlow) is in tests/test_export_edge.py, which trains the model once for every export.
"""

from __future__ import annotations

import numpy as np
import pytest

from sagemaker_tfod.container import export_onnx

OUTPUT_NAMES = export_onnx.OUTPUT_NAMES


def _random_case(seed: int, anchors: int, classes: int, score_power: float):
    """Anchors clustered so that NMS has overlaps to resolve, and random head outputs."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0.1, 0.9, size=(8, 2))[rng.integers(0, 8, anchors)]
    centres = centres + rng.normal(0, 0.03, size=centres.shape)
    sizes = rng.uniform(0.05, 0.4, size=(anchors, 2))
    table = np.concatenate([centres, sizes], axis=1).astype(np.float32)  # yc, xc, h, w
    encodings = rng.normal(0, 0.3, size=(1, anchors, 4)).astype(np.float32)
    scores = (rng.uniform(0, 1, size=(1, anchors, classes + 1)) ** score_power).astype(np.float32)
    return table, encodings, scores


def _tflite_postprocess(settings: dict, table: np.ndarray, classes: int, tmp_path):
    """A TFLite file holding only the post-processing op, as export_tflite configures it."""
    import tensorflow as tf

    from sagemaker_tfod.container import export_tflite

    anchors = len(table)
    module = tf.Module()
    module.postprocess = export_tflite.postprocess_function(settings)
    module.anchors = tf.constant(table)

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, anchors, 4], tf.float32, name="box_encodings"),
            tf.TensorSpec([1, anchors, classes + 1], tf.float32, name="class_scores"),
        ]
    )
    def serve(box_encodings, class_scores):
        outputs = module.postprocess(box_encodings, class_scores, module.anchors)
        return dict(zip(OUTPUT_NAMES, outputs, strict=True))

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], module
    )
    converter.allow_custom_ops = True
    path = tmp_path / "postprocess.tflite"
    path.write_bytes(converter.convert())
    from sagemaker_tfod.edge.runtime import load_interpreter

    interpreter = load_interpreter(str(path), 1)
    return interpreter.get_signature_runner("serving_default")


def _onnx_postprocess(settings: dict, table: np.ndarray, classes: int):
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    anchors = len(table)
    nodes, initializers, outputs = export_onnx.postprocess_graph(
        table,
        max_detections=settings["max_detections"],
        score_threshold=settings["score_threshold"],
        iou_threshold=settings["iou_threshold"],
    )
    inputs = [
        helper.make_tensor_value_info("box_encodings", TensorProto.FLOAT, [1, anchors, 4]),
        helper.make_tensor_value_info("class_scores", TensorProto.FLOAT, [1, anchors, classes + 1]),
    ]
    graph = helper.make_graph(nodes, "postprocess", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", export_onnx.OPSET)])
    onnx.checker.check_model(model, full_check=True)
    return onnxruntime.InferenceSession(model.SerializeToString())


@pytest.mark.parametrize(
    ("seed", "max_detections", "score_power"),
    [
        (0, 10, 1.0),  # more candidates than max_detections: the cap decides
        (1, 100, 40.0),  # few scores above the threshold: fewer detections than the cap
        (2, 100, 6.0),
    ],
)
def test_onnx_postprocess_gives_the_tflite_ops_detections(
    seed, max_detections, score_power, tmp_path
):
    classes = 3
    settings = {
        "num_classes": classes,
        "max_detections": max_detections,
        "score_threshold": 0.05,
        "iou_threshold": 0.5,
    }
    table, encodings, scores = _random_case(seed, 400, classes, score_power)
    # One small, isolated box scored exactly at the threshold: the TFLite op keeps it (>=), so
    # model.onnx must too.
    table[7], encodings[0, 7] = (0.98, 0.02, 0.02, 0.02), 0.0
    scores[0, 7, :] = 0.0
    scores[0, 7, 2] = np.float32(0.05)
    tflite = _tflite_postprocess(settings, table, classes, tmp_path)
    session = _onnx_postprocess(settings, table, classes)

    expected = tflite(box_encodings=encodings, class_scores=scores)
    got = dict(
        zip(
            OUTPUT_NAMES,
            session.run(list(OUTPUT_NAMES), {"box_encodings": encodings, "class_scores": scores}),
            strict=True,
        )
    )
    count = int(expected["num_detections"][0])
    assert int(got["num_detections"][0]) == count
    assert 0 < count <= max_detections
    if seed == 0:
        assert count == max_detections
    if seed == 1:
        assert count < max_detections
    assert got["detection_boxes"].shape == (1, max_detections, 4)
    assert got["detection_classes"].shape == got["detection_scores"].shape == (1, max_detections)
    np.testing.assert_array_equal(
        got["detection_classes"][0, :count], expected["detection_classes"][0, :count]
    )
    np.testing.assert_allclose(
        got["detection_scores"][0, :count], expected["detection_scores"][0, :count], atol=1e-7
    )
    # The op decodes in double precision, ONNX in float: far below a pixel at any input size.
    np.testing.assert_allclose(
        got["detection_boxes"][0, :count], expected["detection_boxes"][0, :count], atol=1e-5
    )
    # Classes are 0-based without background; the rows past the count are zeros.
    assert set(got["detection_classes"][0, :count].astype(int)) <= set(range(classes))
    assert (
        not got["detection_boxes"][0, count:].any() and not got["detection_scores"][0, count:].any()
    )
    if seed == 1:
        kept = np.isclose(got["detection_scores"][0, :count], 0.05)
        assert kept.any(), "the score at the threshold was dropped"


def _outputs(rows, max_detections=5):
    """TFLite-convention outputs from (class, score, ymin, xmin, ymax, xmax) rows."""
    boxes = np.zeros((1, max_detections, 4), np.float32)
    classes = np.zeros((1, max_detections), np.float32)
    scores = np.zeros((1, max_detections), np.float32)
    for i, (label, score, *box) in enumerate(rows):
        boxes[0, i], classes[0, i], scores[0, i] = box, label, score
    return [boxes, classes, scores, np.array([len(rows)], np.float32)]


def test_detections_agree_within_a_pixel_and_differ_beyond_it():
    reference = _outputs([(1, 0.9, 0.1, 0.1, 0.5, 0.5), (0, 0.4, 0.6, 0.6, 0.9, 0.8)])
    size = (128, 128)

    agreement = export_onnx.Agreement()
    # 0.5 px off at 128 px, rows in another order.
    moved = _outputs([(0, 0.4, 0.6, 0.6, 0.9, 0.8), (1, 0.9, 0.1, 0.1 + 0.5 / 128, 0.5, 0.5)])
    export_onnx.compare_outputs("a", reference, moved, size, 0.05, agreement)
    assert agreement.agrees and agreement.detections == 2
    assert agreement.max_box_difference_px == pytest.approx(0.5, abs=1e-3)

    for candidate, expected in (
        (_outputs([(1, 0.9, 0.1, 0.1 + 2 / 128, 0.5, 0.5), (0, 0.4, 0.6, 0.6, 0.9, 0.8)]), "box"),
        (_outputs([(2, 0.9, 0.1, 0.1, 0.5, 0.5), (0, 0.4, 0.6, 0.6, 0.9, 0.8)]), "class"),
        (_outputs([(1, 0.9, 0.1, 0.1, 0.5, 0.5)]), "missing"),
        (
            _outputs(
                [
                    (1, 0.9, 0.1, 0.1, 0.5, 0.5),
                    (0, 0.4, 0.6, 0.6, 0.9, 0.8),
                    (2, 0.3, 0.0, 0.0, 0.2, 0.2),
                ]
            ),
            "extra",
        ),
    ):
        agreement = export_onnx.Agreement()
        export_onnx.compare_outputs("b", reference, candidate, size, 0.05, agreement)
        assert not agreement.agrees, expected
        assert "has no match" in agreement.problems[0]

    # A detection scored at the threshold may be kept by one runtime only.
    borderline = _outputs(
        [(1, 0.9, 0.1, 0.1, 0.5, 0.5), (0, 0.4, 0.6, 0.6, 0.9, 0.8), (2, 0.052, 0, 0, 0.2, 0.2)]
    )
    agreement = export_onnx.Agreement()
    export_onnx.compare_outputs("c", reference, borderline, size, 0.05, agreement)
    assert agreement.agrees


def test_onnx_verdict():
    agreeing = export_onnx.Agreement(images=20, detections=40, max_box_difference_px=0.01)
    shipped, reason = export_onnx.onnx_verdict(0.90, 0.895, agreeing)
    assert shipped and "detections agree on 20 images" in reason
    assert export_onnx.onnx_verdict(0.90, 0.909, agreeing)[0]  # +1.0%: within
    shipped, reason = export_onnx.onnx_verdict(0.90, 0.88, agreeing)
    assert not shipped and "outside the tolerance" in reason
    assert not export_onnx.onnx_verdict(0.90, 0.92, agreeing)[0]  # better is not the same
    differing = export_onnx.Agreement(images=20, detections=40, problems=["image 3: ..."])
    shipped, reason = export_onnx.onnx_verdict(0.90, 0.90, differing)
    assert not shipped and "image 3" in reason
    shipped, reason = export_onnx.onnx_verdict(0.90, 0.90, export_onnx.Agreement())
    assert not shipped and "no images" in reason
