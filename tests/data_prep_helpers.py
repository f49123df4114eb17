"""Small builders for data_prep tests: images with known content and VOC XML around them."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
RACCOON = REPO.parent / "shared" / "datasets" / "raccoon"
OBJECT_COLOUR = (230, 20, 20)
BACKGROUND = (40, 120, 40)


def image_bytes(
    width: int,
    height: int,
    boxes: tuple[tuple[float, float, float, float], ...] = (),
    fmt: str = "JPEG",
    mode: str = "RGB",
    orientation: int | None = None,
) -> bytes:
    """An image of `width` x `height` with red rectangles at `boxes` (pixels)."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=OBJECT_COLOUR)
    if mode != "RGB":
        image = image.convert(mode)
    out = io.BytesIO()
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def voc_xml(
    filename: str,
    width: int | None,
    height: int | None,
    objects: list[tuple[str, float, float, float, float]],
    path: str | None = None,
) -> str:
    size = (
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        if width is not None
        else ""
    )
    body = "".join(
        f"<object><name>{escape(name)}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, x0, y0, x1, y1 in objects
    )
    path_element = f"<path>{escape(path)}</path>" if path else ""
    return (
        f"<annotation><folder>images</folder><filename>{escape(filename)}</filename>"
        f"{path_element}{size}{body}</annotation>"
    )


def add_item(
    root: Path,
    stem: str,
    width: int = 64,
    height: int = 48,
    objects: list[tuple[str, float, float, float, float]] | None = None,
    **image_kwargs,
) -> tuple[Path, Path]:
    """Write root/images/STEM.jpg and root/annotations/STEM.xml; returns both paths."""
    objects = [("cat", 8, 8, 32, 30)] if objects is None else objects
    fmt = image_kwargs.get("fmt", "JPEG")
    suffix = ".png" if fmt == "PNG" else ".jpg"
    image_path = root / "images" / f"{stem}{suffix}"
    xml_path = root / "annotations" / f"{stem}.xml"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    boxes = tuple(tuple(o[1:]) for o in objects)
    image_path.write_bytes(image_bytes(width, height, boxes, **image_kwargs))
    xml_path.write_text(voc_xml(image_path.name, width, height, objects))
    return image_path, xml_path


def small_voc(root: Path, count: int = 4) -> Path:
    """A valid VOC folder with two classes (cat, dog) and one image without objects."""
    for index in range(count):
        name = "cat" if index % 2 else "dog"
        add_item(root, f"img-{index}", objects=[(name, 4 + index, 6, 40, 30 + index)])
    add_item(root, "empty", objects=[])
    return root


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m data_prep ARGS` in a subprocess, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "data_prep", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


def leftovers(parent: Path) -> list[str]:
    """Names in `parent` other than the inputs: temporary or half-written outputs."""
    return sorted(
        p.name for p in parent.iterdir() if p.name not in ("voc", "images", "annotations")
    )
