"""`model.onnx`: the float TFLite detector in ONNX, with the same input, outputs and detections.

Route. tf2onnx converting the float TFLite file, `TFLite_Detection_PostProcess` included, gave
other detections than the file (issue 13: 14 against 10 on one image, boxes off by up to 0.87).
So only the network goes through tf2onnx, from the same tf.function the TFLite file is
converted from (raw uint8 pixels -> box encodings and sigmoid class scores); the
post-processing is written here in standard ONNX ops with the TFLite op's semantics, as
`export_tflite` configures it:
- decode (ty, tx, th, tw) against the normalised centre anchors (scale factors 1): boxes come
  out normalised [ymin, xmin, ymax, xmax], unclipped, as the op leaves them;
- class-agnostic ("fast") NMS with one class per box: the best non-background score and its
  class (ReduceMax/ArgMax over the score columns after the background one), then ONNX
  NonMaxSuppression on those scores (IoU above the threshold suppresses, like the op; scores
  *at* the threshold are kept, like the op: ONNX keeps only scores above it, so the threshold
  passed is the next float below), at most max_detections boxes, then TopK by score;
- outputs named and ordered as the TFLite files': detection_boxes [1, max, 4],
  detection_classes [1, max] (float, 0-based into labels.txt), detection_scores [1, max],
  num_detections [1]; rows past the count are zeros.

Gate (like the quantised files): `train` scores model.onnx with the Pi-side code and ships it
only if its AP50 is within `AP50_TOLERANCE` (relative) of the float TFLite file's and, on every
scored image, its detections match the TFLite file's (same classes, boxes within
`BOX_TOLERANCE_PX` at the input size); otherwise export.json says why and no model.onnx is
written.
"""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
# Opset 17: every op used has had its current form since opset 13, and onnxruntime >= 1.14
# (and OpenVINO, TensorRT) read it.
OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")
# model.onnx ships only when its AP50 is within this share of the float TFLite file's...
AP50_TOLERANCE = 0.01
# ...and its detections agree with the TFLite file's: same class, every box coordinate within
# this many pixels of the model input.
BOX_TOLERANCE_PX = 1.0
# Detections whose scores differ by less than this are the same detection; one this close to
# the score threshold may be kept by one runtime and not by the other (float rounding differs
# between kernels), so it is not required on the other side.
SCORE_TOLERANCE = 0.01
ROUTE = (
    "network converted by tf2onnx from the TFLite export's tf.function; decoding and "
    "class-agnostic NMS in standard ONNX ops (NonMaxSuppression, TopK) with the "
    "TFLite_Detection_PostProcess semantics"
)


# ---- the ONNX graph ------------------------------------------------------------------------


def network_function(module) -> Callable:
    """The TFLite module's network as a tf.function: uint8 pixels -> encodings and scores."""
    import tensorflow as tf

    height, width = module.input_size

    @tf.function(input_signature=[tf.TensorSpec([1, height, width, 3], tf.uint8, name=INPUT_NAME)])
    def network(images):
        box_encodings, class_scores = module.network(images)
        return {"box_encodings": box_encodings, "class_scores": class_scores}

    return network


