"""labels.txt for a model: find it, read it, and check it against the model's class count."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.edge.errors import EdgeError

# Written beside the models by the training container (container/export_edge.py).
EXPORT_JSON = "export.json"


def read_labels(path: pathlib.Path | None, model: pathlib.Path) -> list[str]:
    """Class names from --labels, else labels.txt beside the model; [] if neither exists.

    When export.json sits beside the model, its class count must match the file's lines.
    """
    if path is None:
        beside = (model if model.is_dir() else model.parent) / schema.LABELS_FILE
        if not beside.is_file() and model.is_dir():
            beside = model.parent / schema.LABELS_FILE
        if not beside.is_file():
            return []
        path = beside
    if not path.is_file():
        raise EdgeError(f"{path}: labels file not found; pass the labels.txt the model came with")
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    labels = [name for name in labels if name]
    check_label_count(labels, path, exported_class_count(model))
    return labels


def exported_class_count(model: pathlib.Path) -> int | None:
    """`num_classes` from the export.json next to `model` (a file or the saved_model folder)."""
    export_json = model.parent / EXPORT_JSON
    if not export_json.is_file():
        return None
    try:
        count = json.loads(export_json.read_text(encoding="utf-8")).get("num_classes")
    except (ValueError, AttributeError):
        return None  # not ours to validate; the labels are still checked at detection time
    return count if isinstance(count, int) else None


def check_label_count(labels: Sequence[str], path: pathlib.Path, expected: int | None) -> None:
    """Raise when labels.txt and the model disagree on how many classes there are."""
    if expected is not None and len(labels) != expected:
        raise EdgeError(
            f"{path}: {len(labels)} class names, but the model was trained on {expected} "
            "classes; pass the labels.txt written by the same training job"
        )


def check_label_index(labels: Sequence[str], path: pathlib.Path | str, index: int) -> None:
    """Raise when the model reports a class index that labels.txt has no line for."""
    if labels and not 0 <= index < len(labels):
        raise EdgeError(
            f"{path}: {len(labels)} class names, but the model reported class index {index}; "
            "pass the labels.txt written by the same training job"
        )
