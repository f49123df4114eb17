"""Annotation readers: Pascal VOC XML, our CSV, keras-retinanet CSV, COCO JSON -> one model.

Everything is looked up by tag or column name, never by position, and coordinates are
read as floats (several tools write `12.5`). XML is parsed with defusedxml, so an export
that declares entities is refused instead of expanded.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sagemaker_tfod.data_prep.errors import DataPrepError

CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class Box:
    """One object box in pixel coordinates of the annotated image."""

    class_name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: int = 0
    truncated: int = 0


@dataclass(frozen=True)
class ImageAnnotation:
    """The boxes of one image; `width`/`height` are what the annotation claims (0 = unknown)."""

    filename: str
    width: int
    height: int
    boxes: tuple[Box, ...]
    source: str
    path_hint: str = ""
    notes: tuple[str, ...] = field(default=())


# ------------------------------------------------------------------ Pascal VOC XML


def _text(element, tag: str) -> str | None:
    child = element.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _number(element, tag: str, source: str, what: str) -> float:
    text = _text(element, tag)
    if text is None or text == "":
        raise DataPrepError(
            f"{source}: {what} has no <{tag}>; every <bndbox> needs xmin, ymin, xmax and ymax"
        )
    value = _finite(text)
    if value is None:
        raise DataPrepError(
            f"{source}: {what} <{tag}> is {text!r}, not a number; fix the coordinate"
        )
    return value


def _finite(text: str) -> float | None:
    """The number in `text`, or None; 'nan' and 'inf' are not coordinates."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _flag(element, tag: str) -> int:
    text = _text(element, tag)
    try:
        return int(float(text)) if text else 0
    except ValueError:
        return 0


_PLAIN_DECLARATION = re.compile(
    rb"<\?xml[^>]*?encoding=[\"'](?:utf-?8|us-ascii|ascii|iso-8859-1|latin-?1)[\"']", re.I
)


def _parse_untrusted_xml(data: bytes):
    """Root element of XML from an untrusted export, never expanding entities.

    Entities can only be declared in a DTD (`<!DOCTYPE`). A file with no `<!` at all, in
    an encoding where that byte test is exact (UTF-8/ASCII/Latin-1, no NUL bytes), has
    none, so the C parser reads it (about 5x faster). Anything else goes through
    defusedxml, which refuses entity declarations and external references."""
    import xml.etree.ElementTree as fast_et

    import defusedxml.ElementTree as safe_et

    head = data[:200]
    declared = head.lstrip(b"\xef\xbb\xbf").startswith(b"<?xml") and b"encoding" in head
    plain = (
        b"<!" not in data
        and b"\x00" not in head
        and (not declared or _PLAIN_DECLARATION.match(head.lstrip(b"\xef\xbb\xbf")) is not None)
    )
    return fast_et.fromstring(data) if plain else safe_et.fromstring(data)


def parse_voc_xml(data: bytes, source: str) -> ImageAnnotation:
    """One Pascal VOC annotation (labelImg, VoTT's Pascal VOC export, CVAT)."""
    from xml.etree.ElementTree import ParseError

    from defusedxml import DefusedXmlException

    try:
        root = _parse_untrusted_xml(data)
    except DefusedXmlException as error:
        raise DataPrepError(
            f"{source}: refused: the XML declares entities or external references "
            f"({type(error).__name__}), which can expand without bound; export the "
            "annotation again without a DTD"
        ) from None
    except ParseError as error:
        raise DataPrepError(
            f"{source}: malformed XML ({error}); re-export it or delete it"
        ) from None
    if root.tag != "annotation":
        raise DataPrepError(
            f"{source}: root element is <{root.tag}>, not <annotation>; this is not a "
            "Pascal VOC file (move it out of the annotation folder)"
        )
    filename = _text(root, "filename") or ""
    path_hint = _text(root, "path") or ""
    if not filename and not path_hint:
        raise DataPrepError(f"{source}: no <filename> or <path>; add the image file name")
    size = root.find("size")
    width = height = 0
    if size is not None:
        try:
            width = int(float(_text(size, "width") or 0))
            height = int(float(_text(size, "height") or 0))
        except ValueError:
            width = height = 0
    boxes = []
    for index, obj in enumerate(root.findall("object"), start=1):
        # Names are kept exactly (no strip): 'cat ' vs 'cat' is reported, not merged.
        name_element = obj.find("name")
        name = name_element.text if name_element is not None and name_element.text else ""
        what = f"object {index}"
        if not name.strip():
            raise DataPrepError(f"{source}: {what} has no <name>; give every object a class")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise DataPrepError(f"{source}: {what} ({name}) has no <bndbox>; draw its box")
        boxes.append(
            Box(
                class_name=name,
                xmin=_number(bndbox, "xmin", source, what),
                ymin=_number(bndbox, "ymin", source, what),
                xmax=_number(bndbox, "xmax", source, what),
                ymax=_number(bndbox, "ymax", source, what),
                difficult=_flag(obj, "difficult"),
                truncated=_flag(obj, "truncated"),
            )
        )
    # Names are kept as written: VoTT's URL-encoded "folder%2Fimage.jpg" is decoded when
    # looking for the image (data_prep.matching), as its export may keep either form on disk.
    return ImageAnnotation(
        filename=filename,
        width=width,
        height=height,
        boxes=tuple(boxes),
        source=source,
        path_hint=path_hint,
    )


