"""Evaluate the exported SavedModel on the eval shards: COCO AP overall and per class
(`metrics.json`), and a picture (`eval.png`) of per-class AP bars and detections.

Model Garden's own evaluator gives the overall COCO numbers during training; pycocotools'
`COCOeval` (which it uses) does not expose per-class numbers through it, so this pass computes
them from `COCOeval.eval['precision']`, on the exported model the Pi side will actually run.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf
from matplotlib import patches
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sagemaker_tfod.container.export import SERVING_INPUT
from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.files import atomic_output_path, atomic_write_text

logger = logging.getLogger(__name__)

GRID_IMAGES = 8
DRAW_SCORE_THRESHOLD = 0.3


@dataclass
class ImageResult:
    image: np.ndarray  # uint8 [H, W, 3]
    true_boxes: np.ndarray  # [N, 4] normalised ymin, xmin, ymax, xmax
    true_classes: np.ndarray  # [N]
    boxes: np.ndarray  # [M, 4] normalised
    scores: np.ndarray
    classes: np.ndarray


def read_examples(shards: list[str], limit: int | None = None) -> Iterator[dict[str, Any]]:
    features = {
        schema.IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        schema.BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
        schema.BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
        schema.BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
        schema.BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
        schema.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
    }
    dataset = tf.data.TFRecordDataset(shards)
    if limit is not None:
        dataset = dataset.take(limit)
    for record in dataset:
        parsed = tf.io.parse_single_example(record, features)
        image = tf.io.decode_image(
            parsed[schema.IMAGE_ENCODED], channels=3, expand_animations=False
        )
        boxes = np.stack(
            [
                parsed[key].values.numpy()
                for key in (schema.BBOX_YMIN, schema.BBOX_XMIN, schema.BBOX_YMAX, schema.BBOX_XMAX)
            ],
            axis=-1,
        ).reshape(-1, 4)
        yield {
            "image": image.numpy(),
            "boxes": boxes,
            "classes": parsed[schema.CLASS_LABEL].values.numpy(),
        }


def predict(saved_model_dir: pathlib.Path, shards: list[str], limit: int | None = None):
    model = tf.saved_model.load(str(saved_model_dir))
    serve = model.signatures["serving_default"]
    results = []
    for example in read_examples(shards, limit):
        outputs = serve(**{SERVING_INPUT: tf.constant(example["image"][None])})
        count = int(np.asarray(outputs["num_detections"]).reshape(-1)[0])
        results.append(
            ImageResult(
                image=example["image"],
                true_boxes=example["boxes"],
                true_classes=example["classes"],
                boxes=outputs["detection_boxes"].numpy()[0][:count],
                scores=outputs["detection_scores"].numpy()[0][:count],
                classes=np.rint(outputs["detection_classes"].numpy()[0][:count]).astype(int),
            )
        )
    return results


def _to_xywh(box: np.ndarray, height: int, width: int) -> list[float]:
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return [xmin * width, ymin * height, (xmax - xmin) * width, (ymax - ymin) * height]


def coco_metrics(results: list[ImageResult], label_map: dict[int, str]) -> dict[str, Any]:
    """Overall COCO numbers and per-class AP/AP50 from detections and ground truth."""
    images, annotations, detections = [], [], []
    for image_id, result in enumerate(results, start=1):
        height, width = result.image.shape[:2]
        images.append({"id": image_id, "height": height, "width": width})
        for box, cls in zip(result.true_boxes, result.true_classes, strict=True):
            xywh = _to_xywh(box, height, width)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": xywh,
                    "area": xywh[2] * xywh[3],
                    "iscrowd": 0,
                }
            )
        for box, score, cls in zip(result.boxes, result.scores, result.classes, strict=True):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": _to_xywh(box, height, width),
                    "score": float(score),
                }
            )
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in sorted(label_map.items())],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth.createIndex()
        predicted = ground_truth.loadRes(detections) if detections else COCO()
        if not detections:
            predicted.dataset = {"images": images, "annotations": [], "categories": []}
            predicted.createIndex()
        evaluator = COCOeval(ground_truth, predicted, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    names = ["AP", "AP50", "AP75", "APs", "APm", "APl", "ARmax1", "ARmax10", "ARmax100"]
    overall = {name: _clean(value) for name, value in zip(names, evaluator.stats, strict=False)}
    precision = evaluator.eval["precision"]  # [IoU, recall, class, area, max_dets]
    per_class = {}
    for index, class_id in enumerate(evaluator.params.catIds):
        all_iou = precision[:, :, index, 0, -1]
        at_50 = precision[0, :, index, 0, -1]
        per_class[label_map[class_id]] = {
            "id": int(class_id),
            "AP": _mean_valid(all_iou),
            "AP50": _mean_valid(at_50),
            "num_true_boxes": sum(1 for a in annotations if a["category_id"] == class_id),
        }
    return {"overall": overall, "per_class": per_class, "num_images": len(results)}


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def _clean(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else -1.0


def draw_report(
    results: list[ImageResult],
    metrics: dict[str, Any] | None,
    label_map: dict[int, str],
    path: pathlib.Path,
    title: str,
) -> None:
    """Per-class AP bars (when evaluated) above a grid of images with true/predicted boxes."""
    shown = results[:GRID_IMAGES]
    columns = 4
    rows = max(1, math.ceil(len(shown) / columns))
    figure = plt.figure(figsize=(4 * columns, 3.2 + 4 * rows), dpi=80)
    grid = figure.add_gridspec(rows + 1, columns, height_ratios=[0.8] + [1] * rows)
    bars = figure.add_subplot(grid[0, :])
    if metrics:
        names = list(metrics["per_class"])
        ap = [max(0.0, metrics["per_class"][n]["AP"]) for n in names]
        ap50 = [max(0.0, metrics["per_class"][n]["AP50"]) for n in names]
        x = np.arange(len(names))
        bars.bar(x - 0.2, ap, 0.4, label="AP@[.5:.95]")
        bars.bar(x + 0.2, ap50, 0.4, label="AP50")
        bars.set_xticks(x, names, rotation=30 if len(names) > 6 else 0)
        bars.set_ylim(0, 1)
        bars.legend(loc="lower right")
        overall = metrics["overall"]
        bars.set_title(f"{title}: AP {overall['AP']:.3f}, AP50 {overall['AP50']:.3f}")
    else:
        bars.axis("off")
        bars.text(0.5, 0.5, f"{title}: no eval shards, nothing evaluated", ha="center")
    for index, result in enumerate(shown):
        axis = figure.add_subplot(grid[1 + index // columns, index % columns])
        axis.imshow(result.image)
        axis.axis("off")
        height, width = result.image.shape[:2]
        for box, cls in zip(result.true_boxes, result.true_classes, strict=True):
            _draw_box(axis, box, height, width, "lime", "--", label_map.get(int(cls), str(cls)))
        for box, score, cls in zip(result.boxes, result.scores, result.classes, strict=True):
            if score >= DRAW_SCORE_THRESHOLD:
                name = label_map.get(int(cls), str(cls))
                _draw_box(axis, box, height, width, "red", "-", f"{name} {score:.2f}")
    figure.text(0.01, 0.005, "green dashed: true boxes; red: predictions (score >= 0.3)")
    figure.tight_layout()
    try:
        with atomic_output_path(path) as temporary:
            figure.savefig(temporary)
    finally:
        plt.close(figure)


def _draw_box(axis, box, height, width, color, style, text) -> None:
    x, y, w, h = _to_xywh(box, height, width)
    axis.add_patch(
        patches.Rectangle((x, y), w, h, fill=False, edgecolor=color, linestyle=style, linewidth=1.5)
    )
    axis.text(x, y, text, color="white", fontsize=7, backgroundcolor=color, va="bottom")


def write_metrics_json(path: pathlib.Path, content: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(content, indent=2, sort_keys=False) + "\n")
