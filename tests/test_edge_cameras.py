"""Cameras and the frame loop of `tfod-edge detect`.

The frame loop runs on a real frame source here: a video file decoded by OpenCV (the same
class reads USB cameras). The Raspberry Pi camera module cannot run here (picamera2 needs
libcamera and the camera), so its adapter runs against a stand-in `picamera2` module with the
same calls (`Picamera2(n)`, `create_video_configuration`, `configure`, `start`,
`capture_array`, `close`) that serves a real video's frames in the byte order picamera2's
"RGB888" gives (B, G, R). What that leaves unverified: picamera2 and libcamera themselves.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from sagemaker_tfod.edge.errors import EdgeError
from sagemaker_tfod.edge.sources import Source, expand_inputs

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")

RED_RGB = (255, 0, 0)
SIZE = (64, 48)  # width, height


def _red_video(path, frames: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, SIZE)
    for _ in range(frames):
        writer.write(np.full((SIZE[1], SIZE[0], 3), RED_RGB[::-1], np.uint8))  # OpenCV: BGR
    writer.release()


def test_camera_inputs_are_classified(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sources = expand_inputs(["picam", "picam:1", "0"])
    assert [(s.kind, s.name, s.is_camera) for s in sources] == [
        ("picamera", "picam", True),
        ("picamera", "picam1", True),
        ("camera", "camera0", True),
    ]
    (tmp_path / "picam").mkdir()  # a folder of that name is a folder
    (tmp_path / "picam" / "a.jpg").write_bytes(b"")
    assert [s.kind for s in expand_inputs(["picam"])] == ["image"]


def test_video_frames_come_out_rgb_and_stop_at_max_frames(tmp_path):
    from sagemaker_tfod.edge.sources import frames, open_frames

    _red_video(tmp_path / "red.mp4", 6)
    source = open_frames(Source("video", str(tmp_path / "red.mp4")))
    try:
        assert source.fps == pytest.approx(10.0)
        read = list(frames(source, max_frames=4))
    finally:
        source.close()
    assert len(read) == 4
    assert read[0].shape == (SIZE[1], SIZE[0], 3)
    assert np.abs(read[0].reshape(-1, 3).mean(axis=0) - RED_RGB).max() < 10  # lossy codec


class _RecordingDetector:
    """Stands in for the model: records each frame it is given, finds one box."""

    def __init__(self):
        self.images = []

    def detect(self, image):
        from sagemaker_tfod.edge.detect import Detection

        self.images.append(image.copy())
        return [Detection(label_index=0, score=0.9, box=(1.0, 2.0, 20.0, 30.0))]


def _stand_in_picamera2(video_path, calls: list):
    """A `picamera2` module with picamera2's calls, serving `video_path`'s frames as B, G, R."""
    import types

    module = types.ModuleType("picamera2")

    class Picamera2:
        def __init__(self, camera_num=0):
            calls.append(("open", camera_num))
            self.capture = cv2.VideoCapture(str(video_path))

        def create_video_configuration(self, main, controls):
            return {"main": main, "controls": controls}

        def configure(self, configuration):
            calls.append(("configure", configuration))

        def start(self):
            calls.append(("start",))

        def capture_array(self, stream="main"):
            ok, bgr = self.capture.read()
            if not ok:  # a camera never ends; the stand-in loops over the clip
                self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, bgr = self.capture.read()
            return bgr  # "RGB888" bytes are B, G, R

        def close(self):
            calls.append(("close",))
            self.capture.release()

    module.Picamera2 = Picamera2
    return module


def test_detect_on_the_pi_camera_runs_the_frame_loop_through_picamera2(tmp_path, monkeypatch):
    from sagemaker_tfod.edge import __main__ as cli
    from sagemaker_tfod.edge import detect as detect_module

    _red_video(tmp_path / "clip.mp4", 3)
    calls: list = []
    monkeypatch.setitem(sys.modules, "picamera2", _stand_in_picamera2(tmp_path / "clip.mp4", calls))
    detector = _RecordingDetector()
    monkeypatch.setattr(detect_module, "open_detector", lambda *_args, **_kwargs: detector)
    (tmp_path / "labels.txt").write_text("circle\n")
    out = tmp_path / "out"
    arguments = ["detect", "--model", str(tmp_path / "m.tflite"), "--output", str(out)]
    arguments += ["--json", str(tmp_path / "d.json"), "--max-frames", "5", "picam:1"]
    assert cli.run_detect(cli.build_parser().parse_args(arguments)) == 0

    assert calls[0] == ("open", 1)
    configuration = calls[1][1]
    assert configuration["main"] == {"size": (640, 480), "format": "RGB888"}
    assert calls[2:] == [("start",), ("close",)]
    assert len(detector.images) == 5  # past the clip's end: a camera keeps delivering
    colour = detector.images[0].reshape(-1, 3).mean(axis=0)
    assert np.abs(colour - RED_RGB).max() < 10, colour  # B, G, R bytes became RGB
    records = json.loads((tmp_path / "d.json").read_text())
    assert [r["frame"] for r in records] == [0, 1, 2, 3, 4]
    assert records[0]["input"] == "picam:1"
    assert records[0]["detections"][0]["label"] == "circle"
    capture = cv2.VideoCapture(str(out / "picam1.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()


def test_the_pi_camera_is_closed_when_detection_fails(tmp_path, monkeypatch):
    from sagemaker_tfod.edge import __main__ as cli
    from sagemaker_tfod.edge import detect as detect_module

    _red_video(tmp_path / "clip.mp4", 3)
    calls: list = []
    monkeypatch.setitem(sys.modules, "picamera2", _stand_in_picamera2(tmp_path / "clip.mp4", calls))

    class Failing:
        def detect(self, _image):
            raise EdgeError("model failed")

    monkeypatch.setattr(detect_module, "open_detector", lambda *_args, **_kwargs: Failing())
    arguments = ["detect", "--model", str(tmp_path / "m.tflite"), "--output", str(tmp_path)]
    with pytest.raises(EdgeError, match="model failed"):
        cli.run_detect(cli.build_parser().parse_args([*arguments, "picam"]))
    assert calls[-1] == ("close",)


def test_without_picamera2_the_error_says_how_to_install_it(monkeypatch):
    from sagemaker_tfod.edge.sources import open_frames

    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as if not installed
    with pytest.raises(EdgeError, match=r"sudo apt install python3-picamera2.*system-site"):
        open_frames(Source("picamera", "picam"))


def test_picamera2_broken_by_numpy_2_says_which_package_to_install(tmp_path, monkeypatch):
    """apt's simplejpeg (built for numpy 1.24) fails to load under pip's numpy 2 with a
    ValueError at import; the message names the fix instead of a traceback."""
    from sagemaker_tfod.edge.sources import open_frames

    package = tmp_path / "site" / "picamera2"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "raise ValueError('numpy.dtype size changed, may indicate binary incompatibility')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    with pytest.raises(EdgeError, match="pip install simplejpeg"):
        open_frames(Source("picamera", "picam"))


def test_a_missing_camera_module_is_a_clear_error(monkeypatch):
    import types

    from sagemaker_tfod.edge.sources import open_frames

    module = types.ModuleType("picamera2")

    class Picamera2:
        def __init__(self, camera_num=0):
            raise RuntimeError("Camera __init__ sequence did not complete.")

    module.Picamera2 = Picamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    with pytest.raises(EdgeError, match=r"picam: cannot open camera module 0 .*rpicam-hello"):
        open_frames(Source("picamera", "picam"))
