"""Detectors over every export: TFLite and ONNX (no TensorFlow), SavedModel and frozen graph
(lazy TF).

All of them take an RGB uint8 image of any size and return `Detection`s in that image's pixels,
with the class as a 0-based index into `labels.txt`, so callers never see which export ran.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sagemaker_tfod.edge.errors import EdgeError
from sagemaker_tfod.edge.preprocess import letterbox, to_input_tensor
from sagemaker_tfod.edge.runtime import load_interpreter, load_onnx_session

# Output names of the stock TFLite detection convention, in its positional order.
TFLITE_OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


@dataclass(frozen=True)
class Detection:
    """One detected object."""

    label_index: int  # 0-based into labels.txt (label-map id - 1)
    score: float
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in image pixels

    def as_dict(self, labels: list[str] | None = None) -> dict:
        result = {
            "label_index": self.label_index,
            "score": round(self.score, 4),
            "box": [round(value, 1) for value in self.box],
        }
        if labels is not None:
            result["label"] = label_name(labels, self.label_index)
        return result


def label_name(labels: list[str], index: int) -> str:
    return labels[index] if 0 <= index < len(labels) else f"class {index}"


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> list[Detection]: ...


def to_detections(
    boxes_yx: np.ndarray, classes: np.ndarray, scores: np.ndarray, count: int
) -> list[Detection]:
    """Pixel [ymin, xmin, ymax, xmax] boxes + 0-based classes -> sorted Detections.

    `count` is clamped to the rows present: a quantised count output can saturate past them.
    """
    count = max(0, min(int(count), len(scores), len(boxes_yx), len(classes)))
    detections = [
        Detection(
            label_index=int(classes[i]),
            score=float(scores[i]),
            box=(
                float(boxes_yx[i, 1]),
                float(boxes_yx[i, 0]),
                float(boxes_yx[i, 3]),
                float(boxes_yx[i, 2]),
            ),
        )
        for i in range(count)
    ]
    return sorted(detections, key=lambda d: -d.score)


def dequantize(values: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    """Integer output -> float using its scale and zero point; floats pass through."""
    scale, zero_point = quantization
    if values.dtype.kind in "ui" and scale:
        return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)


class FixedInputDetector:
    """A file with one fixed-size image input and the four outputs of the TFLite detection
    convention (boxes, classes, scores, count): the TFLite files and model.onnx.

    Subclasses set `path`, `input` (shape, dtype, quantization) and the input size, and run.
    """

    path: pathlib.Path
    input: dict
    input_height: int
    input_width: int

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self.input["dtype"])

    @property
    def input_size(self) -> tuple[int, int]:
        return self.input_height, self.input_width

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """One raw inference: boxes, classes, scores, count as float arrays."""
        raise NotImplementedError

    def input_tensor(self, image: np.ndarray):
        pixels, placement = letterbox(image, self.input_height, self.input_width)
        return to_input_tensor(pixels, self.input_dtype, self.input["quantization"]), placement

    def detect(self, image: np.ndarray) -> list[Detection]:
        tensor, placement = self.input_tensor(image)
        boxes, classes, scores, count = self.run(tensor)
        num = round(float(count.reshape(-1)[0]))
        pixels = placement.normalised_to_pixels(boxes[0][:num])
        # Round, do not truncate: a dequantised 2 can be 1.9999.
        return to_detections(pixels, np.rint(classes[0][:num]).astype(int), scores[0][:num], num)


class TfliteDetector(FixedInputDetector):
    """A TFLite file in the stock detection convention (TFLite_Detection_PostProcess outputs)."""

    def __init__(self, model_path: str | pathlib.Path, threads: int = 1):
        self.path = pathlib.Path(model_path)
        if not self.path.is_file():
            raise EdgeError(f"{self.path}: model file not found; pass the path of a .tflite file")
        self.interpreter = load_interpreter(str(self.path), threads)
        details = self.interpreter.get_input_details()
        if len(details) != 1 or len(details[0]["shape"]) != 4 or details[0]["shape"][3] != 3:
            raise EdgeError(
                f"{self.path}: expected one image input [1, H, W, 3], got "
                f"{[list(d['shape']) for d in details]}; is this a detection model?"
            )
        self.input = details[0]
        self.input_height, self.input_width = (int(v) for v in self.input["shape"][1:3])
        self.outputs = self._output_details()

    def _output_details(self) -> list[dict]:
        """Output details in boxes, classes, scores, count order: by signature name if named."""
        by_position = self.interpreter.get_output_details()
        if len(by_position) != 4:
            raise EdgeError(
                f"{self.path}: {len(by_position)} outputs; a detection model in the TFLite "
                "convention has 4 (boxes, classes, scores, count)"
            )
        signatures = self.interpreter.get_signature_list()
        for key, signature in signatures.items():
            if set(TFLITE_OUTPUTS) <= set(signature["outputs"]):
                named = self.interpreter.get_signature_runner(key).get_output_details()
                return [named[name] for name in TFLITE_OUTPUTS]
        return list(by_position)

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """One raw inference: the four outputs, dequantised."""
        self.interpreter.set_tensor(self.input["index"], tensor)
        self.interpreter.invoke()
        return [
            dequantize(self.interpreter.get_tensor(d["index"]), d["quantization"])
            for d in self.outputs
        ]


class OnnxDetector(FixedInputDetector):
    """model.onnx: the TFLite files' input and outputs, run by onnxruntime (no TensorFlow)."""

    def __init__(self, model_path: str | pathlib.Path, threads: int = 1):
        self.path = pathlib.Path(model_path)
        if not self.path.is_file():
            raise EdgeError(f"{self.path}: model file not found; pass the path of a .onnx file")
        self.session = load_onnx_session(str(self.path), threads)
        inputs = self.session.get_inputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) != 4 or shape[3] != 3 or not all(isinstance(v, int) for v in shape):
            raise EdgeError(
                f"{self.path}: expected one image input [1, H, W, 3], got "
                f"{[list(i.shape) for i in inputs]}; is this the model.onnx of a training job?"
            )
        names = [output.name for output in self.session.get_outputs()]
        if not set(TFLITE_OUTPUTS) <= set(names):
            raise EdgeError(
                f"{self.path}: outputs {names}; a detection model needs {list(TFLITE_OUTPUTS)}"
            )
        dtype = {"tensor(uint8)": np.uint8, "tensor(float)": np.float32}.get(inputs[0].type)
        if dtype is None:
            raise EdgeError(f"{self.path}: input type {inputs[0].type}; expected uint8 pixels")
        self.input_name = inputs[0].name
        self.output_names = TFLITE_OUTPUTS
        # The keys of a TFLite input's details, so both kinds are used alike (raw pixels in).
        self.input = {"shape": np.array(shape), "dtype": dtype, "quantization": (0.0, 0)}
        self.input_height, self.input_width = int(shape[1]), int(shape[2])

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        """One raw inference: boxes, classes, scores, count."""
        outputs = self.session.run(list(self.output_names), {self.input_name: tensor})
        return [np.asarray(value, dtype=np.float32) for value in outputs]


