"""The serving logic as pure functions: settings, export choice, content negotiation, request
decoding (every refusal), response shapes, and the launch side's hosting requests."""

from __future__ import annotations

import base64
import io
import json
import pathlib
from datetime import datetime

import numpy as np
import pytest
from serving_helpers import decompression_bomb_png, encode_image

from sagemaker_tfod.container.serving import exports, media_types, responses
from sagemaker_tfod.container.serving.config import MIB, ServeConfig, ServeConfigError
from sagemaker_tfod.container.serving.decoding import (
    EncodedImage,
    Options,
    RequestError,
    decode_base64,
    decode_image,
    parse_options,
    read_body,
    split_images,
    use_own_pixel_limit,
)
from sagemaker_tfod.edge.detect import Detection
from sagemaker_tfod.launch import hosting_requests, invoke
from sagemaker_tfod.launch.errors import LaunchError

DEFAULTS = Options(score_threshold=0.0, max_detections=None)


def _config(environ=None, cpu_count=4, gpu=False, **kwargs) -> ServeConfig:
    return ServeConfig.from_environ(environ or {}, cpu_count=cpu_count, gpu=gpu, **kwargs)


# ---- config --------------------------------------------------------------------------------


def test_defaults_follow_sagemaker_and_the_hardware():
    cpu = _config()
    assert (cpu.port, cpu.workers, cpu.model_threads, cpu.export) == (8080, 4, 1, "auto")
    assert cpu.max_payload_bytes == 6 * MIB and cpu.timeout_s == 60
    assert cpu.model_dir == pathlib.Path("/opt/ml/model")
    assert cpu.max_concurrent_transforms == 8
    gpu = _config(gpu=True)
    assert (gpu.workers, gpu.model_threads) == (1, 4)


def test_environment_and_flags_override_in_order(tmp_path):
    environ = {
        "SAGEMAKER_BIND_TO_PORT": "9000",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
        "TFOD_SERVE_EXPORT": " SAVED_MODEL ",
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "20",
        "SAGEMAKER_BASE_DIR": str(tmp_path),
    }
    config = _config(environ, cpu_count=6)
    assert (config.port, config.workers, config.model_threads) == (9000, 3, 2)
    assert config.export == "saved_model"
    assert config.max_payload_mb == 20 and config.model_dir == tmp_path / "model"
    flagged = _config(environ, overrides={"port": 7000, "workers": None}, model_dir=tmp_path)
    assert (flagged.port, flagged.workers, flagged.model_dir) == (7000, 3, tmp_path)
    own = _config({**environ, "TFOD_SERVE_MAX_PAYLOAD_MB": "1.5"})
    assert own.max_payload_bytes == int(1.5 * MIB)
    # Batch transform's 0 means "SageMaker sets no limit": the real-time default stays.
    assert _config({"SAGEMAKER_MAX_PAYLOAD_IN_MB": "0"}).max_payload_mb == 6


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT='http' is not a whole number"),
        ({"SAGEMAKER_BIND_TO_PORT": "70000"}, "outside 1..65535"),
        ({"SAGEMAKER_MODEL_SERVER_WORKERS": "0"}, "SAGEMAKER_MODEL_SERVER_WORKERS=0 is outside"),
        ({"TFOD_SERVE_SCORE_THRESHOLD": "nan"}, "is not a number"),
        ({"TFOD_SERVE_HTTP_THREADS": "40"}, "exceeds TFOD_SERVE_MAX_CONNECTIONS=32"),
        ({"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}, "SAGEMAKER_DEFAULT_INVOCATIONS"),
    ],
)
def test_bad_settings_name_the_variable(environ, expected):
    with pytest.raises(ServeConfigError) as raised:
        _config(environ)
    assert expected in str(raised.value)
    assert "\n" not in str(raised.value)


# ---- exports -------------------------------------------------------------------------------


def _model_dir(tmp_path: pathlib.Path, *names: str) -> pathlib.Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for name in names:
        if name == "saved_model":
            (folder / name).mkdir()
            (folder / name / "saved_model.pb").write_bytes(b"x")
        else:
            (folder / name).write_bytes(b"x")
    return folder


def test_auto_picks_int8_then_float_on_cpu_and_the_saved_model_on_gpu(tmp_path):
    folder = _model_dir(
        tmp_path, "saved_model", "model.tflite", "model_int8.tflite", "frozen_inference_graph.pb"
    )
    assert exports.choose_export(folder, "auto", gpu=False).name == "tflite_int8"
    assert exports.choose_export(folder, "auto", gpu=True).name == "saved_model"
    (folder / "model_int8.tflite").unlink()
    assert exports.choose_export(folder, "", gpu=False).name == "tflite"
    chosen = exports.choose_export(folder, "frozen_graph", gpu=False)
    assert chosen.path == folder / "frozen_inference_graph.pb" and chosen.uses_tensorflow