def postprocess_graph(
    anchors: np.ndarray,
    *,
    max_detections: int,
    score_threshold: float,
    iou_threshold: float,
    encodings: str = "box_encodings",
    scores: str = "class_scores",
):
    """ONNX nodes and initializers from (encodings [1, N, 4], scores [1, N, C + 1]) to the four
    detection outputs, as TFLite_Detection_PostProcess computes them (see the module doc)."""
    from onnx import TensorProto, helper, numpy_helper

    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)  # ycenter, xcenter, h, w
    constants = {
        "pp/anchor_y": anchors[:, 0:1],
        "pp/anchor_x": anchors[:, 1:2],
        "pp/anchor_h": anchors[:, 2:3],
        "pp/anchor_w": anchors[:, 3:4],
        "pp/anchor_half_h": anchors[:, 2:3] / 2,
        "pp/anchor_half_w": anchors[:, 3:4] / 2,
        "pp/axis0": np.array([0], np.int64),
        "pp/axis1": np.array([1], np.int64),
        "pp/split4": np.array([1, 1, 1, 1], np.int64),
        "pp/zero": np.array([0], np.int64),
        "pp/one": np.array([1], np.int64),
        "pp/large": np.array([np.iinfo(np.int64).max], np.int64),
        "pp/two": np.array([2], np.int64),
        "pp/box_column": np.array(2, np.int64),
        "pp/max_detections": np.array([max_detections], np.int64),
        "pp/iou_threshold": np.array([iou_threshold], np.float32),
        # ONNX keeps scores > threshold, the TFLite op scores >= threshold.
        "pp/score_threshold": np.array(
            [np.nextafter(np.float32(score_threshold), np.float32(-np.inf))], np.float32
        ),
    }
    initializers = [numpy_helper.from_array(value, name) for name, value in constants.items()]
    nodes = []

    def add(op: str, inputs: list[str], outputs: list[str] | str, **attributes) -> list[str]:
        outputs = [outputs] if isinstance(outputs, str) else outputs
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attributes))
        return outputs

    # Decode, in [N, ...]: the batch is 1, as in the TFLite files.
    add("Squeeze", [encodings, "pp/axis0"], "pp/encodings")
    add("Split", ["pp/encodings", "pp/split4"], ["pp/ty", "pp/tx", "pp/th", "pp/tw"], axis=1)
    add("Mul", ["pp/ty", "pp/anchor_h"], "pp/dy")
    add("Add", ["pp/dy", "pp/anchor_y"], "pp/centre_y")
    add("Mul", ["pp/tx", "pp/anchor_w"], "pp/dx")
    add("Add", ["pp/dx", "pp/anchor_x"], "pp/centre_x")
    add("Exp", ["pp/th"], "pp/exp_h")
    add("Mul", ["pp/exp_h", "pp/anchor_half_h"], "pp/half_h")
    add("Exp", ["pp/tw"], "pp/exp_w")
    add("Mul", ["pp/exp_w", "pp/anchor_half_w"], "pp/half_w")
    add("Sub", ["pp/centre_y", "pp/half_h"], "pp/ymin")
    add("Sub", ["pp/centre_x", "pp/half_w"], "pp/xmin")
    add("Add", ["pp/centre_y", "pp/half_h"], "pp/ymax")
    add("Add", ["pp/centre_x", "pp/half_w"], "pp/xmax")
    add("Concat", ["pp/ymin", "pp/xmin", "pp/ymax", "pp/xmax"], "pp/boxes", axis=1)
    add("Unsqueeze", ["pp/boxes", "pp/axis0"], "pp/batch_boxes")

    # One class per box: the best score after the background column, and its class.
    add("Slice", [scores, "pp/one", "pp/large", "pp/two"], "pp/object_scores")
    add("ReduceMax", ["pp/object_scores"], "pp/best_score", axes=[2], keepdims=0)
    add("ArgMax", ["pp/object_scores"], "pp/best_class", axis=2, keepdims=0)
    add("Unsqueeze", ["pp/best_score", "pp/axis1"], "pp/nms_scores")  # [1, 1, N]
    add(
        "NonMaxSuppression",
        [
            "pp/batch_boxes",
            "pp/nms_scores",
            "pp/max_detections",
            "pp/iou_threshold",
            "pp/score_threshold",
        ],
        "pp/selected",
    )
    add("Gather", ["pp/selected", "pp/box_column"], "pp/selected_boxes", axis=1)  # [K]
    add("Squeeze", ["pp/best_score", "pp/axis0"], "pp/scores_n")
    add("Squeeze", ["pp/best_class", "pp/axis0"], "pp/classes_n")
    add("Gather", ["pp/scores_n", "pp/selected_boxes"], "pp/kept_scores")
    add("Shape", ["pp/selected_boxes"], "pp/count")
    # Highest score first, whatever order the runtime's NMS returns.
    add("TopK", ["pp/kept_scores", "pp/count"], ["pp/sorted_scores", "pp/order"], axis=0)
    add("Gather", ["pp/selected_boxes", "pp/order"], "pp/sorted_boxes")
    add("Gather", ["pp/boxes", "pp/sorted_boxes"], "pp/out_boxes", axis=0)
    add("Gather", ["pp/classes_n", "pp/sorted_boxes"], "pp/out_classes_int")
    add("Cast", ["pp/out_classes_int"], "pp/out_classes", to=TensorProto.FLOAT)

    # Fixed-size outputs, zero rows past the count, as the TFLite files have.
    add("Sub", ["pp/max_detections", "pp/count"], "pp/missing")
    add("Concat", ["pp/zero", "pp/zero", "pp/missing", "pp/zero"], "pp/box_pads", axis=0)
    add("Concat", ["pp/zero", "pp/missing"], "pp/row_pads", axis=0)
    add("Pad", ["pp/out_boxes", "pp/box_pads"], "pp/padded_boxes")
    add("Pad", ["pp/out_classes", "pp/row_pads"], "pp/padded_classes")
    add("Pad", ["pp/sorted_scores", "pp/row_pads"], "pp/padded_scores")
    add("Unsqueeze", ["pp/padded_boxes", "pp/axis0"], OUTPUT_NAMES[0])
    add("Unsqueeze", ["pp/padded_classes", "pp/axis0"], OUTPUT_NAMES[1])
    add("Unsqueeze", ["pp/padded_scores", "pp/axis0"], OUTPUT_NAMES[2])
    add("Cast", ["pp/count"], OUTPUT_NAMES[3], to=TensorProto.FLOAT)

    outputs = [
        helper.make_tensor_value_info(OUTPUT_NAMES[0], TensorProto.FLOAT, [1, max_detections, 4]),
        helper.make_tensor_value_info(OUTPUT_NAMES[1], TensorProto.FLOAT, [1, max_detections]),
        helper.make_tensor_value_info(OUTPUT_NAMES[2], TensorProto.FLOAT, [1, max_detections]),
        helper.make_tensor_value_info(OUTPUT_NAMES[3], TensorProto.FLOAT, [1]),
    ]
    return nodes, initializers, outputs


