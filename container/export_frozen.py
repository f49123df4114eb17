"""`frozen_inference_graph.pb`: the TF1 Object Detection API interface, from a TF2 checkpoint.

Input `image_tensor` (uint8 [1, H, W, 3], any H and W); outputs `detection_boxes` (normalised
[ymin, xmin, ymax, xmax] of the input image), `detection_scores`, `detection_classes` (label-map
ids, float32 as TF1 gave them), `num_detections` (float32). Model Garden's serving module does
the resize, padding and normalisation in the graph, as in training; the variables are folded into
constants so a `tf.compat.v1` session needs nothing but the file.
"""

from __future__ import annotations

import copy

import tensorflow as tf
from official.vision.serving import detection
from tensorflow.python.framework import convert_to_constants

INPUT_NAME = "image_tensor"
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def _serving_params(params):
    """A copy of the training config set up for TF1-style outputs."""
    params = copy.deepcopy(params)
    params.override(
        {
            "task": {
                "export_config": {
                    "output_normalized_coordinates": True,
                    "cast_num_detections_to_float": True,
                    "cast_detection_classes_to_float": True,
                }
            }
        },
        is_strict=False,
    )
    generator = params.task.model.detection_generator
    if generator.nms_version == "tflite":
        # The TFLite op only exists after conversion; a TF graph needs a TF NMS.
        generator.nms_version = "v2"
    return params


def frozen_graph_def(params, checkpoint_path: str) -> tf.compat.v1.GraphDef:
    """The trained detector as one GraphDef with its weights folded in."""
    params = _serving_params(params)
    module = detection.DetectionModule(
        params,
        batch_size=1,
        input_image_size=list(params.task.model.input_size[:2]),
        input_type="image_tensor",
        num_channels=3,
    )
    path = checkpoint_path
    if tf.io.gfile.isdir(path):
        path = tf.train.latest_checkpoint(path)
    tf.train.Checkpoint(model=module.model).read(path).expect_partial()

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8, name=INPUT_NAME)])
    def serve(image_tensor):
        outputs = module.serve(image_tensor)
        return {name: tf.identity(outputs[name], name=name) for name in OUTPUT_NAMES}

    frozen = convert_to_constants.convert_variables_to_constants_v2(serve.get_concrete_function())
    graph_def = frozen.graph.as_graph_def()
    _check_names(graph_def)
    return graph_def


def _check_names(graph_def: tf.compat.v1.GraphDef) -> None:
    """Fail loudly (a bug, not user error) if the TF1 tensor names did not survive freezing."""
    names = {node.name for node in graph_def.node}
    missing = [name for name in (INPUT_NAME, *OUTPUT_NAMES) if name not in names]
    if missing:
        raise RuntimeError(f"frozen graph lacks the TF1 tensor names {missing}")