def test_export_choice_refusals_say_what_exists(tmp_path):
    with pytest.raises(ServeConfigError, match="model folder not found"):
        exports.choose_export(tmp_path / "missing", "auto", gpu=False)
    folder = _model_dir(tmp_path, "saved_model")
    with pytest.raises(ServeConfigError, match="this model has saved_model"):
        exports.choose_export(folder, "tflite_int8", gpu=False)
    with pytest.raises(ServeConfigError, match="is not an export name"):
        exports.choose_export(folder, "onnx", gpu=False)
    (folder / "saved_model" / "saved_model.pb").unlink()
    with pytest.raises(ServeConfigError, match="no export found"):
        exports.choose_export(folder, "auto", gpu=False)


def test_export_file_names_are_the_ones_training_writes():
    from sagemaker_tfod.container import export, export_edge

    assert exports.EXPORT_FILES["saved_model"] == export.SAVED_MODEL_DIR
    assert exports.EXPORT_FILES["frozen_graph"] == export_edge.FROZEN_GRAPH
    assert exports.EXPORT_FILES["tflite"] == export_edge.FLOAT_TFLITE
    quantized = {name for name, _ in export_edge.QUANTIZED_FILES.values()}
    assert quantized == {exports.EXPORT_FILES["tflite_int8"], exports.EXPORT_FILES["tflite_fp16"]}


# ---- media types ---------------------------------------------------------------------------


def test_request_kinds_and_unknown_content_type():
    assert media_types.request_kind("image/jpeg") == media_types.IMAGE
    assert media_types.request_kind(None) == media_types.IMAGE
    assert media_types.request_kind("Application/JSON; charset=utf-8") == media_types.JSON_BODY
    assert media_types.request_kind("application/jsonlines") == media_types.JSONLINES_BODY
    with pytest.raises(media_types.MediaTypeError) as raised:
        media_types.request_kind("text/csv")
    assert raised.value.status == 415


@pytest.mark.parametrize(
    ("accept", "kind", "expected"),
    [
        (None, media_types.IMAGE, ("application/json", False, None)),
        ("*/*", media_types.JSONLINES_BODY, ("application/jsonlines", False, None)),
        ("application/json;verbose", media_types.IMAGE, ("application/json", True, None)),
        (
            "application/json;verbose;n_predictions=5",
            media_types.IMAGE,
            ("application/json", True, 5),
        ),
        (
            "text/html;q=1, application/jsonlines;q=0.5",
            media_types.IMAGE,
            ("application/jsonlines", False, None),
        ),
        ("text/csv, */*;q=0.1", media_types.IMAGE, ("application/json", False, None)),
    ],
)
def test_accept_negotiation(accept, kind, expected):
    found = media_types.negotiate(accept, kind, "application/json")
    assert (found.media_type, found.verbose, found.n_predictions) == expected


@pytest.mark.parametrize("accept", ["text/csv", "application/json;n_predictions=0"])
def test_unsupported_accept_is_406(accept):
    with pytest.raises(media_types.MediaTypeError) as raised:
        media_types.negotiate(accept, media_types.IMAGE, "application/json")
    assert raised.value.status == 406


# ---- decoding ------------------------------------------------------------------------------


def _status(call, *args, **kwargs) -> tuple[int, str]:
    with pytest.raises(RequestError) as raised:
        call(*args, **kwargs)
    assert "\n" not in raised.value.message
    return raised.value.status, raised.value.message


def test_body_limits():
    assert read_body(io.BytesIO(b"abc"), "3", 10) == b"abc"
    assert read_body(io.BytesIO(b"abc"), None, 10) == b"abc"  # chunked
    assert _status(read_body, io.BytesIO(b"x" * 11), "11", 10)[0] == 413
    assert _status(read_body, io.BytesIO(b"x" * 11), None, 10)[0] == 413
    assert _status(read_body, io.BytesIO(b""), "0", 10) == (
        400,
        "empty request body; send the image bytes (or JSON with base64 images)",
    )
    assert _status(read_body, io.BytesIO(b""), "ten", 10)[0] == 400


