"""A small synthetic Pascal VOC dataset that a tiny detector learns in minutes.

Each image is a smooth random texture in muted colours with 0-3 non-overlapping shapes.
Each class has its own shape AND colour family (circle: red, square: blue, triangle:
yellow), sizes are 15-45% of the image side, and every 10th image has no objects
(a negative). The same seed gives the same files.

With `aspect_ratio` R > 1 the shapes are stretched instead: each box is R:1 (wide) or 1:R
(tall) at random, its long side 45-90% of the image side (ellipses, bars and stretched
triangles), the case the default anchors (aspect ratios 0.5 to 2) do not cover.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

CLASSES = ("circle", "square", "triangle")
DEFAULT_IMAGES = 200
DEFAULT_SIZE = 256
_NEGATIVE_EVERY = 10  # every 10th image has no objects
_COLOURS = {
    "circle": ((200, 30, 30), (255, 90, 70)),
    "square": ((20, 40, 200), (80, 120, 255)),
    "triangle": ((220, 200, 0), (255, 240, 80)),
}


@dataclass(frozen=True)
class SynthBox:
    class_name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int


def _texture(rng: random.Random, size: int):
    import numpy as np
    from PIL import Image

    generator = np.random.default_rng(rng.randrange(2**32))
    base = generator.uniform(70, 170, size=3)
    coarse = generator.normal(0, 22, size=(8, 8, 3))
    fine = generator.normal(0, 8, size=(size, size, 3))
    smooth = np.stack(
        [
            np.asarray(
                Image.fromarray(coarse[..., c].astype(np.float32)).resize(
                    (size, size), Image.BILINEAR
                )
            )
            for c in range(3)
        ],
        axis=-1,
    )
    # Desaturate the background so the shapes' strong colours stand out.
    grey = (base + smooth + fine).mean(axis=-1, keepdims=True)
    pixels = 0.6 * grey + 0.4 * (base + smooth + fine)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _place(
    rng: random.Random, size: int, taken: list[SynthBox], name: str, aspect_ratio: float = 1.0
) -> SynthBox | None:
    for _ in range(30):
        if aspect_ratio == 1.0:
            width = height = int(rng.uniform(0.15, 0.45) * size)
        else:
            long_side = int(rng.uniform(0.45, 0.9) * size)
            short_side = max(4, round(long_side / aspect_ratio))
            width, height = (
                (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)
            )
        x0 = rng.randrange(0, size - width)
        y0 = rng.randrange(0, size - height)
        box = SynthBox(name, x0, y0, x0 + width, y0 + height)
        gap = 2
        if all(
            box.xmin >= t.xmax + gap
            or box.xmax + gap <= t.xmin
            or box.ymin >= t.ymax + gap
            or box.ymax + gap <= t.ymin
            for t in taken
        ):
            return box
    return None


def _draw(image, box: SynthBox, rng: random.Random) -> None:
    from PIL import ImageDraw

    low, high = _COLOURS[box.class_name]
    colour = tuple(rng.randint(a, b) for a, b in zip(low, high, strict=True))
    draw = ImageDraw.Draw(image)
    # PIL's shapes include the end pixel: draw up to xmax-1 so the box is tight.
    corners = (box.xmin, box.ymin, box.xmax - 1, box.ymax - 1)
    if box.class_name == "circle":
        draw.ellipse(corners, fill=colour)
    elif box.class_name == "square":
        draw.rectangle(corners, fill=colour)
    else:
        draw.polygon(
            [
                ((box.xmin + box.xmax - 1) / 2, box.ymin),
                (box.xmin, box.ymax - 1),
                (box.xmax - 1, box.ymax - 1),
            ],
            fill=colour,
        )


def voc_xml(filename: str, width: int, height: int, boxes: list[SynthBox]) -> str:
    """Pascal VOC XML as labelImg writes it."""
    objects = "".join(
        f"\t<object>\n\t\t<name>{escape(b.class_name)}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{b.xmin}</xmin>\n\t\t\t<ymin>{b.ymin}</ymin>\n"
        f"\t\t\t<xmax>{b.xmax}</xmax>\n\t\t\t<ymax>{b.ymax}</ymax>\n\t\t</bndbox>\n"
        "\t</object>\n"
        for b in boxes
    )
    return (
        f"<annotation>\n\t<folder>images</folder>\n\t<filename>{escape(filename)}</filename>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n"
        f"\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n{objects}</annotation>\n"
    )


def write_synthetic_voc(
    out_dir: Path | str,
    num_images: int = DEFAULT_IMAGES,
    image_size: int = DEFAULT_SIZE,
    seed: int = 0,
    overwrite: bool = False,
    aspect_ratio: float = 1.0,
) -> dict[str, int]:
    """Write `out_dir/images/synth-NNNN.jpg` and `out_dir/annotations/synth-NNNN.xml`.

    `out_dir` must be new or empty unless `overwrite` (then it is replaced); it appears
    complete or not at all.

    Returns counts: images, boxes, negative_images and boxes per class. Deterministic for
    a given seed. `image_size` >= 32; `num_images` >= 1; `aspect_ratio` >= 1 (1: the shapes
    set, R > 1: boxes of R:1 and 1:R).
    """
    from sagemaker_tfod.data_prep.errors import DataPrepError

    if num_images < 1:
        raise DataPrepError(f"--num-images {num_images}: use 1 or more")
    if image_size < 32:
        raise DataPrepError(f"--image-size {image_size}: use 32 or more")
    if not aspect_ratio >= 1.0:  # also refuses nan
        raise DataPrepError(f"--aspect-ratio {aspect_ratio}: use 1 or more (6 means 6:1 and 1:6)")
    from sagemaker_tfod.data_prep.files import atomic_directory

    with atomic_directory(Path(out_dir), overwrite=overwrite) as staging:
        return _write_into(staging, num_images, image_size, seed, aspect_ratio)


def _write_into(
    out: Path, num_images: int, image_size: int, seed: int, aspect_ratio: float
) -> dict[str, int]:
    images_dir, xml_dir = out / "images", out / "annotations"
    images_dir.mkdir()
    xml_dir.mkdir()
    rng = random.Random(seed)
    counts = {"images": 0, "boxes": 0, "negative_images": 0, **dict.fromkeys(CLASSES, 0)}
    for number in range(num_images):
        stem = f"synth-{number:04d}"
        image = _texture(rng, image_size)
        boxes: list[SynthBox] = []
        # Every 10th image is a negative; the first images cycle through the classes.
        if number % _NEGATIVE_EVERY != _NEGATIVE_EVERY - 1:
            wanted = rng.randint(1, 3)
            names = [CLASSES[number % len(CLASSES)]] + [
                rng.choice(CLASSES) for _ in range(wanted - 1)
            ]
            for name in names:
                box = _place(rng, image_size, boxes, name, aspect_ratio)
                if box is not None:
                    boxes.append(box)
                    _draw(image, box, rng)
        image.save(images_dir / f"{stem}.jpg", format="JPEG", quality=92)
        (xml_dir / f"{stem}.xml").write_text(
            voc_xml(f"{stem}.jpg", image_size, image_size, boxes), encoding="utf-8"
        )
        counts["images"] += 1
        counts["boxes"] += len(boxes)
        counts["negative_images"] += not boxes
        for box in boxes:
            counts[box.class_name] += 1
    return counts