def attach_postprocess(network_model, anchors: np.ndarray, settings: dict[str, Any]):
    """The network's ONNX model with the post-processing appended; its outputs replaced."""
    import onnx

    graph = network_model.graph
    names = {output.name for output in graph.output}
    if names != {"box_encodings", "class_scores"}:
        raise RuntimeError(f"tf2onnx named the network outputs {sorted(names)}")
    nodes, initializers, outputs = postprocess_graph(
        anchors,
        max_detections=settings["max_detections"],
        score_threshold=settings["score_threshold"],
        iou_threshold=settings["iou_threshold"],
    )
    graph.node.extend(nodes)
    graph.initializer.extend(initializers)
    del graph.output[:]
    graph.output.extend(outputs)
    graph.name = "retinanet_detector"
    onnx.checker.check_model(network_model)
    return network_model


def build_onnx(module, settings: dict[str, Any]) -> bytes:
    """The serialised model.onnx for a TfliteDetectionModule (same input size and anchors)."""
    import tf2onnx

    # Its per-pass optimiser reports are framework chatter in the training log.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    network = network_function(module)
    model, _ = tf2onnx.convert.from_function(
        network, input_signature=network.input_signature, opset=OPSET
    )
    if [i.name for i in model.graph.input] != [INPUT_NAME]:
        raise RuntimeError(f"tf2onnx named the inputs {[i.name for i in model.graph.input]}")
    model = attach_postprocess(model, module.anchors, settings)
    model.doc_string = (
        "RetinaNet detector: uint8 RGB [1, H, W, 3] letterboxed (edge.preprocess.letterbox); "
        "outputs as the TFLite files: detection_boxes (normalised ymin, xmin, ymax, xmax), "
        "detection_classes (0-based into labels.txt), detection_scores, num_detections"
    )
    return model.SerializeToString()


# ---- agreement with the float TFLite file and the gate ---------------------------------------


