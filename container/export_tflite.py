"""TFLite exports in the stock TFLite detection convention, and their conversion recipes.

The graph ends in TFLite's `TFLite_Detection_PostProcess` op, so every file has the four outputs
the stock TFLite detection examples read: boxes normalised to [0, 1] as [ymin, xmin, ymax, xmax],
class indices 0-based into `labels.txt`, scores, and the count. Two settings make that true for a
Model Garden RetinaNet, whose own `nms_version='tflite'` path gives input-pixel boxes and lets
background (class 0) through:
- anchors are normalised to the input size, so the decoded boxes come out normalised;
- the op's `num_classes` excludes background while the score tensor keeps it: the op then skips
  the first score column (its label offset), so index 0 is the first label-map class.
The input is raw pixels (uint8 for float models, quantised uint8 for integer ones); the Model
Garden normalisation is inside the graph, so the Pi never needs to know the mean and std.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from official.vision.modeling import factory
from official.vision.ops import anchor, preprocess_ops

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


@dataclass(frozen=True)
class Recipe:
    """One way to convert the float graph: what it quantises and what its input is."""

    name: str
    quantize: str  # "none", "fp16", "dynamic", "int8"
    input_dtype: tf.DType
    description: str


RECIPES = {
    "float": Recipe("float", "none", tf.uint8, "float32 weights and activations"),
    "fp16": Recipe("fp16", "fp16", tf.uint8, "float16 weights, float32 compute"),
    "dynamic": Recipe("dynamic", "dynamic", tf.uint8, "int8 weights, float activations"),
    "int8": Recipe(
        "int8",
        "int8",
        tf.uint8,
        "full integer, quantised uint8 pixel input, float outputs from the post-processing op",
    ),
    "int8_float_io": Recipe(
        "int8_float_io",
        "int8",
        tf.float32,
        "integer body with float pixel input and float outputs (the safer variant)",
    ),
}


def build_model(params, input_height: int, input_width: int) -> tf.keras.Model:
    """The RetinaNet of `params` at a fixed batch-1 input size, untrained."""
    input_specs = tf.keras.layers.InputSpec(shape=[1, input_height, input_width, 3])
    return factory.build_retinanet(input_specs=input_specs, model_config=params.task.model)


def restore(model, checkpoint_path: str) -> None:
    """Load trained weights; a directory means its latest checkpoint."""
    path = checkpoint_path
    if tf.io.gfile.isdir(path):
        path = tf.train.latest_checkpoint(path)
    tf.train.Checkpoint(model=model).read(path).expect_partial().assert_existing_objects_matched()


def _postprocess_signature(
    *, num_classes: int, max_detections: int, score_threshold: float, iou_threshold: float
) -> str:
    """`experimental_implements` text the converter turns into TFLite_Detection_PostProcess."""
    attrs = [
        'name: "TFLite_Detection_PostProcess"',
        f'attr {{ key: "max_detections" value {{ i: {max_detections} }} }}',
        'attr { key: "max_classes_per_detection" value { i: 1 } }',
        'attr { key: "detections_per_class" value { i: 5 } }',
        # Class-agnostic ("fast") NMS: measured higher AP here than the op's regular NMS,
        # which keeps only `detections_per_class` boxes per class.
        'attr { key: "use_regular_nms" value { b: false } }',
        f'attr {{ key: "nms_score_threshold" value {{ f: {score_threshold:f} }} }}',
        f'attr {{ key: "nms_iou_threshold" value {{ f: {iou_threshold:f} }} }}',
        'attr { key: "y_scale" value { f: 1.0 } }',
        'attr { key: "x_scale" value { f: 1.0 } }',
        'attr { key: "h_scale" value { f: 1.0 } }',
        'attr { key: "w_scale" value { f: 1.0 } }',
        f'attr {{ key: "num_classes" value {{ i: {num_classes} }} }}',
    ]
    return " ".join(attrs)


def normalised_center_anchors(params, input_height: int, input_width: int) -> np.ndarray:
    """[N, 4] anchors as (ycenter, xcenter, h, w) / input size, in the head's output order."""
    model_config = params.task.model
    generator = anchor.build_anchor_generator(
        min_level=model_config.min_level,
        max_level=model_config.max_level,
        num_scales=model_config.anchor.num_scales,
        aspect_ratios=model_config.anchor.aspect_ratios,
        anchor_size=model_config.anchor.anchor_size,
    )
    per_level = generator(image_size=(input_height, input_width))
    corners = np.concatenate(
        [
            np.reshape(per_level[str(level)].numpy(), (-1, 4))
            for level in range(model_config.min_level, model_config.max_level + 1)
        ]
    )
    ymin, xmin, ymax, xmax = corners.T
    centre = np.stack(
        [
            (ymin + ymax) / 2 / input_height,
            (xmin + xmax) / 2 / input_width,
            (ymax - ymin) / input_height,
            (xmax - xmin) / input_width,
        ],
        axis=-1,
    )
    return centre.astype(np.float32)