def _import_tensorflow(path: str | pathlib.Path):
    """TensorFlow, which only SavedModels and frozen graphs need (imported here, lazily)."""
    try:
        import tensorflow as tf
    except ImportError:
        raise EdgeError(
            f"{path}: SavedModels and frozen graphs need TensorFlow (pip install tensorflow); "
            "on a Raspberry Pi use the .tflite files instead"
        ) from None
    return tf


class SavedModelDetector:
    """A Model Garden SavedModel with a uint8 `image_tensor` input (imports TensorFlow)."""

    def __init__(self, path: str | pathlib.Path):
        tf = _import_tensorflow(path)
        self.path = pathlib.Path(path)
        self._tf = tf
        try:
            loaded = tf.saved_model.load(str(self.path))
            self.function = loaded.signatures["serving_default"]
        except (OSError, ValueError, KeyError) as error:
            raise EdgeError(
                f"{self.path}: not a SavedModel with a serving_default signature "
                f"({type(error).__name__}); pass the saved_model folder the training job wrote"
            ) from None
        self.input_name = next(iter(self.function.structured_input_signature[1]))

    def detect(self, image: np.ndarray) -> list[Detection]:
        outputs = self.function(**{self.input_name: self._tf.constant(image[np.newaxis])})
        outputs = {key: value.numpy() for key, value in outputs.items()}
        num = int(outputs["num_detections"][0])
        boxes = outputs["detection_boxes"][0][:num].astype(np.float32)
        height, width = image.shape[:2]
        if num and boxes.max() <= 1.0 + 1e-6:
            # export_config.output_normalized_coordinates: [0, 1] of the original image.
            boxes = boxes * np.array([height, width, height, width], dtype=np.float32)
        elif "image_info" in outputs:
            # Model Garden's default: pixels of the resized input; image_info[2] is the scale.
            scale_y, scale_x = outputs["image_info"][0][2]
            boxes = boxes / np.array([scale_y, scale_x, scale_y, scale_x], dtype=np.float32)
        boxes = np.clip(boxes, 0, [height, width, height, width])
        classes = np.rint(outputs["detection_classes"][0][:num]).astype(int) - 1
        return to_detections(boxes, classes, outputs["detection_scores"][0][:num], num)