@dataclass
class Agreement:
    """Detections of two models on the same input tensors, compared."""

    images: int = 0
    detections: int = 0  # reference detections compared
    max_box_difference_px: float = 0.0
    max_score_difference: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def agrees(self) -> bool:
        return self.images > 0 and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.images,
            "detections": self.detections,
            "max_box_difference_px": round(self.max_box_difference_px, 4),
            "max_score_difference": round(self.max_score_difference, 5),
            "box_tolerance_px": BOX_TOLERANCE_PX,
            "problems": self.problems[:10],
        }


def _valid(outputs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes, classes, scores, count = outputs
    num = max(0, min(round(float(np.reshape(count, -1)[0])), np.shape(scores)[-1]))
    return (
        np.reshape(boxes, (-1, 4))[:num].astype(np.float64),
        np.rint(np.reshape(classes, -1)[:num]).astype(int),
        np.reshape(scores, -1)[:num].astype(np.float64),
    )


def compare_outputs(
    name: str,
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    input_size: tuple[int, int],
    score_threshold: float,
    agreement: Agreement,
) -> None:
    """Add one image's comparison to `agreement` (outputs: boxes, classes, scores, count).

    Every detection of each side needs one on the other side with the same class, a box
    within BOX_TOLERANCE_PX on each coordinate (in input pixels) and a score within
    SCORE_TOLERANCE, except detections scored within SCORE_TOLERANCE of the threshold.
    """
    scale = np.array([input_size[0], input_size[1], input_size[0], input_size[1]], np.float64)
    sides = (_valid(reference), _valid(candidate))
    agreement.images += 1
    for (boxes, classes, scores), (other_boxes, other_classes, other_scores), label in (
        (sides[0], sides[1], "TFLite"),
        (sides[1], sides[0], "ONNX"),
    ):
        for row in range(len(scores)):
            if label == "TFLite":
                agreement.detections += 1
            same_class = np.flatnonzero(other_classes == classes[row])
            if len(same_class):
                differences = np.abs(other_boxes[same_class] - boxes[row]) * scale
                nearest = int(np.argmin(differences.max(axis=1)))
                box_px = float(differences[nearest].max())
                score = float(abs(other_scores[same_class[nearest]] - scores[row]))
                if box_px <= BOX_TOLERANCE_PX and score <= SCORE_TOLERANCE:
                    agreement.max_box_difference_px = max(agreement.max_box_difference_px, box_px)
                    agreement.max_score_difference = max(agreement.max_score_difference, score)
                    continue
            if scores[row] < score_threshold + SCORE_TOLERANCE:
                continue
            agreement.problems.append(
                f"{name}: {label} detection class {classes[row]} score {scores[row]:.3f} box "
                f"{np.round(boxes[row] * scale, 1).tolist()} px has no match on the other side"
            )


def onnx_verdict(tflite_ap50: float, onnx_ap50: float, agreement: Agreement) -> tuple[bool, str]:
    """Whether model.onnx may ship, and the reason in words (a pure function of the figures)."""
    difference = onnx_ap50 - tflite_ap50
    ap_ok = abs(difference) <= AP50_TOLERANCE * tflite_ap50 + 1e-9
    ap_text = (
        f"AP50 {onnx_ap50:.4f} against the float TFLite file's {tflite_ap50:.4f} "
        f"({difference:+.4f}, tolerance {AP50_TOLERANCE:.0%})"
    )
    if agreement.images == 0:
        return False, f"{ap_text}; no images to compare detections on: not shipped"
    detections_text = (
        f"detections agree on {agreement.images} images ({agreement.detections} TFLite "
        f"detections, boxes within {agreement.max_box_difference_px:.3f} px, scores within "
        f"{agreement.max_score_difference:.4f})"
    )
    if not agreement.agrees:
        return False, (
            f"{ap_text}; {len(agreement.problems)} detection(s) without a counterpart, first: "
            f"{agreement.problems[0]}: not shipped"
        )
    if not ap_ok:
        return False, f"{ap_text}, outside the tolerance: not shipped"
    return True, f"{ap_text}; {detections_text}"


# ---- the entry point the edge-export sequence calls -----------------------------------------


def onnx_description(path: pathlib.Path) -> dict[str, Any]:
    """Input and outputs of an ONNX file, read back from it with onnxruntime."""
    from sagemaker_tfod.edge.detect import OnnxDetector

    detector = OnnxDetector(path)
    return {
        "input": {
            "name": detector.input_name,
            "shape": [int(v) for v in detector.input["shape"]],
            "dtype": np.dtype(detector.input["dtype"]).name,
        },
        "outputs": list(detector.output_names),
        "opset": OPSET,
        "size_bytes": path.stat().st_size,
    }


def agreement_with(
    reference_path: pathlib.Path,
    candidate_path: pathlib.Path,
    images: Sequence[np.ndarray],
    score_threshold: float,
) -> Agreement:
    """Compare a TFLite file's raw outputs with an ONNX file's on the same input tensors."""
    from sagemaker_tfod.edge.detect import OnnxDetector, TfliteDetector

    reference = TfliteDetector(reference_path, threads=2)
    candidate = OnnxDetector(candidate_path, threads=2)
    agreement = Agreement()
    for number, image in enumerate(images):
        tensor, _ = reference.input_tensor(image)
        compare_outputs(
            f"image {number}",
            reference.run(tensor),
            candidate.run(tensor),
            reference.input_size,
            score_threshold,
            agreement,
        )
    return agreement


def export_onnx(
    module,
    settings: dict[str, Any],
    model_dir: pathlib.Path,
    *,
    float_tflite: pathlib.Path,
    float_ap50: float,
    images: Sequence[np.ndarray],
    score: Callable[[pathlib.Path], dict[str, Any]],
) -> dict[str, Any]:
    """Write model.onnx if it passes the gate; return the decision for export.json.

    `module` is the TfliteDetectionModule the float TFLite file was converted from, `settings`
    its post-processing settings (export_tflite.postprocess_settings), `images` the RGB
    images to compare detections on, `score(path)` the Pi-side evaluation (returns AP50...).
    The decision holds `shipped`, `reason`, `agreement` and, under `file`, the file's
    description and eval (export.json's `files` entry when shipped). Conversion errors are
    reported in the decision, not raised: ONNX is an extra export.
    """
    model_dir = pathlib.Path(model_dir)
    started = time.monotonic()
    decision: dict[str, Any] = {"requested": True, "shipped": False, "route": ROUTE}
    trial = model_dir / f".trial-{ONNX_FILE}"
    target = model_dir / ONNX_FILE
    target.unlink(missing_ok=True)  # a model.onnx of an earlier run must not outlive its gate
    try:
        try:
            log.info("converting %s (%s)", ONNX_FILE, ROUTE)
            data = build_onnx(module, settings)
        except ImportError as error:
            decision["reason"] = f"not exported: {error.name or error} is not installed"
            log.warning("%s", decision["reason"])
            return decision
        except Exception as error:  # a converter failure must not fail the job
            log.exception("ONNX conversion failed")
            decision["reason"] = f"conversion failed: {type(error).__name__}: {error}"
            return decision
        temporary = trial.with_name(trial.name + ".tmp")
        temporary.write_bytes(data)
        temporary.replace(trial)
        described = onnx_description(trial)
        described["eval"] = score(trial)
        decision["file"] = described
        agreement = agreement_with(float_tflite, trial, images, settings["score_threshold"])
        decision["agreement"] = agreement.as_dict()
        shipped, reason = onnx_verdict(float_ap50, described["eval"]["AP50"], agreement)
        decision["shipped"], decision["reason"] = shipped, reason
        log.info("%s: %s -> %s", ONNX_FILE, reason, "ship" if shipped else "reject")
        if shipped:
            trial.replace(target)
        else:
            log.warning("%s was not written: %s", ONNX_FILE, reason)
        return decision
    finally:
        trial.unlink(missing_ok=True)
        decision["seconds"] = round(time.monotonic() - started, 1)
