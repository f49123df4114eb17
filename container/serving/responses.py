"""Detections -> response bodies (pure): this server's JSON, and JumpStart's `verbose` shape.

`application/json`, one image:

    {"model": {"export": "tflite_int8", "file": "model_int8.tflite", "input_size": [320, 320]},
     "width": 640, "height": 480,
     "detections": [{"label": "raccoon", "label_id": 1, "label_index": 0, "score": 0.91,
                     "box": [xmin, ymin, xmax, ymax],               # pixels of the image sent
                     "normalized_box": [xmin, ymin, xmax, ymax]}]}  # the same, in [0, 1]

A batch (JSON "images", or JSON Lines asked for as JSON) answers {"model": ..., "predictions":
[{"width", "height", "detections"}, ...]} in request order. `application/jsonlines` answers one
such object (with "model") per line. `label_id` is the label-map id (`label_index` + 1).

`application/json;verbose` answers what SageMaker JumpStart's TensorFlow object detection
endpoints answer, so their client code runs unchanged: {"normalized_boxes": [[xmin, ymin, xmax,
ymax], ...], "classes": [label_index, ...], "scores": [...], "labels": [every class name]}, where
`labels[int(classes[i])]` is the name of detection i.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sagemaker_tfod.container.serving.media_types import JSONLINES, ResponseFormat
from sagemaker_tfod.edge.detect import Detection, label_name


@dataclass(frozen=True)
class ImageResult:
    """The detections of one image, boxes in the pixels of the image as it was sent."""

    width: int
    height: int
    detections: Sequence[Detection]


def _normalised(box: Sequence[float], width: int, height: int) -> list[float]:
    xmin, ymin, xmax, ymax = box
    return [
        round(xmin / width, 5),
        round(ymin / height, 5),
        round(xmax / width, 5),
        round(ymax / height, 5),
    ]


def image_object(result: ImageResult, labels: Sequence[str]) -> dict:
    return {
        "width": result.width,
        "height": result.height,
        "detections": [
            {
                "label": label_name(list(labels), detection.label_index),
                "label_id": detection.label_index + 1,
                "label_index": detection.label_index,
                "score": round(detection.score, 4),
                "box": [round(value, 1) for value in detection.box],
                "normalized_box": _normalised(detection.box, result.width, result.height),
            }
            for detection in result.detections
        ],
    }


def verbose_object(result: ImageResult, labels: Sequence[str]) -> dict:
    """JumpStart's object detection response for one image."""
    return {
        "normalized_boxes": [
            _normalised(detection.box, result.width, result.height)
            for detection in result.detections
        ],
        "classes": [detection.label_index for detection in result.detections],
        "scores": [round(detection.score, 4) for detection in result.detections],
        "labels": list(labels),
    }


def render(
    results: Sequence[ImageResult],
    batch: bool,
    response_format: ResponseFormat,
    model_info: dict,
    labels: Sequence[str],
) -> bytes:
    """The response body for `results` (one per image, in request order)."""
    if response_format.verbose:
        objects = [verbose_object(result, labels) for result in results]
    else:
        objects = [{"model": model_info, **image_object(result, labels)} for result in results]
    if response_format.media_type == JSONLINES:
        return "".join(json.dumps(item) + "\n" for item in objects).encode()
    if not batch:
        return json.dumps(objects[0]).encode()
    if response_format.verbose:
        return json.dumps({"predictions": objects}).encode()
    for item in objects:
        del item["model"]
    return json.dumps({"model": model_info, "predictions": objects}).encode()


def error_body(status: int, message: str) -> bytes:
    return json.dumps({"error": " ".join(message.split()), "status": status}).encode()
