"""The model of one worker: loaded once, in the background, through edge's detectors.

Loading runs in a thread so the worker answers `/ping` (503, "loading") from its first
millisecond; `/ping` turns 200 only after the detector is open *and* has run once on a blank
image (TFLite packs its weights and TensorFlow traces its graph on the first call, which
would otherwise land on a user's request). Inference runs one call at a time per worker
(neither a TFLite interpreter nor the session of a frozen graph may be called from two threads
at once); requests wait for it up to the request timeout, then get a 503.
"""

from __future__ import annotations

import logging
import pathlib
import threading
import time
from collections.abc import Callable

import numpy as np

from sagemaker_tfod.container.serving.decoding import DecodedImage, Options, RequestError
from sagemaker_tfod.container.serving.exports import ExportChoice
from sagemaker_tfod.edge.detect import Detection, Detector, TfliteDetector, open_detector
from sagemaker_tfod.edge.labels import read_labels

log = logging.getLogger(__name__)

PIPELINE_YAML = "pipeline.yaml"


def preset_input_size(model_dir: pathlib.Path) -> tuple[int, int] | None:
    """(height, width) of the network input from the pipeline.yaml training wrote beside the
    SavedModel (which itself takes any size and resizes inside the graph)."""
    path = model_dir / PIPELINE_YAML
    if not path.is_file():
        return None
    try:
        import yaml

        size = yaml.safe_load(path.read_text(encoding="utf-8"))["task"]["model"]["input_size"]
        return int(size[0]), int(size[1])
    except (OSError, ValueError, KeyError, TypeError, IndexError, ImportError):
        return None
    except Exception as error:  # a YAML error: the size is informative only
        log.debug("could not read the input size from %s: %s", path, error)
        return None


def configure_tensorflow(threads: int) -> None:
    """Before TensorFlow starts: `threads` per operation (the workers share the CPUs), and GPU
    memory grown on demand, so several workers can share one GPU instead of the first taking
    it all."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, min(2, threads)))
        for gpu in tf.config.list_physical_devices("GPU"):
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as error:  # already initialised (a second model in one process)
        log.debug("TensorFlow already configured: %s", error)


class ServedModel:
    """One export, its labels, and the lock its calls take."""

    def __init__(
        self,
        choice: ExportChoice,
        threads: int,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self.choice = choice
        self.threads = threads
        self.labels: list[str] = []
        self.input_size: tuple[int, int] | None = None
        self._on_failure = on_failure
        self._detector: Detector | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self.load_seconds: float | None = None
        self.failure: str | None = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def info(self) -> dict:
        return {
            "export": self.choice.name,
            "file": self.choice.file_name,
            "input_size": list(self.input_size) if self.input_size else None,
        }

    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self._load_or_fail, name="model-load", daemon=True)
        thread.start()
        return thread

    def _load_or_fail(self) -> None:
        try:
            self.load()
        except Exception as error:
            # A broken export is not the request's fault: the worker cannot serve at all.
            self.failure = " ".join(str(error).split()) or type(error).__name__
            log.error("cannot load %s: %s", self.choice.path, self.failure, exc_info=True)
            if self._on_failure is not None:
                self._on_failure(self.failure)

    def load(self) -> None:
        """Open the detector and run it once; then `ready` is true."""
        started = time.monotonic()
        self.labels = read_labels(None, self.choice.path)
        if self.choice.uses_tensorflow:
            configure_tensorflow(self.threads)
        detector = open_detector(self.choice.path, threads=self.threads)
        if isinstance(detector, TfliteDetector):
            self.input_size = (detector.input_height, detector.input_width)
        else:
            self.input_size = preset_input_size(self.choice.path.parent)
        height, width = self.input_size or (320, 320)
        detector.detect(np.full((height, width, 3), 127, dtype=np.uint8))  # warm-up
        self._detector = detector
        self.load_seconds = time.monotonic() - started
        self._ready.set()
        log.info(
            "model ready in %.1f s: %s, %d class names, %d thread(s)",
            self.load_seconds,
            self.choice.path,
            len(self.labels),
            self.threads,
        )

    def detect(self, image: DecodedImage, options: Options, timeout: float) -> list[Detection]:
        """Detections in the pixels of the image as sent, best first, filtered by `options`."""
        if self._detector is None:
            raise RequestError(503, "the model is still loading; retry in a few seconds")
        if not self._lock.acquire(timeout=timeout):
            raise RequestError(
                503,
                f"the model was busy for {timeout:g} s (SAGEMAKER_MODEL_SERVER_TIMEOUT); send "
                "fewer requests at once or add instances",
            )
        try:
            found = self._detector.detect(image.pixels)
        finally:
            self._lock.release()
        kept = [d for d in found if d.score >= options.score_threshold]
        if options.max_detections is not None:
            kept = kept[: options.max_detections]
        if image.scale_x == 1.0 and image.scale_y == 1.0:
            return kept
        return [_rescaled(d, image.scale_x, image.scale_y) for d in kept]


def _rescaled(detection: Detection, scale_x: float, scale_y: float) -> Detection:
    xmin, ymin, xmax, ymax = detection.box
    box = (xmin * scale_x, ymin * scale_y, xmax * scale_x, ymax * scale_y)
    return Detection(detection.label_index, detection.score, box)
