"""Turn command-line INPUTs (images, folders, video files, cameras) into frames.

Images need only Pillow; video files and USB cameras (`0`, `1`, ...) need
`opencv-python-headless`; the Raspberry Pi camera module (`picam`, `picam:1`) needs picamera2,
which Raspberry Pi OS installs with apt, because OpenCV cannot open a libcamera camera. Each is
imported only when such an input is opened.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from sagemaker_tfod.edge.errors import EdgeError
from sagemaker_tfod.edge.preprocess import DEFAULT_MAX_PIXELS, check_image_size, load_rgb

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm"}
# `picam` is the first camera module, `picam:1` the second (Raspberry Pi 5 has two ports).
PI_CAMERA_INPUT = re.compile(r"picam(?::(\d+))?")
PI_CAMERA_SIZE = (640, 480)  # width, height of the frames picamera2 delivers
PI_CAMERA_FPS = 30.0


@dataclass(frozen=True)
class Source:
    """One input: an image file, a video file or a camera."""

    kind: str  # "image", "video", "camera" (USB, via OpenCV), "picamera" (camera module)
    location: str  # path, camera index as text, or `picam[:N]`

    @property
    def name(self) -> str:
        if self.kind == "camera":
            return f"camera{self.location}"
        if self.kind == "picamera":
            return self.location.replace(":", "")
        return pathlib.Path(self.location).stem

    @property
    def is_camera(self) -> bool:
        return self.kind in ("camera", "picamera")


def expand_inputs(inputs: list[str]) -> list[Source]:
    """Classify every INPUT; folders expand to the images and videos inside them (sorted)."""
    sources: list[Source] = []
    for text in inputs:
        if text.isdigit() and not pathlib.Path(text).exists():
            sources.append(Source("camera", text))
            continue
        if PI_CAMERA_INPUT.fullmatch(text) and not pathlib.Path(text).exists():
            sources.append(Source("picamera", text))
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
                f"{path}: not found; pass image or video files, folders, a camera index "
                "(0, 1, ...) or picam for the Raspberry Pi camera module"
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


class FrameSource(Protocol):
    """Where video frames come from: a video file, a USB camera or the Pi camera module."""

    @property
    def fps(self) -> float:
        """Frames per second the source delivers (0 when it does not say)."""
        ...

    def read(self) -> np.ndarray | None:
        """The next frame as RGB uint8 [H, W, 3], or None when the source has ended."""
        ...

    def close(self) -> None: ...


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


class OpenCvFrames:
    """Frames of a video file or USB camera through an OpenCV VideoCapture."""

    def __init__(self, capture) -> None:
        import cv2

        self._cv2 = cv2
        self._capture = capture

    @property
    def fps(self) -> float:
        return float(self._capture.get(self._cv2.CAP_PROP_FPS) or 0.0)

    def read(self) -> np.ndarray | None:
        ok, bgr = self._capture.read()
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB) if ok else None

    def close(self) -> None:
        self._capture.release()


class PiCameraFrames:
    """Frames of a Raspberry Pi camera module through picamera2 (libcamera)."""

    def __init__(self, camera, fps: float) -> None:
        self._camera = camera
        self._fps = fps

    @property
    def fps(self) -> float:
        return self._fps

    def read(self) -> np.ndarray:
        # picamera2's "RGB888" is named by libcamera's packed-word order: its bytes are B, G, R
        # (OpenCV's order), so the channels are reversed here; a 4th (X) channel is dropped.
        pixels = self._camera.capture_array("main")
        return np.ascontiguousarray(pixels[..., 2::-1])

    def close(self) -> None:
        self._camera.close()  # stops it first


def open_pi_camera(
    source: Source, size: tuple[int, int] = PI_CAMERA_SIZE, fps: float = PI_CAMERA_FPS
) -> PiCameraFrames:
    """Start camera module N of `picam[:N]` at `size` (width, height) and `fps`."""
    try:
        from picamera2 import Picamera2
    except ImportError:
        raise EdgeError(
            f"{source.location}: the Raspberry Pi camera needs picamera2, which Raspberry Pi OS "
            "installs with apt (sudo apt install python3-picamera2); make the virtual "
            "environment with `python3 -m venv --system-site-packages` so it sees it"
        ) from None
    except ValueError as error:  # apt's simplejpeg is built for numpy 1, pip's numpy is 2
        raise EdgeError(
            f"{source.location}: picamera2 does not load with this numpy ({error}); install a "
            "simplejpeg built for it in the virtual environment: pip install simplejpeg"
        ) from None
    match = PI_CAMERA_INPUT.fullmatch(source.location)
    number = int(match.group(1) or 0) if match else 0
    try:
        camera = Picamera2(number)
    except (IndexError, RuntimeError) as error:  # no such camera, or it is in use
        raise EdgeError(
            f"{source.location}: cannot open camera module {number} ({error}); check the "
            "ribbon cable and `rpicam-hello --list-cameras`, and that no other program uses it"
        ) from None
    try:
        camera.configure(
            camera.create_video_configuration(
                main={"size": tuple(size), "format": "RGB888"}, controls={"FrameRate": fps}
            )
        )
        camera.start()
    except Exception:
        camera.close()
        raise
    return PiCameraFrames(camera, fps)


def open_frames(source: Source) -> FrameSource:
    """The frame source for a video file, USB camera or camera module."""
    if source.kind == "picamera":
        return open_pi_camera(source)
    return OpenCvFrames(open_capture(source))


def frames(source: FrameSource, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """RGB frames from an open source until it ends or `max_frames` were read."""
    count = 0
    while max_frames is None or count < max_frames:
        frame = source.read()
        if frame is None:
            return
        count += 1
        yield frame