def test_json_and_jsonlines_bodies():
    one = base64.b64encode(b"one").decode()
    two = base64.b64encode(b"two").decode()
    images, options, batch = split_images(
        json.dumps({"image": one, "score_threshold": 0.5}).encode(), media_types.JSON_BODY, 4
    )
    assert [(i.where, i.data) for i in images] == [("image", b"one")]
    assert options == {"score_threshold": 0.5} and not batch
    images, _, batch = split_images(
        json.dumps({"images": [one, f"data:image/jpeg;base64,{two}"]}).encode(),
        media_types.JSON_BODY,
        4,
    )
    assert [i.data for i in images] == [b"one", b"two"] and batch
    lines = f'{{"image": "{one}"}}\n\n{{"image": "{two}"}}\n'.encode()
    images, _, batch = split_images(lines, media_types.JSONLINES_BODY, 4)
    assert [(i.where, i.data) for i in images] == [("line 1", b"one"), ("line 3", b"two")]


@pytest.mark.parametrize(
    ("body", "kind", "status", "message"),
    [
        (b"{not json", media_types.JSON_BODY, 400, "not valid JSON"),
        (b"\xff\xfe", media_types.JSON_BODY, 400, "not UTF-8"),
        (b"[1, 2]", media_types.JSON_BODY, 400, "must be an object"),
        (b'{"img": "AAAA"}', media_types.JSON_BODY, 400, "unknown key(s) img"),
        (b'{"image": "AA", "images": ["AA"]}', media_types.JSON_BODY, 400, "exactly one of"),
        (b'{"image": "not base64!"}', media_types.JSON_BODY, 400, "image: not valid base64"),
        (b'{"image": 7}', media_types.JSON_BODY, 400, "expected a base64 string"),
        (b'{"images": []}', media_types.JSON_BODY, 400, "non-empty list"),
        (b'{"images": ["AA==", "AA==", "AA=="]}', media_types.JSON_BODY, 413, "more than 2"),
        (b'{"image": "AAAA"}\n[1]\n', media_types.JSONLINES_BODY, 400, "line 2: each line"),
        (b"\n\n", media_types.JSONLINES_BODY, 400, "has no lines"),
    ],
)
def test_bad_bodies(body, kind, status, message):
    got_status, got_message = _status(split_images, body, kind, 2)
    assert got_status == status and message in got_message


def test_options_sources_and_refusals():
    parsed = parse_options("score_threshold=0.4", "max_detections=3,trace=abc", {}, 9, DEFAULTS)
    assert parsed == Options(0.4, 3)
    assert parse_options("", None, {"max_detections": 2}, 7, DEFAULTS) == Options(0.0, 2)
    assert parse_options("", None, {}, None, Options(0.2, 5)) == Options(0.2, 5)
    assert _status(parse_options, "score=1", None, {}, None, DEFAULTS)[0] == 400
    assert _status(parse_options, "score_threshold=abc", None, {}, None, DEFAULTS)[0] == 400
    assert _status(parse_options, "", None, {"score_threshold": 1.5}, None, DEFAULTS)[0] == 400
    assert _status(parse_options, "", None, {"max_detections": 2.5}, None, DEFAULTS)[0] == 400
    assert _status(parse_options, "", None, {"max_detections": True}, None, DEFAULTS)[0] == 400


def _pixels(height=60, width=80) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_decodes_jpeg_png_and_greyscale():
    use_own_pixel_limit()
    pixels = _pixels()
    png = decode_image(EncodedImage("body", encode_image(pixels, "PNG")), 10_000)
    assert (png.width, png.height, png.image_format) == (80, 60, "PNG")
    assert np.array_equal(png.pixels, pixels)
    grey = encode_image(pixels[:, :, 0], "JPEG")
    decoded = decode_image(EncodedImage("body", grey), 10_000)
    assert decoded.pixels.shape == (60, 80, 3)


def test_large_jpeg_is_decoded_at_reduced_scale_but_reported_at_full_size():
    image = decode_image(
        EncodedImage("body", encode_image(_pixels(800, 1600), "JPEG")), 10**7, (100, 150)
    )
    assert (image.width, image.height) == (1600, 800)
    # 1/8 scale (100 x 200) still covers the 100 x 150 input; never below it.
    assert image.pixels.shape[:2] == (100, 200)
    assert (image.scale_x, image.scale_y) == (8.0, 8.0)
    small = decode_image(
        EncodedImage("body", encode_image(_pixels(800, 1600), "JPEG")), 10**7, (101, 150)
    )
    assert small.pixels.shape[:2] == (200, 400)


