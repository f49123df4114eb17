"""Draw detections on an image (Pillow only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sagemaker_tfod.edge.detect import Detection, label_name

_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180))


def colour(label_index: int) -> tuple[int, int, int]:
    return _COLOURS[label_index % len(_COLOURS)]


def draw_detections(
    image: np.ndarray, detections: Sequence[Detection], labels: Sequence[str]
) -> np.ndarray:
    """A copy of RGB `image` with each detection's box and "label score" drawn on it."""
    canvas = Image.fromarray(image).copy()
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    line = max(2, round(min(canvas.size) / 200))
    for detection in detections:
        xmin, ymin, xmax, ymax = detection.box
        rgb = colour(detection.label_index)
        draw.rectangle([xmin, ymin, xmax, ymax], outline=rgb, width=line)
        text = f"{label_name(list(labels), detection.label_index)} {detection.score:.2f}"
        left, top, right, bottom = draw.textbbox((xmin, ymin), text, font=font)
        top_edge = max(0, ymin - (bottom - top) - 2)
        draw.rectangle(
            [xmin, top_edge, xmin + (right - left) + 4, top_edge + (bottom - top) + 2], fill=rgb
        )
        draw.text((xmin + 2, top_edge), text, fill="white", font=font)
    return np.asarray(canvas)
