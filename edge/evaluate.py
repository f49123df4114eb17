"""COCO AP, AP50 and per-class AP of any export, on a channel's shards or a Pascal VOC folder.

Ground truth comes from the eval TFRecords (read without TensorFlow) or straight from labelImg
XML; `pycocotools` does the scoring (imported here only, so detect and benchmark never need it).
"""

from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.files import atomic_output_path
from sagemaker_tfod.edge.detect import Detector
from sagemaker_tfod.edge.errors import EdgeError
from sagemaker_tfod.edge.preprocess import DEFAULT_MAX_PIXELS, load_rgb
from sagemaker_tfod.edge.records import parse_example, read_records

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Sample:
    """One image and its true boxes (xmin, ymin, xmax, ymax pixels; 0-based label index)."""

    name: str
    image: np.ndarray
    boxes: np.ndarray  # [N, 4]
    label_indices: tuple[int, ...]


def samples_from_shards(shards: Sequence[str | pathlib.Path]) -> Iterator[Sample]:
    """Samples from TFRecord shards with the channel schema (label-map ids start at 1)."""
    for shard in shards:
        for number, record in enumerate(read_records(shard)):
            features = parse_example(record)
            with Image.open(io.BytesIO(features[schema.IMAGE_ENCODED][0])) as encoded:
                image = np.asarray(encoded.convert("RGB"), dtype=np.uint8)
            height, width = image.shape[:2]
            boxes = np.stack(
                [
                    np.asarray(features.get(schema.BBOX_XMIN, []), dtype=np.float32) * width,
                    np.asarray(features.get(schema.BBOX_YMIN, []), dtype=np.float32) * height,
                    np.asarray(features.get(schema.BBOX_XMAX, []), dtype=np.float32) * width,
                    np.asarray(features.get(schema.BBOX_YMAX, []), dtype=np.float32) * height,
                ],
                axis=-1,
            ).reshape(-1, 4)
            labels = tuple(int(v) - 1 for v in features.get(schema.CLASS_LABEL, []))
            yield Sample(f"{pathlib.Path(shard).name}#{number}", image, boxes, labels)


def _find_image(xml_path: pathlib.Path, filename: str, root: pathlib.Path) -> pathlib.Path:
    stem_matches = [xml_path.with_suffix(suffix) for suffix in IMAGE_SUFFIXES]
    candidates = [
        xml_path.parent / filename,
        root / filename,
        root / "images" / filename,
        root / "JPEGImages" / filename,
        xml_path.parent.parent / "images" / filename,
        xml_path.parent.parent / "JPEGImages" / filename,
        *stem_matches,
    ]
    for candidate in candidates:
        if filename and candidate.is_file():
            return candidate
    found = list(root.rglob(filename)) if filename else []
    if found:
        return found[0]
    raise EdgeError(f"{xml_path}: image '{filename}' not found beside it or under {root}")