def test_bad_images_are_4xx():
    use_own_pixel_limit()
    jpeg = encode_image(_pixels(), "JPEG")
    status, message = _status(decode_image, EncodedImage("body", b"hello"), 10_000)
    assert status == 400 and "not an image this server reads" in message
    status, message = _status(
        decode_image, EncodedImage("images[1]", jpeg[: len(jpeg) // 2]), 10**4
    )
    assert status == 400 and message.startswith("images[1]: the JPEG image is truncated")
    tiff = io.BytesIO()
    from PIL import Image

    Image.fromarray(_pixels()).save(tiff, format="TIFF")
    assert _status(decode_image, EncodedImage("body", tiff.getvalue()), 10_000)[0] == 400
    bomb = decompression_bomb_png()
    assert len(bomb) < 200_000
    status, message = _status(decode_image, EncodedImage("body", bomb), 40_000_000)
    assert status == 413 and "50,000 x 50,000 pixels" in message
    assert _status(decode_image, EncodedImage("body", jpeg), 100)[0] == 413


def test_base64_forms():
    assert decode_base64("aGk=\n", "x") == b"hi"
    assert decode_base64("data:image/png;base64,aGk=", "x") == b"hi"
    assert _status(decode_base64, "", "x")[0] == 400
    assert _status(decode_base64, "data:image/png;base64", "x")[0] == 400


# ---- responses -----------------------------------------------------------------------------

RESULT = responses.ImageResult(
    width=200,
    height=100,
    detections=[
        Detection(1, 0.91234, (20.0, 10.0, 120.0, 90.0)),
        Detection(0, 0.5, (0.0, 0.0, 50.0, 50.0)),
    ],
)
LABELS = ["cat", "dog"]
MODEL = {"export": "tflite", "file": "model.tflite", "input_size": [320, 320]}


def test_json_shape_for_one_image_and_a_batch():
    one = json.loads(
        responses.render(
            [RESULT], False, media_types.ResponseFormat("application/json"), MODEL, LABELS
        )
    )
    assert one["model"] == MODEL and (one["width"], one["height"]) == (200, 100)
    assert one["detections"][0] == {
        "label": "dog",
        "label_id": 2,
        "label_index": 1,
        "score": 0.9123,
        "box": [20.0, 10.0, 120.0, 90.0],
        "normalized_box": [0.1, 0.1, 0.6, 0.9],
    }
    batch = json.loads(
        responses.render(
            [RESULT, RESULT], True, media_types.ResponseFormat("application/json"), MODEL, LABELS
        )
    )
    assert batch["model"] == MODEL and len(batch["predictions"]) == 2
    assert "model" not in batch["predictions"][0]


def test_verbose_shape_is_jumpstarts():
    verbose = json.loads(
        responses.render(
            [RESULT], False, media_types.ResponseFormat("application/json", True), MODEL, LABELS
        )
    )
    assert set(verbose) == {"normalized_boxes", "classes", "scores", "labels"}
    # JumpStart's own client code:
    names = [verbose["labels"][int(index)] for index in verbose["classes"]]
    assert names == ["dog", "cat"]
    left, bottom, right, top = verbose["normalized_boxes"][0]
    assert (left * 200, bottom * 100, right * 200, top * 100) == pytest.approx((20, 10, 120, 90))


def test_jsonlines_answer_one_line_per_image():
    body = responses.render(
        [RESULT, RESULT], True, media_types.ResponseFormat("application/jsonlines"), MODEL, LABELS
    )
    lines = body.decode().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["model"] == MODEL


# ---- launch: hosting requests --------------------------------------------------------------

ROLE = "arn:aws:iam::123456789012:role/SageMakerExecution"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tf-object-detection:latest"
MODEL_DATA = "s3://bucket/output/job/output/model.tar.gz"


def test_model_and_endpoint_requests():
    model = hosting_requests.ModelSpec("m-1", IMAGE, MODEL_DATA, ROLE, "tflite", {"team": 1})
    request = hosting_requests.build_create_model_request(model)
    assert request["PrimaryContainer"] == {
        "Image": IMAGE,
        "ModelDataUrl": MODEL_DATA,
        "Environment": {"TFOD_SERVE_EXPORT": "tflite"},
    }
    assert request["Tags"] == [{"Key": "team", "Value": "1"}]
    endpoint = hosting_requests.EndpointSpec("ep", "ep-1", "m-1", "ml.c5.large", 2)
    (variant,) = hosting_requests.build_create_endpoint_config_request(endpoint)[
        "ProductionVariants"
    ]
    assert variant == {
        "VariantName": "AllTraffic",
        "ModelName": "m-1",
        "InstanceType": "ml.c5.large",
        "InitialInstanceCount": 2,
        "InitialVariantWeight": 1.0,
    }
    serverless = hosting_requests.EndpointSpec(
        "ep", "ep-1", "m-1", serverless_memory_mb=2048, serverless_max_concurrency=3
    )
    (variant,) = hosting_requests.build_create_endpoint_config_request(serverless)[
        "ProductionVariants"
    ]
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}
    assert "InstanceType" not in variant


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (
            lambda: hosting_requests.build_create_model_request(
                hosting_requests.ModelSpec("m", IMAGE, "s3://b/model.zip", ROLE)
            ),
            "is not an s3://.../model.tar.gz",
        ),
        (
            lambda: hosting_requests.build_create_model_request(
                hosting_requests.ModelSpec("m", IMAGE, MODEL_DATA, "role", "onnx")
            ),
            "not an IAM role ARN",
        ),
        (
            lambda: hosting_requests.build_create_endpoint_config_request(
                hosting_requests.EndpointSpec("e", "e", "m", serverless_memory_mb=1500)
            ),
            "must be one of 1024",
        ),
        (
            lambda: hosting_requests.build_create_endpoint_request(
                hosting_requests.EndpointSpec("bad_name", "e", "m")
            ),
            "endpoint name 'bad_name'",
        ),
        (lambda: hosting_requests.parse_autoscale("4"), "is not MIN-MAX"),
        (lambda: hosting_requests.parse_autoscale("3-1"), "1 <= MIN <= MAX"),
    ],
)
def test_hosting_refusals(build, expected):
    with pytest.raises(LaunchError) as raised:
        build()
    assert expected in str(raised.value)


