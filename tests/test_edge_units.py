"""Pure parts of the Pi side: letterbox maths, input quantisation, TFRecord parsing, COCO scoring,
input classification and the CLI's one-line errors. No trained model needed."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sagemaker_tfod.edge import detect, preprocess, records
from sagemaker_tfod.edge.benchmark import latency_stats
from sagemaker_tfod.edge.errors import EdgeError
from sagemaker_tfod.edge.evaluate import Sample, coco_scores
from sagemaker_tfod.edge.sources import expand_inputs
from tests.conftest import REPO


def test_letterbox_keeps_aspect_and_pads_bottom_right_with_the_mean_pixel():
    image = np.full((50, 100, 3), 255, dtype=np.uint8)
    pixels, placement = preprocess.letterbox(image, 64, 64)
    assert pixels.shape == (64, 64, 3)
    assert (placement.scale_y, placement.scale_x) == (32 / 50, 64 / 100)
    assert (pixels[:32] == 255).all()
    assert (pixels[32:] == preprocess.PAD_RGB).all()


def test_normalised_boxes_map_back_to_original_pixels():
    image = np.zeros((50, 100, 3), dtype=np.uint8)
    _, placement = preprocess.letterbox(image, 64, 64)
    # The whole resized image is the top half of the input: y in [0, 0.5], x in [0, 1].
    boxes = placement.normalised_to_pixels(np.array([[0.0, 0.0, 0.5, 1.0], [0.25, 0.25, 0.5, 0.5]]))
    np.testing.assert_allclose(boxes[0], [0, 0, 50, 100], atol=1e-4)
    np.testing.assert_allclose(boxes[1], [25, 25, 50, 50], atol=1e-4)


def test_input_tensor_follows_the_models_own_quantisation():
    pixels = np.array([[[0, 128, 255]]], dtype=np.uint8)
    as_float = preprocess.to_input_tensor(pixels, np.float32, (0.0, 0))
    assert as_float.dtype == np.float32 and as_float.shape == (1, 1, 1, 3)
    np.testing.assert_array_equal(as_float[0, 0, 0], [0, 128, 255])
    raw = preprocess.to_input_tensor(pixels, np.uint8, (0.0, 0))
    np.testing.assert_array_equal(raw[0, 0, 0], [0, 128, 255])
    quantised = preprocess.to_input_tensor(pixels, np.int8, (1.0, -128))
    np.testing.assert_array_equal(quantised[0, 0, 0], [-128, 0, 127])
    halved = preprocess.to_input_tensor(pixels, np.uint8, (2.0, 0))
    np.testing.assert_array_equal(halved[0, 0, 0], [0, 64, 128])


def test_dequantised_class_ids_are_rounded_not_truncated():
    raw = np.array([[2, 4]], dtype=np.uint8)
    values = detect.dequantize(raw, (0.49999, 0))
    assert values[0, 0] < 1.0 and values[0, 1] < 2.0
    assert np.rint(values).astype(int).tolist() == [[1, 2]]
    floats = np.array([1.5], dtype=np.float32)
    assert detect.dequantize(floats, (0.0, 0)).tolist() == [1.5]


def test_to_detections_converts_to_xy_boxes_sorted_by_score():
    boxes = np.array([[10, 20, 30, 40], [1, 2, 3, 4]], dtype=np.float32)
    found = detect.to_detections(boxes, np.array([1, 0]), np.array([0.2, 0.9]), 2)
    assert [d.label_index for d in found] == [0, 1]
    assert found[1].box == (20.0, 10.0, 40.0, 30.0)
    assert found[0].as_dict(["a", "b"])["label"] == "a"


def test_tfrecord_reader_matches_tensorflow(tmp_path):
    tf = pytest.importorskip("tensorflow")
    feature = tf.train.Feature
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": feature(bytes_list=tf.train.BytesList(value=[b"\x00\xff"])),
                "image/object/bbox/xmin": feature(float_list=tf.train.FloatList(value=[0.25, 1])),
                "image/object/class/label": feature(int64_list=tf.train.Int64List(value=[3, -1])),
            }
        )
    )
    path = tmp_path / "eval-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(example.SerializeToString())
        writer.write(example.SerializeToString())
    parsed = [records.parse_example(r) for r in records.read_records(path)]
    assert len(parsed) == 2
    assert parsed[0]["image/encoded"] == [b"\x00\xff"]
    assert parsed[0]["image/object/bbox/xmin"] == [0.25, 1.0]
    assert parsed[0]["image/object/class/label"] == [3, -1]


def test_truncated_tfrecord_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.tfrecord"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00abc")
    with pytest.raises(EdgeError, match="truncated"):
        list(records.read_records(path))


def _sample(boxes, labels):
    return Sample("s", np.zeros((100, 100, 3), np.uint8), np.array(boxes, np.float32), labels)


def test_coco_scores_perfect_shifted_and_missing():
    truth = [_sample([[10, 10, 50, 50]], (0,)), _sample([[20, 20, 80, 60]], (1,))]
    perfect = [
        [detect.Detection(0, 0.9, (10, 10, 50, 50))],
        [detect.Detection(1, 0.8, (20, 20, 80, 60))],
    ]
    scores = coco_scores(zip(truth, perfect, strict=True), num_classes=2)
    assert scores["AP"] == pytest.approx(1.0) and scores["AP50"] == pytest.approx(1.0)
    assert scores["per_class_AP"] == {0: pytest.approx(1.0), 1: pytest.approx(1.0)}
    shifted = [
        [detect.Detection(0, 0.9, (14, 14, 54, 54))],
        [detect.Detection(1, 0.8, (20, 20, 80, 60))],
    ]
    partly = coco_scores(zip(truth, shifted, strict=True), num_classes=2)
    assert partly["AP50"] == pytest.approx(1.0) and partly["AP"] < 1.0
    wrong_class = [[detect.Detection(1, 0.9, (10, 10, 50, 50))], []]
    assert coco_scores(zip(truth, wrong_class, strict=True), num_classes=2)["AP50"] == 0.0
    nothing = coco_scores(zip(truth, [[], []], strict=True), num_classes=2)
    assert nothing["AP"] == 0.0 and nothing["images"] == 2


def test_latency_stats():
    stats = latency_stats([0.010, 0.020, 0.030, 0.040, 0.100])
    assert stats["median_ms"] == 30.0
    assert 40.0 < stats["p90_ms"] <= 100.0
    assert stats["fps"] == pytest.approx(33.3, abs=0.1)


def test_expand_inputs_classifies_files_folders_and_cameras(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    sources = expand_inputs([str(tmp_path / "a.jpg"), str(tmp_path / "sub"), "0"])
    assert [(s.kind, s.name) for s in sources] == [
        ("image", "a"),
        ("video", "b"),
        ("camera", "camera0"),
    ]
    with pytest.raises(EdgeError, match="unknown file type"):
        expand_inputs([str(tmp_path / "notes.txt")])
    with pytest.raises(EdgeError, match="not found"):
        expand_inputs([str(tmp_path / "missing.jpg")])


def _identity_onnx(path) -> None:
    """A valid ONNX model that is not a detector (a float vector in, the same out)."""
    import onnx
    from onnx import TensorProto, helper

    value = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "id", [value], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["detect", "--model", "missing.tflite", "{img}"], "missing.tflite: not found"),
        (["detect", "--model", "{txt}", "{img}"], "not a TFLite model"),
        (["benchmark", "--model", "missing.tflite"], "missing.tflite: model file not found"),
        (["evaluate", "--model", "m.tflite", "--data", "nowhere"], "nowhere: not found"),
        (["detect", "--model", "{pb}", "{img}"], "graph.pb: not a frozen detection graph"),
        (["detect", "--model", "{sm}", "{img}"], "saved_model: not a SavedModel"),
        (["detect", "--model", "{onnx}", "{img}"], "model.onnx: not an ONNX model"),
        (["benchmark", "--model", "{onnx}"], "model.onnx: not an ONNX model"),
        (["detect", "--model", "{nodet}", "{img}"], "expected one image input [1, H, W, 3]"),
    ],
)
def test_cli_bad_input_is_one_line_and_non_zero(tmp_path, arguments, message):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.new("RGB", (8, 8)).save(image)
    text = tmp_path / "model.tflite"
    text.write_text("not a model")
    (tmp_path / "graph.pb").write_bytes(b"\xff\xff not a GraphDef")
    (tmp_path / "saved_model").mkdir()
    (tmp_path / "saved_model" / "saved_model.pb").write_bytes(b"not a SavedModel")
    (tmp_path / "model.onnx").write_bytes(b"not an ONNX model")
    _identity_onnx(tmp_path / "identity.onnx")
    paths = {
        "img": image,
        "txt": text,
        "pb": tmp_path / "graph.pb",
        "sm": tmp_path / "saved_model",
        "onnx": tmp_path / "model.onnx",
        "nodet": tmp_path / "identity.onnx",
    }
    filled = [a.format(**paths) for a in arguments]
    done = subprocess.run(
        [sys.executable, "-m", "edge", *filled],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_saturated_count_never_reads_past_the_outputs():
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], dtype=np.float32)
    found = detect.to_detections(boxes, np.array([0, 1]), np.array([0.9, 0.8]), 255)
    assert len(found) == 2
    assert detect.to_detections(boxes, np.array([0, 1]), np.array([0.9, 0.8]), -3) == []


def test_labels_txt_must_match_the_models_class_count(tmp_path):
    from sagemaker_tfod.edge.labels import check_label_index, read_labels

    model = tmp_path / "model.tflite"
    model.write_bytes(b"")
    (tmp_path / "export.json").write_text('{"num_classes": 3}')
    short = tmp_path / "labels.txt"
    short.write_text("cat\ndog\n")
    with pytest.raises(EdgeError, match=r"labels.txt: 2 class names, but .* 3 classes"):
        read_labels(None, model)
    short.write_text("cat\ndog\nfox\n")
    assert read_labels(None, model) == ["cat", "dog", "fox"]
    # Without export.json, an index past the file's lines is caught when it is reported.
    check_label_index(["cat", "dog"], short, 1)
    with pytest.raises(EdgeError, match="reported class index 2"):
        check_label_index(["cat", "dog"], short, 2)


def test_cli_refuses_mismatched_labels_before_loading_the_model(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    (tmp_path / "model.tflite").write_text("never opened")
    (tmp_path / "export.json").write_text('{"num_classes": 3}')
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    done = subprocess.run(
        [sys.executable, "-m", "edge", "detect", "--model", "model.tflite", "img.png"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("error: labels.txt: 2 class names"), done.stderr


def test_runtime_falls_back_to_tflite_runtime(monkeypatch):
    import types

    from ai_edge_litert.interpreter import Interpreter

    from sagemaker_tfod.edge import runtime

    # None in sys.modules makes `import` raise ImportError, as when a package is absent.
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    stand_in = types.ModuleType("tflite_runtime.interpreter")
    stand_in.Interpreter = Interpreter
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", stand_in)
    assert runtime.interpreter_class() == (Interpreter, "tflite-runtime")
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(EdgeError, match="pip install ai-edge-litert"):
        runtime.interpreter_class()


def test_a_camera_that_cannot_open_is_a_clear_error():
    pytest.importorskip("cv2")
    from sagemaker_tfod.edge.sources import Source, open_capture

    with pytest.raises(EdgeError, match="99: cannot open this camera"):
        open_capture(Source("camera", "99"))


def test_annotated_outputs_of_same_named_inputs_do_not_overwrite_each_other(tmp_path):
    from PIL import Image

    from sagemaker_tfod.edge.outputs import output_paths

    for relative in ("a/x.jpg", "b/x.jpg", "b/x.bmp", "b/x.png", "top.jpeg"):
        (tmp_path / "in" / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "in" / relative)
    (tmp_path / "in" / "a" / "x.mp4").write_bytes(b"video")
    sources = expand_inputs([str(tmp_path / "in"), "0"])
    out = tmp_path / "out"
    paths = output_paths(sources, out)
    relative = sorted(str(p.relative_to(out)) for p in paths)
    assert len(set(paths)) == len(sources)
    assert relative == [
        "a/x.jpg",
        "a/x.mp4",
        "b/x-2.jpg",  # x.bmp is drawn as a JPEG, and b/x.jpg already has that name
        "b/x.jpg",
        "b/x.png",
        "camera0.mp4",
        "top.jpg",
    ]
    single = expand_inputs([str(tmp_path / "in" / "a" / "x.jpg")])
    assert output_paths(single, out) == [out / "x.jpg"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["detect", "--model", "m.tflite", "--threads", "0", "x.jpg"], "--threads: 0 is less"),
        (["evaluate", "--model", "m", "--data", "d", "--threads", "-2"], "--threads: -2 is less"),
        (["benchmark", "--model", "m.tflite", "--threads", "1", "0"], "--threads: 0 is less"),
        (["detect", "--model", "m", "--score-threshold", "1.5", "x"], "1.5 is outside 0 to 1"),
        (["detect", "--model", "m", "--score-threshold", "-0.1", "x"], "-0.1 is outside 0 to 1"),
        (["detect", "--model", "m", "--score-threshold", "nan", "x"], "nan is outside 0 to 1"),
        (["detect", "--model", "m", "--score-threshold", "high", "x"], "'high' is not a number"),
    ],
)
def test_cli_refuses_bad_threads_and_score_thresholds(capsys, arguments, message):
    from sagemaker_tfod.edge.__main__ import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(arguments)
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], errors


def test_score_threshold_bounds_are_accepted():
    from sagemaker_tfod.edge.__main__ import build_parser

    for value in ("0", "1", "0.25"):
        args = build_parser().parse_args(
            ["detect", "--model", "m", "--score-threshold", value, "x"]
        )
        assert args.score_threshold == float(value)


def _write_video(path, frames):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (48, 32))
    for shade in range(frames):
        writer.write(np.full((32, 48, 3), shade * 40, np.uint8))
    writer.release()


class _DetectorFailingAtFrame:
    """Stands in for a model: no detections, then an EdgeError at frame `failing` (as a
    model whose labels do not fit would raise mid-video)."""

    def __init__(self, failing):
        self.failing, self.calls = failing, 0

    def detect(self, _image):
        self.calls += 1
        if self.calls == self.failing:
            raise EdgeError("model failed mid-video")
        return []


@pytest.mark.parametrize("failing", [None, 3])
def test_annotated_video_appears_complete_or_not_at_all(tmp_path, monkeypatch, failing):
    """The video is written under a temporary `.mp4` name (cv2 needs the extension) and
    renamed when complete; a failure mid-video leaves no half-written `clip.mp4`."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")

    from sagemaker_tfod.edge import __main__ as cli
    from sagemaker_tfod.edge import detect as detect_module

    _write_video(tmp_path / "clip.mp4", 5)
    detector = _DetectorFailingAtFrame(failing)
    monkeypatch.setattr(detect_module, "open_detector", lambda *_args, **_kwargs: detector)
    out = tmp_path / "out"
    arguments = ["detect", "--model", str(tmp_path / "m.tflite"), "--output", str(out)]
    args = cli.build_parser().parse_args([*arguments, str(tmp_path / "clip.mp4")])
    if failing:
        with pytest.raises(EdgeError, match="mid-video"):
            cli.run_detect(args)
        assert not out.exists() or list(out.iterdir()) == []
        return
    assert cli.run_detect(args) == 0
    assert [p.name for p in out.iterdir()] == ["clip.mp4"]
    capture = cv2.VideoCapture(str(out / "clip.mp4"))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()


def test_an_onnx_model_without_onnxruntime_says_what_to_install(tmp_path):
    blocker = tmp_path / "blocker" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('blocked')\n")
    _identity_onnx(tmp_path / "model.onnx")
    done = subprocess.run(
        [sys.executable, "-m", "edge", "benchmark", "--model", str(tmp_path / "model.onnx")],
        cwd=tmp_path,
        env={"PYTHONPATH": f"{tmp_path / 'blocker'}:{REPO}", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "ONNX models need onnxruntime; run `pip install onnxruntime`" in done.stderr
    assert "Traceback" not in done.stderr