def samples_from_voc(
    folder: pathlib.Path, labels: Sequence[str], max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Sample]:
    """Samples from a folder of labelImg / Pascal VOC XML files and their images."""
    from defusedxml import ElementTree  # evaluate-only dependency, safe against XML attacks

    index = {name: i for i, name in enumerate(labels)}
    xml_files = sorted(folder.rglob("*.xml"))
    if not xml_files:
        raise EdgeError(f"{folder}: no .xml annotation files; pass a channel or a VOC folder")
    for xml_path in xml_files:
        try:
            root = ElementTree.parse(xml_path).getroot()
        except ElementTree.ParseError as error:
            raise EdgeError(f"{xml_path}: not valid XML ({error}); fix or remove it") from None
        image = load_rgb(
            str(_find_image(xml_path, root.findtext("filename", ""), folder)), max_pixels
        )
        boxes, label_indices = [], []
        for item in root.iter("object"):
            name = (item.findtext("name") or "").strip()
            if name not in index:
                raise EdgeError(
                    f"{xml_path}: class '{name}' is not in labels.txt {list(labels)}; "
                    "evaluate with the labels.txt the model was trained with"
                )
            box = item.find("bndbox")
            boxes.append([float(box.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax")])
            label_indices.append(index[name])
        yield Sample(
            xml_path.stem,
            image,
            np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            tuple(label_indices),
        )


def channel_shards(folder: pathlib.Path, split: str = schema.EVAL_SPLIT) -> list[pathlib.Path]:
    return sorted(folder.glob(schema.shard_glob(split)))


def samples_from_path(
    path: pathlib.Path, labels: Sequence[str] | None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[Sample]:
    """A channel folder (its eval shards), a single shard, or a VOC folder."""
    if path.is_file() and path.name.endswith(schema.SHARD_SUFFIX):
        return samples_from_shards([path])
    if not path.is_dir():
        raise EdgeError(f"{path}: not found; pass a training channel or a Pascal VOC folder")
    shards = channel_shards(path)
    if shards:
        return samples_from_shards(shards)
    if channel_shards(path, schema.TRAIN_SPLIT):
        raise EdgeError(
            f"{path}: a channel without eval shards; rebuild it with an eval split "
            "or pass a Pascal VOC folder"
        )
    if labels is None:
        raise EdgeError(f"{path}: a VOC folder needs the class names; pass --labels labels.txt")
    return samples_from_voc(path, labels, max_pixels)


def coco_scores(
    samples_and_detections: Iterable[tuple[Sample, list]], num_classes: int
) -> dict[str, object]:
    """COCO AP, AP50, AP75 and per-class AP (index -> AP) with pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for image_id, (sample, detections) in enumerate(samples_and_detections, start=1):
        height, width = sample.image.shape[:2]
        images.append({"id": image_id, "height": height, "width": width})
        for box, label in zip(sample.boxes, sample.label_indices, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": label + 1,
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for detection in detections:
            xmin, ymin, xmax, ymax = detection.box
            results.append(
                {
                    "image_id": image_id,
                    "category_id": detection.label_index + 1,
                    "bbox": [xmin, ymin, xmax - xmin, ymax - ymin],
                    "score": detection.score,
                }
            )
    if not images:
        raise EdgeError("no images to evaluate on; check the data path")
    truth = COCO()
    truth.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": str(i)} for i in range(num_classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        if not results or not annotations:
            return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "per_class_AP": {}, "images": len(images)}
        predicted = truth.loadRes(results)
        evaluator = COCOeval(truth, predicted, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # precision: [IoU thresholds, recall points, classes, area ranges, max detections]
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, category in enumerate(evaluator.params.catIds):
        values = precision[:, :, k]
        values = values[values > -1]
        if values.size:
            per_class[category - 1] = round(float(values.mean()), 4)
    stats = evaluator.stats
    return {
        "AP": round(float(max(stats[0], 0.0)), 4),
        "AP50": round(float(max(stats[1], 0.0)), 4),
        "AP75": round(float(max(stats[2], 0.0)), 4),
        "per_class_AP": per_class,
        "images": len(images),
    }


def evaluate(
    detector: Detector, samples: Iterable[Sample], num_classes: int, limit: int | None = None
) -> dict[str, object]:
    """Run `detector` on every sample (progress in the log) and score it."""
    pairs = []
    started = time.monotonic()
    for number, sample in enumerate(samples, start=1):
        pairs.append((sample, detector.detect(sample.image)))
        if number % 50 == 0:
            rate = number / (time.monotonic() - started)
            log.info("evaluated %d images (%.1f images/s)", number, rate)
        if limit is not None and number >= limit:
            break
    scores = coco_scores(pairs, num_classes)
    scores["seconds"] = round(time.monotonic() - started, 1)
    return scores


def write_per_class_plot(scores: dict, labels: Sequence[str], path: pathlib.Path) -> None:
    """A per-class AP bar chart as a PNG (Pillow only, so it works on a Pi without matplotlib)."""
    from PIL import ImageDraw

    per_class = scores.get("per_class_AP", {})
    rows = [(labels[i] if i < len(labels) else str(i), per_class.get(i, 0.0)) for i in per_class]
    width, row_height, label_width = 520, 24, 160
    image = Image.new("RGB", (width, 40 + row_height * max(1, len(rows))), "white")
    draw = ImageDraw.Draw(image)
    draw.text((8, 8), f"AP {scores['AP']:.3f}  AP50 {scores['AP50']:.3f}", fill="black")
    for row, (name, value) in enumerate(rows):
        top = 34 + row * row_height
        draw.text((8, top + 4), name[:24], fill="black")
        bar = int((width - label_width - 60) * value)
        draw.rectangle([label_width, top + 2, label_width + bar, top + row_height - 4], fill="#3a7")
        draw.text((label_width + bar + 6, top + 4), f"{value:.3f}", fill="black")
    with atomic_output_path(path) as temporary:
        image.save(temporary, format="PNG")
