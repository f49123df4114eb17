"""dataset.json: counts per class and split, box-size statistics, and what was skipped,
changed or warned about, from the per-image reports of a build (pure, no I/O)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.encode import ImageReport

log = logging.getLogger(__name__)

DATASET_FORMAT_VERSION = 1
_WARNINGS_LOGGED = 20


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 6)

    return {
        "min": round(ordered[0], 6),
        "p05": pick(0.05),
        "median": pick(0.5),
        "p95": pick(0.95),
        "max": round(ordered[-1], 6),
        "mean": round(sum(ordered) / len(ordered), 6),
    }


def anchor_fit_summary(
    boxes: Sequence[tuple], image_sizes: Sequence[tuple], image_size: int | None = None
) -> dict:
    """The fit of each preset's default anchors on the training boxes (data_prep.anchors), at
    each preset's input size or at `image_size`."""
    # numpy is imported here only: the rest of a build of plain JPEGs needs neither it nor PIL.
    import numpy as np

    from sagemaker_tfod.data_prep.anchors import AUTO_FIT_BELOW, MATCH_THRESHOLD, preset_fits

    normalised = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    return {
        "note": (
            "default anchors of each preset on the train boxes at the input size: share of "
            f"boxes with an anchor at IoU >= {MATCH_THRESHOLD} (best possible recall) and mean "
            "best IoU; training with anchors=auto fits anchors when the recall is low"
        ),
        "iou_threshold": MATCH_THRESHOLD,
        "auto_fit_below": AUTO_FIT_BELOW,
        "presets": preset_fits(normalised, sizes, image_size),
    }


def dataset_summary(
    reports: dict[str, list[ImageReport]],
    classes: Sequence[str],
    skipped: list[dict[str, str]],
    unannotated: list[str],
    settings: dict,
    shard_counts: dict[str, int],
) -> dict:
    """The content of dataset.json."""
    splits, all_w, all_h, warnings, changed = {}, [], [], [], []
    train_boxes, train_image_sizes = [], []
    skipped = list(skipped)
    per_class: dict[str, dict[str, int]] = {name: {} for name in classes}
    total_images = total_boxes = total_negative = 0
    for split, split_reports in reports.items():
        kept = [r for r in split_reports if not r.skipped]
        boxes = Counter()
        images_with = Counter()
        for report in kept:
            boxes.update(report.labels)
            images_with.update(set(report.labels))
            all_w.extend(w for w, _ in report.box_sizes)
            all_h.extend(h for _, h in report.box_sizes)
            if split == schema.TRAIN_SPLIT:
                train_boxes.extend(report.boxes)
                train_image_sizes.extend([(report.height, report.width)] * len(report.boxes))
            warnings.extend({"file": report.source, "message": m} for m in report.warnings)
            if report.change:
                changed.append({"file": report.name, "change": report.change})
        skipped.extend({"file": r.name, "reason": r.skipped} for r in split_reports if r.skipped)
        negatives = sum(1 for r in kept if not r.labels)
        splits[split] = {
            "images": len(kept),
            "boxes": sum(boxes.values()),
            "negative_images": negatives,
            "shards": shard_counts.get(split, 0),
            "boxes_per_class": {classes[i - 1]: boxes[i] for i in range(1, len(classes) + 1)},
            "images_per_class": {
                classes[i - 1]: images_with[i] for i in range(1, len(classes) + 1)
            },
        }
        for i, name in enumerate(classes, start=1):
            per_class[name][split] = boxes[i]
        total_images += len(kept)
        total_boxes += sum(boxes.values())
        total_negative += negatives
    areas = [w * h for w, h in zip(all_w, all_h, strict=True)]
    return {
        "format_version": DATASET_FORMAT_VERSION,
        "images": total_images,
        "boxes": total_boxes,
        "negative_images": total_negative,
        "classes": list(classes),
        "boxes_per_class": per_class,
        "splits": splits,
        "box_size": {
            "note": "fractions of the image width, height and area",
            "width": _summary(all_w),
            "height": _summary(all_h),
            "area": _summary(areas),
        },
        "anchor_fit": anchor_fit_summary(train_boxes, train_image_sizes),
        "settings": settings,
        "skipped": skipped,
        "warnings": warnings,
        "changed_images": changed,
        "unannotated_images": unannotated,
    }


def log_findings(summary: dict) -> None:
    """Log the first warnings and skipped images (all of them are in dataset.json)."""
    for kind, items in (("warning", summary["warnings"]), ("skipped", summary["skipped"])):
        for item in items[:_WARNINGS_LOGGED]:
            log.warning("%s: %s", item["file"], item.get("message") or item.get("reason"))
        if len(items) > _WARNINGS_LOGGED:
            log.warning(
                "... %d more %s entries in %s",
                len(items) - _WARNINGS_LOGGED,
                kind,
                schema.DATASET_JSON,
            )
    fit = summary.get("anchor_fit") or {}
    poor = [
        f"{name} {preset['best_possible_recall']:.2f} at {preset['input_size']} px"
        for name, preset in fit.get("presets", {}).items()
        if preset["boxes"] and preset["best_possible_recall"] < fit["auto_fit_below"]
    ]
    if poor:
        log.warning(
            "default anchors fit the training boxes poorly (share of boxes with an anchor at "
            "IoU >= %s: %s); training with anchors=auto (the default) fits anchors to them",
            fit["iou_threshold"],
            ", ".join(poor),
        )
    if summary["unannotated_images"]:
        log.warning(
            "%d image(s) have no annotation and were not used (listed under "
            "'unannotated_images' in %s)",
            len(summary["unannotated_images"]),
            schema.DATASET_JSON,
        )