def test_autoscaling_requests_track_invocations_per_instance():
    endpoint = hosting_requests.EndpointSpec("ep", "ep-1", "m-1", instance_count=1)
    spec = hosting_requests.AutoscaleSpec("ep", *hosting_requests.parse_autoscale("1-4"), 600)
    register, policy = hosting_requests.build_autoscaling_requests(spec, endpoint)
    assert register == {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/ep/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "MinCapacity": 1,
        "MaxCapacity": 4,
    }
    target = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert target["TargetValue"] == 600.0
    assert target["PredefinedMetricSpecification"] == {
        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    serverless = hosting_requests.EndpointSpec("ep", "ep-1", "m-1", serverless_memory_mb=2048)
    with pytest.raises(LaunchError, match="serverless endpoint scales by itself"):
        hosting_requests.build_autoscaling_requests(spec, serverless)


def test_transform_request_for_images_and_json_lines():
    spec = hosting_requests.TransformSpec("t-1", "m-1", "s3://bkt/images", "s3://bkt/out")
    request = hosting_requests.build_create_transform_job_request(spec)
    assert request["TransformInput"]["ContentType"] == "application/x-image"
    assert request["TransformInput"]["SplitType"] == "None"
    assert request["TransformOutput"] == {
        "S3OutputPath": "s3://bkt/out",
        "Accept": "application/json",
        "AssembleWith": "None",
    }
    # Left to the container's GET /execution-parameters:
    assert not {"MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"} & set(request)
    lines = hosting_requests.TransformSpec(
        "t-1", "m-1", "s3://bkt/in", "s3://bkt/out", content_type="application/jsonlines"
    )
    request = hosting_requests.build_create_transform_job_request(lines)
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["TransformOutput"]["AssembleWith"] == "Line"


def test_timestamped_names_fit_sagemaker():
    now = datetime(2026, 11, 21, 11, 30, 5)
    assert hosting_requests.timestamped("tf-od-1", now) == "tf-od-1-20261121-113005"
    long = hosting_requests.timestamped("x" * 80, now)
    assert len(long) == 63 and long.endswith("-20261121-113005")


def test_invoke_request_and_response_parsing(tmp_path):
    assert invoke.content_type(pathlib.Path("a.JPG")) == "image/jpeg"
    assert invoke.content_type(pathlib.Path("a.webp")) == "application/x-image"
    assert invoke.custom_attributes(0.5, 3) == "score_threshold=0.5,max_detections=3"
    assert invoke.custom_attributes(None, None) is None
    with pytest.raises(LaunchError, match="above SageMaker's 6 MiB"):
        invoke.build_invoke_request("ep", pathlib.Path("big.jpg"), b"x" * (6 * MIB + 1), None)
    detections, labels = invoke.detections_of(
        {"detections": [{"label_index": 2, "label": "tri", "score": 0.7, "box": [1, 2, 3, 4]}]}
    )
    assert detections == [Detection(2, 0.7, (1, 2, 3, 4))]
    assert labels == ["class 0", "class 1", "tri"]
