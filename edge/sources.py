"""Turn command-line INPUTs (images, folders, video files, camera indices) into frames.

Images need only Pillow; videos and cameras need `opencv-python-headless`, imported when one
is opened.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from sagemaker_tfod.edge.errors import EdgeError
from sagemaker_tfod.edge.preprocess import DEFAULT_MAX_PIXELS, check_image_size, load_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}


@dataclass(frozen=True)
class Source:
    """One input: an image file, a video file or a camera."""

    kind: str  # "image", "video", "camera"
    location: str  # path, or camera index as text

    @property
    def name(self) -> str:
        return (
            f"camera{self.location}" if self.kind == "camera" else pathlib.Path(self.location).stem
        )


def expand_inputs(inputs: list[str]) -> list[Source]:
    """Classify every INPUT; folders expand to the images and videos inside them (sorted)."""
    sources: list[Source] = []
    for text in inputs:
        if text.isdigit() and not pathlib.Path(text).exists():
            sources.append(Source("camera", text))
            continue
        path = pathlib.Path(text)
        if path.is_dir():
            found = [
                p
                for p in sorted(path.rglob("*"))
                if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            ]
            if not found:
                raise EdgeError(f"{path}: no images or videos inside; pass files or another folder")
            sources.extend(expand_inputs([str(p) for p in found]))
        elif not path.is_file():
            raise EdgeError(
                f"{path}: not found; pass image or video files, folders or a camera index"
            )
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(Source("video", str(path)))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            sources.append(Source("image", str(path)))
        else:
            raise EdgeError(
                f"{path}: unknown file type '{path.suffix}'; pass images ("
                + ", ".join(sorted(IMAGE_SUFFIXES))
                + ") or videos ("
                + ", ".join(sorted(VIDEO_SUFFIXES))
                + ")"
            )
    return sources


def check_image_sizes(sources: list[Source], max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """Refuse any image input above `max_pixels` from its header, before a model is loaded."""
    for source in sources:
        if source.kind == "image":
            try:
                check_image_size(source.location, max_pixels)
            except OSError as error:
                raise EdgeError(f"{source.location}: not a readable image ({error})") from None


def read_image(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    try:
        return load_rgb(source.location, max_pixels)
    except OSError as error:
        raise EdgeError(f"{source.location}: not a readable image ({error})") from None


def open_capture(source: Source):
    """An OpenCV VideoCapture for a video file or camera index (needs opencv-python-headless)."""
    try:
        import cv2
    except ImportError:
        raise EdgeError(
            f"{source.location}: videos and cameras need OpenCV; pip install opencv-python-headless"
        ) from None
    capture = cv2.VideoCapture(int(source.location) if source.kind == "camera" else source.location)
    if not capture.isOpened():
        raise EdgeError(f"{source.location}: cannot open this {source.kind}")
    return capture


def frames(capture, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames from an open capture until it ends or `max_frames` were read."""
    import cv2

    count = 0
    while max_frames is None or count < max_frames:
        ok, bgr = capture.read()
        if not ok:
            return
        count += 1
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