def read_voc_file(path: str) -> ImageAnnotation:
    """Parse one XML file (a top-level function so worker processes can run it)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise DataPrepError(f"{path}: cannot read ({error.strerror}); check permissions") from None
    return parse_voc_xml(data, path)


def find_files(root: Path | str, suffixes: Sequence[str]) -> list[str]:
    """Paths (str, sorted) of files under `root`, recursively, with one of `suffixes`
    (case-insensitive); hidden files and folders are ignored. Linked folders are followed,
    each real folder once (a link to a parent folder would otherwise loop). Strings, not
    Path objects: this runs over tens of thousands of files."""
    wanted = tuple(suffix.lower() for suffix in suffixes)
    found: list[str] = []
    pending = [os.fspath(root)]
    visited: set[tuple[int, int]] = set()
    while pending:
        directory = pending.pop()
        status = os.stat(directory)
        if (status.st_dev, status.st_ino) in visited:
            continue
        visited.add((status.st_dev, status.st_ino))
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    pending.append(entry.path)
                elif entry.name.lower().endswith(wanted):
                    found.append(entry.path)
    found.sort()
    return found


# ------------------------------------------------------------------ CSV formats


def _float_cell(value: str, source: str, column: str) -> float:
    number = _finite(value)
    if number is None:
        raise DataPrepError(f"{source}: {column} is {value!r}, not a number; fix the row")
    return number


def parse_csv(text: str, source: str) -> list[ImageAnnotation]:
    """Our CSV (`filename,width,height,class,xmin,ymin,xmax,ymax`, header required) or
    keras-retinanet CSV (`path,x1,y1,x2,y2,class`, no header). A row with an empty class
    is an image without objects. Rows are grouped by file name, in first-seen order."""
    rows = list(csv.reader(io.StringIO(text)))
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if not rows:
        raise DataPrepError(f"{source}: empty CSV; it needs at least one row")
    header = [cell.strip().lower() for cell in rows[0]]
    if tuple(header) == CSV_COLUMNS:
        return _group_rows(rows[1:], source, ours=True)
    if all(len(row) == 6 for row in rows):
        return _group_rows(rows, source, ours=False)
    raise DataPrepError(
        f"{source}: unknown CSV layout (first row {rows[0]}); expected the header "
        f"{','.join(CSV_COLUMNS)} or keras-retinanet rows path,x1,y1,x2,y2,class"
    )


def _group_rows(rows: list[list[str]], source: str, ours: bool) -> list[ImageAnnotation]:
    grouped: dict[str, dict] = {}
    for line_number, row in enumerate(rows, start=2 if ours else 1):
        where = f"{source} line {line_number}"
        if ours:
            if len(row) != len(CSV_COLUMNS):
                raise DataPrepError(f"{where}: {len(row)} columns, expected {len(CSV_COLUMNS)}")
            filename, width, height, name, *coords = (cell.strip() for cell in row)
            name = row[3]  # exact: near-duplicate spellings are reported, not merged
        else:
            filename, *coords, name = (cell.strip() for cell in row)
            name = row[5]
            width = height = "0"
        entry = grouped.setdefault(
            filename,
            {
                "width": int(_float_cell(width or "0", where, "width")),
                "height": int(_float_cell(height or "0", where, "height")),
                "boxes": [],
            },
        )
        if not name.strip():
            if any(coords):
                raise DataPrepError(f"{where}: coordinates without a class; add the class")
            continue
        xmin, ymin, xmax, ymax = (
            _float_cell(value, where, column)
            for value, column in zip(coords, ("xmin", "ymin", "xmax", "ymax"), strict=True)
        )
        entry["boxes"].append(Box(name, xmin, ymin, xmax, ymax))
    return [
        ImageAnnotation(
            filename=filename,
            width=entry["width"],
            height=entry["height"],
            boxes=tuple(entry["boxes"]),
            source=source,
        )
        for filename, entry in grouped.items()
    ]


def format_csv(annotations: Iterable[ImageAnnotation]) -> str:
    """Our CSV; an image without boxes becomes one row with an empty class."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in annotations:
        if not item.boxes:
            writer.writerow([item.filename, item.width, item.height, "", "", "", "", ""])
        for box in item.boxes:
            writer.writerow(
                [
                    item.filename,
                    item.width,
                    item.height,
                    box.class_name,
                    _fmt(box.xmin),
                    _fmt(box.ymin),
                    _fmt(box.xmax),
                    _fmt(box.ymax),
                ]
            )
    return out.getvalue()


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# ------------------------------------------------------------------ COCO JSON


