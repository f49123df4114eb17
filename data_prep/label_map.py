"""Read and write TF Object Detection API label maps (`label_map.pbtxt`) and `labels.txt`.

Ids start at 1 (0 is the background class in both the old API and Model Garden).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sagemaker_tfod.data_prep.errors import DataPrepError

_ITEM_RE = re.compile(r"item\s*\{(.*?)\}", re.DOTALL)
_ID_RE = re.compile(r"\bid\s*:\s*(\d+)")
_NAME_RE = re.compile(r"\bname\s*:\s*[\"']((?:[^\"'\\]|\\.)*)[\"']")
_DISPLAY_NAME_RE = re.compile(r"\bdisplay_name\s*:\s*[\"']((?:[^\"'\\]|\\.)*)[\"']")


class LabelMapError(DataPrepError):
    """A label map that cannot be used; the message says which and how to fix it."""


def format_label_map(class_names: Sequence[str]) -> str:
    """Label map text for `class_names`, ids 1..N in the given order."""
    items = []
    for class_id, name in enumerate(class_names, start=1):
        escaped = name.replace("\\", "\\\\").replace("'", "\\'")
        items.append(f"item {{\n  id: {class_id}\n  name: '{escaped}'\n}}\n")
    return "\n".join(items)


def parse_label_map(text: str, source: str = "label_map.pbtxt") -> dict[int, str]:
    """Map id -> class name from label map text; `source` names the file in errors."""
    label_map: dict[int, str] = {}
    for match in _ITEM_RE.finditer(text):
        body = match.group(1)
        id_match = _ID_RE.search(body)
        # `name` is what annotations use (the TF OD API's default); `display_name` only
        # when an item has no `name`.
        name_match = _NAME_RE.search(body) or _DISPLAY_NAME_RE.search(body)
        if not id_match or not name_match:
            raise LabelMapError(
                f"{source}: an item lacks an 'id' or a 'name': {body.strip()!r}; "
                "give every item both, e.g. item {{ id: 1 name: 'cat' }}"
            )
        class_id = int(id_match.group(1))
        name = re.sub(r"\\(.)", r"\1", name_match.group(1))
        if class_id < 1:
            raise LabelMapError(f"{source}: id {class_id} for '{name}'; ids start at 1")
        if class_id in label_map:
            raise LabelMapError(
                f"{source}: id {class_id} is used twice ('{label_map[class_id]}' and "
                f"'{name}'); give each class its own id"
            )
        label_map[class_id] = name
    if not label_map:
        raise LabelMapError(f"{source}: no 'item {{ id: ... name: ... }}' entries found")
    return label_map


def format_labels_txt(label_map: dict[int, str]) -> str:
    """`labels.txt`: line i holds the name of id i+1 (the 0-based index TFLite uses)."""
    ids = sorted(label_map)
    if ids != list(range(1, len(ids) + 1)):
        raise LabelMapError(f"label map ids must be 1..N without gaps for labels.txt, got {ids}")
    return "".join(f"{label_map[i]}\n" for i in ids)