class FrozenGraphDetector:
    """`frozen_inference_graph.pb` with the TF1 Object Detection API tensor names."""

    def __init__(self, path: str | pathlib.Path):
        tf = _import_tensorflow(path)
        self.path = pathlib.Path(path)
        from google.protobuf.message import DecodeError  # ships with TensorFlow

        graph_def = tf.compat.v1.GraphDef()
        try:
            graph_def.ParseFromString(self.path.read_bytes())
            graph = tf.Graph()
            with graph.as_default():
                tf.compat.v1.import_graph_def(graph_def, name="")
            graph.get_tensor_by_name("image_tensor:0")
        except (DecodeError, ValueError, KeyError) as error:  # KeyError: no TF1 input name
            raise EdgeError(
                f"{self.path}: not a frozen detection graph with an image_tensor input "
                f"({type(error).__name__}); pass the frozen_inference_graph.pb the training "
                "job wrote"
            ) from None
        self.session = tf.compat.v1.Session(graph=graph)
        self.fetches = [f"{name}:0" for name in TFLITE_OUTPUTS]

    def detect(self, image: np.ndarray) -> list[Detection]:
        boxes, classes, scores, count = self.session.run(
            self.fetches, feed_dict={"image_tensor:0": image[np.newaxis]}
        )
        num = int(count[0])
        height, width = image.shape[:2]
        pixels = boxes[0][:num] * np.array([height, width, height, width], dtype=np.float32)
        label_ids = np.rint(classes[0][:num]).astype(int)
        return to_detections(pixels, label_ids - 1, scores[0][:num], num)


def open_detector(path: str | pathlib.Path, threads: int = 1) -> Detector:
    """The detector for any export: .tflite, .onnx, a SavedModel folder, or a frozen graph."""
    path = pathlib.Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return SavedModelDetector(path)
        raise EdgeError(f"{path}: a folder without saved_model.pb; pass a SavedModel folder")
    if not path.is_file():
        raise EdgeError(
            f"{path}: not found; pass a .tflite or .onnx file, a SavedModel folder or a .pb"
        )
    if path.name == "saved_model.pb":
        return SavedModelDetector(path.parent)
    if path.suffix == ".pb":
        return FrozenGraphDetector(path)
    if path.suffix.lower() == ".onnx":
        return OnnxDetector(path, threads=threads)
    return TfliteDetector(path, threads=threads)


def above(detections: list[Detection], score_threshold: float) -> list[Detection]:
    return [d for d in detections if d.score >= score_threshold]
