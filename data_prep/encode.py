"""One annotated image -> (serialized Example, report): the per-image work of a shard.

Decides the pixel frame (EXIF), checks the annotated size against the real image, clips
or drops bad boxes with a warning, and normalises boxes to [0, 1].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sagemaker_tfod.data_prep.annotations import Box, ImageAnnotation
from sagemaker_tfod.data_prep.errors import SKIP_HINT, DataPrepError
from sagemaker_tfod.data_prep.examples import ExampleBoxes, detection_example
from sagemaker_tfod.data_prep.images import prepare_image, read_header

# A size mismatch with the same aspect ratio (within this) means the image was resized
# after labelling: boxes are scaled. Anything else is an error.
_ASPECT_TOLERANCE = 0.01


@dataclass(frozen=True)
class ImageTask:
    """Everything a worker needs for one image."""

    source_id: int
    image_path: str
    name: str  # image path relative to the image folder, stored as image/filename
    annotation: ImageAnnotation
    class_ids: dict[str, int]


@dataclass
class ImageReport:
    """What happened to one image; aggregated into dataset.json."""

    name: str
    source: str
    source_id: int
    width: int = 0
    height: int = 0
    labels: list[int] = field(default_factory=list)
    box_sizes: list[tuple[float, float]] = field(default_factory=list)  # normalised w, h
    # normalised (ymin, xmin, ymax, xmax), for the anchor fit in dataset.json
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    change: str = ""
    skipped: str = ""  # reason, when the image was left out
    encoded_bytes: int = 0


def _scale_factors(
    annotation: ImageAnnotation, width: int, height: int, image_name: str
) -> tuple[float, float, str]:
    if annotation.width <= 0 or annotation.height <= 0:
        return 1.0, 1.0, ""
    if (annotation.width, annotation.height) == (width, height):
        return 1.0, 1.0, ""
    sx, sy = width / annotation.width, height / annotation.height
    if abs(sx / sy - 1.0) <= _ASPECT_TOLERANCE:
        return (
            sx,
            sy,
            (
                f"<size> {annotation.width}x{annotation.height} but the image is "
                f"{width}x{height}: boxes scaled by {sx:.4g}"
            ),
        )
    raise DataPrepError(
        f"{annotation.source}: <size> says {annotation.width}x{annotation.height} but "
        f"{image_name} is {width}x{height} (after EXIF orientation); fix <size> or label "
        "the image again"
    )


def clean_boxes(
    boxes: tuple[Box, ...],
    width: int,
    height: int,
    sx: float,
    sy: float,
    class_ids: dict[str, int],
) -> tuple[list[tuple[Box, int]], list[str]]:
    """Boxes scaled to the real image, clipped to it, with bad ones dropped; + warnings."""
    kept, warnings = [], []
    for number, box in enumerate(boxes, start=1):
        label = f"box {number} ({box.class_name})"
        class_id = class_ids.get(box.class_name)
        if class_id is None:
            warnings.append(f"{label} dropped: class not in the label map")
            continue
        x0, x1 = box.xmin * sx, box.xmax * sx
        y0, y1 = box.ymin * sy, box.ymax * sy
        if x1 <= x0 or y1 <= y0:
            warnings.append(
                f"{label} dropped: xmax <= xmin or ymax <= ymin "
                f"({box.xmin:g},{box.ymin:g},{box.xmax:g},{box.ymax:g})"
            )
            continue
        cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        if cx1 <= cx0 or cy1 <= cy0:
            warnings.append(f"{label} dropped: entirely outside the {width}x{height} image")
            continue
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            warnings.append(
                f"{label} clipped to the {width}x{height} image (was {x0:g},{y0:g},{x1:g},{y1:g})"
            )
        kept.append(
            (Box(box.class_name, cx0, cy0, cx1, cy1, box.difficult, box.truncated), class_id)
        )
    return kept, warnings


def encode_image(task: ImageTask) -> tuple[bytes, ImageReport]:
    """Serialized Example and report for one image; DataPrepError for a bad image."""
    annotation = task.annotation
    report = ImageReport(
        task.name, annotation.source, task.source_id, warnings=list(annotation.notes)
    )
    try:
        with open(task.image_path, "rb") as handle:
            data = handle.read()
    except OSError as error:
        raise DataPrepError(
            f"{task.image_path}: cannot read the image ({error.strerror}); add it or "
            f"remove its annotation{SKIP_HINT}"
        ) from None
    if not data:
        raise DataPrepError(f"{task.image_path}: empty file; re-export it or remove it{SKIP_HINT}")
    header = read_header(data)
    # labelImg, VoTT and CVAT draw on the EXIF-rotated view; but when <size> matches the
    # stored (unrotated) pixels of a 90-degree orientation, the boxes are in that frame.
    rotate = True
    if header is not None and header.orientation != 1:
        stored = (header.width, header.height)
        if (annotation.width, annotation.height) == stored != header.displayed_size:
            rotate = False
    prepared = prepare_image(data, task.image_path, rotate_exif=rotate, header=header)
    if prepared.change:
        report.change = prepared.change
    width, height = prepared.width, prepared.height
    sx, sy, note = _scale_factors(annotation, width, height, task.image_path)
    if note:
        report.warnings.append(note)
    kept, warnings = clean_boxes(annotation.boxes, width, height, sx, sy, task.class_ids)
    report.warnings.extend(warnings)
    boxes = ExampleBoxes(
        xmin=[box.xmin / width for box, _ in kept],
        ymin=[box.ymin / height for box, _ in kept],
        xmax=[box.xmax / width for box, _ in kept],
        ymax=[box.ymax / height for box, _ in kept],
        class_ids=[class_id for _, class_id in kept],
        class_names=[box.class_name for box, _ in kept],
        difficult=[box.difficult for box, _ in kept],
        truncated=[box.truncated for box, _ in kept],
    )
    example = detection_example(
        encoded=prepared.encoded,
        image_format=prepared.image_format,
        width=width,
        height=height,
        filename=task.name,
        source_id=task.source_id,
        sha256=hashlib.sha256(prepared.encoded).hexdigest(),
        boxes=boxes,
    )
    report.width, report.height = width, height
    report.labels = list(boxes.class_ids)
    report.box_sizes = [
        ((box.xmax - box.xmin) / width, (box.ymax - box.ymin) / height) for box, _ in kept
    ]
    report.boxes = list(zip(boxes.ymin, boxes.xmin, boxes.ymax, boxes.xmax, strict=True))
    report.encoded_bytes = len(prepared.encoded)
    return example, report