def postprocess_settings(params) -> dict:
    """The post-processing op's settings from the experiment (the ONNX export reads them too)."""
    generator = params.task.model.detection_generator
    return {
        "num_classes": params.task.model.num_classes - 1,  # background excluded
        "max_detections": generator.max_num_detections,
        "score_threshold": generator.pre_nms_score_threshold,
        "iou_threshold": generator.nms_iou_threshold,
    }


def postprocess_function(settings: dict) -> Callable:
    """A tf.function that the TFLite converter replaces with TFLite_Detection_PostProcess:
    (box encodings [1, N, 4], scores [1, N, classes + 1], anchors [N, 4]) -> boxes, classes,
    scores, count. `settings` as postprocess_settings returns them."""

    # num_classes excludes background, so the op skips score column 0 (its label offset).
    @tf.function(experimental_implements=_postprocess_signature(**settings))
    def postprocess(box_encodings, class_scores, anchors):
        # Placeholder body: the converter replaces this function with the TFLite op.
        del box_encodings, class_scores, anchors
        return (
            tf.constant(0.0, name="boxes"),
            tf.constant(0.0, name="classes"),
            tf.constant(0.0, name="scores"),
            tf.constant(0.0, name="num_detections"),
        )

    return postprocess


class TfliteDetectionModule(tf.Module):
    """Raw pixels in, TFLite_Detection_PostProcess out, for one fixed input size."""

    def __init__(self, params, model, input_height: int, input_width: int):
        super().__init__()
        self.model = model
        self._params = params
        self._size = (input_height, input_width)
        self.anchors = normalised_center_anchors(params, input_height, input_width)
        self._anchors = tf.constant(self.anchors)
        self._num_classes = params.task.model.num_classes
        self._postprocess = postprocess_function(postprocess_settings(params))

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def network(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Raw pixels [1, H, W, 3] -> box encodings [1, N, 4] (ty, tx, th, tw) and class
        scores [1, N, classes + 1] after the sigmoid, anchors in `self.anchors` order."""
        model_config = self._params.task.model
        pixels = tf.cast(images, tf.float32)
        normalised = (pixels - tf.constant(preprocess_ops.MEAN_RGB)) / tf.constant(
            preprocess_ops.STDDEV_RGB
        )
        features = self.model.backbone(normalised, training=False)
        features = self.model.decoder(features, training=False)
        raw_scores, raw_boxes = self.model.head(features, training=False)[:2]
        levels = range(model_config.min_level, model_config.max_level + 1)
        scores = tf.concat(
            [tf.reshape(raw_scores[str(lv)], [1, -1, self._num_classes]) for lv in levels],
            axis=1,
        )
        boxes = tf.concat([tf.reshape(raw_boxes[str(lv)], [1, -1, 4]) for lv in levels], axis=1)
        return boxes, tf.sigmoid(scores)

    def serving_function(self, input_dtype: tf.DType) -> Callable:
        height, width = self._size

        @tf.function(
            input_signature=[tf.TensorSpec([1, height, width, 3], input_dtype, name="images")]
        )
        def serve(images):
            boxes, scores = self.network(images)
            outputs = self._postprocess(boxes, scores, self._anchors)
            return dict(zip(OUTPUT_NAMES, outputs, strict=True))

        return serve


def convert(
    module: TfliteDetectionModule,
    recipe: Recipe,
    calibration_images: Callable[[], Iterable[np.ndarray]] | None = None,
) -> bytes:
    """Convert with one recipe; int8 recipes draw [1, H, W, 3] uint8 pixel arrays to calibrate."""
    # Calibration feeds float pixels; the converter then swaps in the uint8 input it quantised.
    graph_input = tf.float32 if recipe.quantize == "int8" else recipe.input_dtype
    serve = module.serving_function(graph_input)
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [serve.get_concrete_function()], module
    )
    converter.allow_custom_ops = True
    if recipe.quantize == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif recipe.quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif recipe.quantize == "int8":
        if calibration_images is None:
            raise ValueError("int8 conversion needs calibration images")

        def representative() -> Iterator[list[np.ndarray]]:
            for pixels in calibration_images():
                yield [pixels.astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
            tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
        if recipe.input_dtype == tf.uint8:
            converter.inference_input_type = tf.uint8
    model_bytes = converter.convert()
    if recipe.quantize == "int8":
        model_bytes = uint8_postprocess_inputs(model_bytes)
    return stock_output_order(model_bytes)


def quantise_anchors(anchors: np.ndarray) -> tuple[np.ndarray, float, int]:
    """uint8 codes, scale and zero point of an anchor table, one affine scale for the tensor.

    The range always includes 0 so the zero point is exact; dequantised anchors are within half
    a step (range / 510) of the originals.
    """
    low = min(float(anchors.min()), 0.0)
    high = max(float(anchors.max()), 0.0)
    scale = (high - low) / 255 if high > low else 1.0
    zero_point = round(-low / scale)
    codes = np.clip(np.round(anchors / scale) + zero_point, 0, 255).astype(np.uint8)
    return codes, scale, zero_point


def uint8_postprocess_inputs(model_bytes: bytes) -> bytes:
    """Feed TFLite_Detection_PostProcess uint8 box encodings and uint8 anchors.

    Why: otherwise the integer file keeps the anchor table in float32 (19,125 anchors x 4 floats,
    0.3 MB at 320 px), which alone put int8 above 0.3x the float file's size. The op dequantises
    uint8 anchors, but only on its uint8 box-encoding path (float encodings require float
    anchors). The int8 encodings reach the op through a DEQUANTIZE; a QUANTIZE to uint8 with the
    zero point moved by 128 carries every value over exactly, so only the anchor rounding (at
    most ~1 px at 320 px) moves the boxes. Graphs of another shape are returned unchanged.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    builtin = schema.BuiltinOperator
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]

    def op_code(operator) -> int:
        return _builtin_code(model.operatorCodes[operator.opcodeIndex])

    postprocess = [
        op
        for op in graph.operators
        if model.operatorCodes[op.opcodeIndex].customCode == b"TFLite_Detection_PostProcess"
    ]
    if len(postprocess) != 1:
        return model_bytes
    encodings_index, anchors_index = int(postprocess[0].inputs[0]), int(postprocess[0].inputs[2])
    producers = [op for op in graph.operators if encodings_index in list(op.outputs)]
    readers = [op for op in graph.operators if encodings_index in list(op.inputs)]
    encodings, anchors = graph.tensors[encodings_index], graph.tensors[anchors_index]
    anchor_buffer = model.buffers[anchors.buffer]
    if (
        len(producers) != 1
        or op_code(producers[0]) != builtin.DEQUANTIZE
        or len(readers) != 1
        or encodings_index in list(graph.outputs)
        or anchors.type != schema.TensorType.FLOAT32
        or anchor_buffer.data is None
        or sum(tensor.buffer == anchors.buffer for tensor in graph.tensors) != 1
    ):
        log.warning("post-processing inputs not in the expected form; anchors stay float32")
        return model_bytes
    source = graph.tensors[producers[0].inputs[0]]
    source_q = source.quantization
    if source.type != schema.TensorType.INT8 or source_q is None or len(source_q.scale) != 1:
        log.warning("box encodings are not per-tensor int8; anchors stay float32")
        return model_bytes

    quantize = [
        i for i, code in enumerate(model.operatorCodes) if _builtin_code(code) == builtin.QUANTIZE
    ]
    if not quantize:
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin.QUANTIZE
        code.version = 1  # version 1 covers an int8 -> uint8 requantisation
        model.operatorCodes.append(code)
        quantize = [len(model.operatorCodes) - 1]
    producers[0].opcodeIndex = quantize[0]
    encodings.type = schema.TensorType.UINT8
    encodings.quantization = _per_tensor(
        schema, source_q.scale[0], int(source_q.zeroPoint[0]) + 128
    )

    table = np.frombuffer(bytes(anchor_buffer.data), np.float32).reshape(-1, 4)
    codes, scale, zero_point = quantise_anchors(table)
    anchor_buffer.data = np.frombuffer(codes.tobytes(), np.uint8)
    anchors.type = schema.TensorType.UINT8
    anchors.quantization = _per_tensor(schema, scale, zero_point)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _builtin_code(code) -> int:
    # Codes above 127 live only in builtinCode; older files only fill deprecatedBuiltinCode.
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _per_tensor(schema, scale: float, zero_point: int):
    params = schema.QuantizationParametersT()
    params.scale = [float(scale)]
    params.zeroPoint = [zero_point]
    return params


def stock_output_order(model_bytes: bytes) -> bytes:
    """Reorder the graph outputs to boxes, classes, scores, count.

    The converter lists them in its own order (count first here); the stock TFLite detection
    examples read outputs by position in this order, and the signature keeps the names.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    signature = model.signatureDefs[0]
    by_name = {tensor.name.decode(): tensor.tensorIndex for tensor in signature.outputs}
    model.subgraphs[signature.subgraphIndex].outputs = [by_name[name] for name in OUTPUT_NAMES]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