def parse_coco_json(text: str, source: str) -> list[ImageAnnotation]:
    """COCO detection JSON (`images`, `annotations` with `bbox` [x, y, w, h], `categories`).

    Crowd regions (`iscrowd: 1`) are dropped with a note: they mark many objects at once.
    """
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataPrepError(f"{source}: malformed JSON ({error}); re-export it") from None
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise DataPrepError(f"{source}: no 'images' list; this is not a COCO detection file")
    categories = {}
    for number, category in enumerate(document.get("categories", []), start=1):
        where = f"{source} categories[{number - 1}]"
        categories[_coco_field(category, "id", where)] = str(_coco_field(category, "name", where))
    images: dict[object, dict] = {}
    seen_names: dict[str, object] = {}
    for number, image in enumerate(document["images"]):
        where = f"{source} images[{number}]"
        image_id = _coco_field(image, "id", where)
        name = str(_coco_field(image, "file_name", where))
        if name in seen_names:
            raise DataPrepError(
                f"{source}: image '{name}' is listed twice (ids {seen_names[name]} and "
                f"{image_id}); merge the two entries"
            )
        seen_names[name] = image_id
        images[image_id] = {"image": image, "boxes": [], "notes": []}
    for number, annotation in enumerate(document.get("annotations", [])):
        where = f"{source} annotations[{number}]"
        entry = images.get(_coco_field(annotation, "image_id", where))
        if entry is None:
            raise DataPrepError(
                f"{where}: image_id {annotation['image_id']} is not in "
                "'images'; fix or remove the annotation"
            )
        if _coco_field(annotation, "category_id", where) not in categories:
            raise DataPrepError(
                f"{where}: category_id {annotation['category_id']} is not "
                "in 'categories'; add the category"
            )
        if annotation.get("iscrowd"):
            entry["notes"].append(f"crowd annotation {annotation.get('id')} dropped")
            continue
        bbox = _coco_field(annotation, "bbox", where)
        numbers = [_finite(str(v)) for v in bbox] if isinstance(bbox, list) else []
        if len(numbers) != 4 or None in numbers:
            raise DataPrepError(
                f"{where}: bbox {bbox!r} is not [x, y, width, height] in numbers; fix it"
            )
        x, y, w, h = numbers
        entry["boxes"].append(Box(categories[annotation["category_id"]], x, y, x + w, y + h))
    return [
        ImageAnnotation(
            filename=str(entry["image"]["file_name"]),
            width=_coco_size(entry["image"], "width", source),
            height=_coco_size(entry["image"], "height", source),
            boxes=tuple(entry["boxes"]),
            source=source,
            notes=tuple(entry["notes"]),
        )
        for entry in images.values()
    ]


def _coco_field(element: object, key: str, where: str):
    if not isinstance(element, dict) or key not in element:
        raise DataPrepError(f"{where}: no '{key}'; this is not a COCO detection file, re-export it")
    return element[key]


def _coco_size(image: dict, key: str, source: str) -> int:
    value = _finite(str(image.get(key) or 0))
    if value is None:
        raise DataPrepError(
            f"{source}: image '{image['file_name']}' {key} is {image[key]!r}; fix or remove it"
        )
    return int(value)
