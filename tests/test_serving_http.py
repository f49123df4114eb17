"""`python -m container serve` over real sockets on loopback, serving a real trained model.

One server (2 workers, float TFLite) answers the content-type, bad-input and load tests; other
servers are started for the SavedModel (loading takes seconds: /ping is 503 meanwhile), for
SIGTERM with requests in flight, and for a model that cannot load. `launch serve-local` and
`launch invoke` (through a loopback SageMaker Runtime stand-in that forwards to the server) run
the same code the way a user does. Every loop is bounded in count and time.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from data_prep_helpers import RACCOON
from serving_helpers import (
    REPO,
    ServerProcess,
    check_serves_jpeg,
    decompression_bomb_png,
    encode_image,
    free_port,
    get,
    post,
    request,
)

pytestmark = pytest.mark.slow

LOAD_CLIENTS, LOAD_REQUESTS = 8, 400
# Resident memory of the server may grow this much between the end of the warm-up and the end
# of the load test (allocator pools settling); a leak of a decoded image per request would
# exceed it many times over.
RSS_GROWTH_LIMIT = 48 * 1024 * 1024


@pytest.fixture(scope="module")
def images(synthetic_voc) -> list[bytes]:
    """The synthetic set's JPEGs (96 px shapes)."""
    return [path.read_bytes() for path in sorted((synthetic_voc / "images").glob("*.jpg"))]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[bytes]:
    """Real photos (the raccoon set, about 500 x 400 px) for the load and SIGTERM tests; where
    the set is not present, synthetic JPEGs of that size."""
    found = sorted((RACCOON / "images").glob("*.jpg"))[:16]
    if not found:
        from sagemaker_tfod.data_prep.synth import write_synthetic_voc

        folder = tmp_path_factory.mktemp("photos") / "voc"
        write_synthetic_voc(folder, num_images=16, image_size=480, seed=1)
        found = sorted((folder / "images").glob("*.jpg"))
    return [path.read_bytes() for path in found]


@pytest.fixture(scope="module")
def server(served_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with ServerProcess(served_model, log, workers=2) as process:
        process.wait_ready()
        yield process
    assert "Traceback" not in process.log, process.log[-3000:]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _reference(served_model: Path, jpeg: bytes) -> list[dict]:
    """In-process detections of the same export on the same pixels, rounded as the server does."""
    import io

    from PIL import Image

    from sagemaker_tfod.edge.detect import TfliteDetector

    pixels = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    detector = TfliteDetector(served_model / "model.tflite", threads=1)
    return [
        {
            "label_index": d.label_index,
            "score": round(d.score, 4),
            "box": [round(v, 1) for v in d.box],
        }
        for d in detector.detect(pixels)
    ]


def _summary(detections: list[dict]) -> list[dict]:
    return [{key: d[key] for key in ("label_index", "score", "box")} for d in detections]


# ---- shapes ---------------------------------------------------------------------------------


def test_every_content_type_gives_the_models_own_detections(server, served_model, images):
    jpeg = images[1]
    labels = (served_model / "labels.txt").read_text().split()
    reference = _reference(served_model, jpeg)
    assert reference, "the tiny model returns boxes (score_threshold=0 at training)"

    first = check_serves_jpeg(server.base_url, jpeg)
    assert _summary(first["detections"]) == reference
    assert first["model"] == {"export": "tflite", "file": "model.tflite", "input_size": [64, 64]}
    assert [d["label"] for d in first["detections"]] == [
        labels[d["label_index"]] for d in first["detections"]
    ]
    for content_type in ("application/x-image", "application/octet-stream", None):
        answer = post(server.base_url, jpeg, content_type)
        assert answer.status == 200 and answer.json() == first, content_type

    # The same pixels as a PNG: the same detections.
    from PIL import Image

    pixels = np.asarray(Image.open(__import__("io").BytesIO(jpeg)).convert("RGB"))
    png = encode_image(pixels, "PNG")
    assert _summary(post(server.base_url, png, "image/png").json()["detections"]) == reference

    one = post(server.base_url, json.dumps({"image": _b64(jpeg)}).encode(), "application/json")
    assert one.status == 200 and one.json() == first
    batch = post(
        server.base_url,
        json.dumps({"images": [_b64(jpeg), _b64(png)], "max_detections": 2}).encode(),
        "application/json",
    ).json()
    assert batch["model"] == first["model"] and len(batch["predictions"]) == 2
    assert [_summary(p["detections"]) for p in batch["predictions"]] == [reference[:2]] * 2

    lines = f'{{"image": "{_b64(jpeg)}"}}\n{{"image": "{_b64(images[2])}"}}\n'.encode()
    answer = post(server.base_url, lines, "application/jsonlines")
    assert answer.status == 200
    assert answer.headers["Content-Type"] == "application/jsonlines"
    parsed = [json.loads(line) for line in answer.body.decode().splitlines()]
    assert len(parsed) == 2 and parsed[0] == first
    assert _summary(parsed[1]["detections"]) == _reference(served_model, images[2])


def test_verbose_accept_answers_in_jumpstarts_shape(server, served_model, images):
    jpeg = images[1]
    labels = (served_model / "labels.txt").read_text().split()
    reference = _reference(served_model, jpeg)
    answer = post(server.base_url, jpeg, "application/x-image", Accept="application/json;verbose")
    assert answer.status == 200
    verbose = answer.json()
    assert set(verbose) == {"normalized_boxes", "classes", "scores", "labels"}
    assert verbose["labels"] == labels
    # JumpStart's client code, unchanged:
    names = [verbose["labels"][int(index)] for index in verbose["classes"]]
    assert names == [labels[d["label_index"]] for d in reference]
    assert verbose["scores"] == [d["score"] for d in reference]
    for (left, bottom, right, top), expected in zip(
        verbose["normalized_boxes"], reference, strict=True
    ):
        assert [left * 96, bottom * 96, right * 96, top * 96] == pytest.approx(
            expected["box"], abs=0.06
        )
    fewer = post(
        server.base_url,
        jpeg,
        "image/jpeg",
        Accept="application/json;verbose;n_predictions=2",
    ).json()
    assert len(fewer["classes"]) == 2


def test_options_from_query_and_custom_attributes(server, images):
    every = post(server.base_url, images[1], "image/jpeg").json()["detections"]
    scores = [d["score"] for d in every]
    jpeg = {"Content-Type": "image/jpeg"}

    def detections(path: str, **headers: str) -> list[dict]:
        answer = request(server.base_url, "POST", path, images[1], {**jpeg, **headers})
        assert answer.status == 200, answer
        return answer.json()["detections"]

    above_all = f"score_threshold={max(scores) + 0.001:.4f},trace=1"  # other keys are ignored
    assert detections("/invocations", **{"X-Amzn-SageMaker-Custom-Attributes": above_all}) == []
    below_all = f"score_threshold={min(scores) - 0.001:.4f}"
    assert detections("/invocations", **{"X-Amzn-SageMaker-Custom-Attributes": below_all}) == every
    assert detections("/invocations?max_detections=1") == every[:1]
    assert detections(f"/invocations?score_threshold={max(scores) + 0.001:.4f}") == []


def test_execution_parameters_for_batch_transform(server):
    answer = get(server.base_url, "/execution-parameters")
    assert answer.status == 200
    assert answer.json() == {
        "MaxConcurrentTransforms": 4,  # two per worker
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 6,
    }


# ---- bad input --------------------------------------------------------------------------------


def _chunks(data: bytes, size: int = 1 << 20):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _bad_requests(images: list[bytes]) -> list[tuple[str, dict, int]]:
    jpeg = images[1]
    over = os.urandom(6 * 1024 * 1024 + 1)
    bomb = decompression_bomb_png()
    image, j, lines = "image/jpeg", "application/json", "application/jsonlines"
    bomb_batch = json.dumps({"images": [_b64(jpeg), _b64(bomb)]}).encode()
    return [
        ("empty body", {"body": b"", "type": image}, 400),
        ("bytes that are not an image", {"body": b"hello, world\n" * 20, "type": image}, 400),
        ("truncated JPEG", {"body": jpeg[: len(jpeg) // 2], "type": image}, 400),
        ("decompression bomb", {"body": bomb, "type": "image/png"}, 413),
        ("bomb inside a batch", {"body": bomb_batch, "type": j}, 413),
        ("payload over 6 MB", {"body": over, "type": image}, 413),
        ("chunked payload over 6 MB", {"body": over, "type": image, "chunked": True}, 413),
        ("invalid JSON", {"body": b'{"image": ', "type": j}, 400),
        ("invalid base64", {"body": b'{"image": "%%% not base64"}', "type": j}, 400),
        ("base64 of text", {"body": json.dumps({"image": _b64(b"text")}).encode(), "type": j}, 400),
        ("invalid JSON line", {"body": b'{"image": "AAAA"}\nnot json\n', "type": lines}, 400),
        ("unknown content type", {"body": jpeg, "type": "text/csv"}, 415),
        ("unknown Accept", {"body": jpeg, "type": image, "accept": "text/csv"}, 406),
        (
            "bad option",
            {"body": jpeg, "type": image, "path": "/invocations?score_threshold=7"},
            400,
        ),
        ("unknown option", {"body": jpeg, "type": image, "path": "/invocations?scor=0.5"}, 400),
        ("GET /invocations", {"method": "GET"}, 405),
        ("unknown route", {"method": "GET", "path": "/predict"}, 404),
    ]


def _send_bad(base_url: str, case: dict) -> tuple[int, dict]:
    port = int(base_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {}
    if "type" in case:
        headers["Content-Type"] = case["type"]
    if "accept" in case:
        headers["Accept"] = case["accept"]
    try:
        body = case.get("body")
        if case.get("chunked"):
            connection.request(
                "POST", "/invocations", body=_chunks(body), headers=headers, encode_chunked=True
            )
        else:
            connection.request(
                case.get("method", "POST"), case.get("path", "/invocations"), body, headers
            )
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        connection.close()


def test_each_bad_input_gets_its_4xx_and_the_next_request_succeeds(server, images):
    for name, case, expected in _bad_requests(images):
        status, body = _send_bad(server.base_url, case)
        assert status == expected, (name, status, body)
        assert set(body) == {"error", "status"} and body["status"] == expected, name
        assert "\n" not in body["error"] and len(body["error"]) < 400, (name, body)
        good = post(server.base_url, images[0], "image/jpeg")
        assert good.status == 200, (name, good)
    log = server.log
    assert "Traceback" not in log and " 500 " not in log
    assert "50,000 x 50,000 pixels" in log  # the bomb's refusal says what it declared


# ---- load --------------------------------------------------------------------------------------


def _client(base_url: str, bodies: list[bytes], count: int, offset: int) -> list[int]:
    """One keep-alive connection sending `count` requests; the status of each."""
    port = int(base_url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    statuses = []
    try:
        for index in range(count):
            body = bodies[(offset + index) % len(bodies)]
            answer = request(
                base_url,
                "POST",
                "/invocations",
                body,
                {"Content-Type": "image/jpeg"},
                connection=connection,
            )
            statuses.append(answer.status)
            if answer.status == 200:
                assert answer.json()["width"] > 0
    finally:
        connection.close()
    return statuses  # fmt: skip


def test_load_8_clients_400_requests_zero_errors_memory_stable(server, photos):
    per_client = LOAD_REQUESTS // LOAD_CLIENTS
    warmup = _client(server.base_url, photos, 2 * len(photos), 0)
    assert set(warmup) == {200}
    before = server.rss_bytes()
    started = time.monotonic()
    with ThreadPoolExecutor(LOAD_CLIENTS) as pool:
        results = list(
            pool.map(
                lambda client: _client(server.base_url, photos, per_client, client),
                range(LOAD_CLIENTS),
            )
        )
    seconds = time.monotonic() - started
    after = server.rss_bytes()
    statuses = [status for result in results for status in result]
    assert len(statuses) == LOAD_REQUESTS
    assert statuses.count(200) == LOAD_REQUESTS, sorted(set(statuses))
    print(
        f"load: {LOAD_REQUESTS} requests from {LOAD_CLIENTS} clients in {seconds:.1f} s "
        f"({LOAD_REQUESTS / seconds:.0f}/s); server RSS {before / 2**20:.0f} -> "
        f"{after / 2**20:.0f} MiB"
    )
    assert after - before < RSS_GROWTH_LIMIT, (before, after)


# ---- lifecycle ---------------------------------------------------------------------------------


def _first_connect_seconds(port: int, started: float, timeout: float = 30.0) -> float:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return time.monotonic() - started
        except OSError:
            if time.monotonic() - started > timeout:
                raise
            time.sleep(0.002)


def test_ping_is_503_while_the_saved_model_loads_and_an_invocation_waits(
    served_model, tmp_path, images
):
    """TensorFlow takes seconds to import and load: meanwhile /ping answers 503 at once, and an
    invocation sent during the load waits for the model and succeeds."""
    log = tmp_path / "serve.log"
    # A generous request timeout: on a CPU shared with other jobs the load can take a minute.
    env = {"TFOD_SERVE_EXPORT": "saved_model", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "300"}
    with (
        ServerProcess(served_model, log, workers=1, env=env) as process,
        ThreadPoolExecutor(1) as pool,
    ):
        accepted_after = _first_connect_seconds(process.port, process.started_at)
        statuses, slowest, early = [], 0.0, None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            sent = time.monotonic()
            answer = get(process.base_url, "/ping", timeout=30)
            slowest = max(slowest, time.monotonic() - sent)
            statuses.append(answer.status)
            if answer.status == 200:
                break
            assert answer.status == 503 and answer.json()["status"] == "loading"
            if early is None:  # sent while the model loads
                early = pool.submit(post, process.base_url, images[1], "image/jpeg", timeout=300)
            time.sleep(0.05)
        print(
            f"saved_model: port accepted {accepted_after * 1000:.0f} ms after start; "
            f"/ping 503 x{statuses.count(503)}, then 200; slowest /ping {slowest:.2f} s"
        )
        assert statuses[0] == 503 and statuses[-1] == 200
        assert accepted_after < 5.0  # it binds before importing anything heavy
        result = early.result(timeout=310)
        assert result.status == 200, result
        assert result.json()["model"] == {
            "export": "saved_model",
            "file": "saved_model",
            "input_size": [64, 64],
        }
        assert process.stop() == 0
    assert "Traceback" not in log.read_text()


def test_sigterm_finishes_requests_in_flight_then_exits(served_model, tmp_path, photos):
    """8 requests (a batch of 32 photos each) go to one worker, which runs them one at a time;
    SIGTERM arrives as soon as the first is answered, with the other 7 accepted and waiting:
    every one completes with 200, then the server exits 0, well inside SageMaker's 30 s."""
    body = json.dumps({"images": [_b64(p) for p in photos * 2]}).encode()
    with ServerProcess(served_model, tmp_path / "serve.log", workers=1) as process:
        process.wait_ready()
        with ThreadPoolExecutor(8) as pool:
            futures = [
                pool.submit(post, process.base_url, body, "application/json") for _ in range(8)
            ]
            wait(futures, timeout=120, return_when=FIRST_COMPLETED)
            in_flight = sum(not future.done() for future in futures)
            stopped = time.monotonic()
            process.terminate(signal.SIGTERM)
            answers = [future.result(timeout=60) for future in futures]
        code = process.wait(timeout=40)
        seconds = time.monotonic() - stopped
        assert in_flight >= 4, f"only {in_flight} requests were still in flight at SIGTERM"
        assert [answer.status for answer in answers] == [200] * 8
        assert all(len(answer.json()["predictions"]) == 32 for answer in answers)
        assert code == 0, process.log[-2000:]
        assert seconds < 30, seconds
        print(
            f"SIGTERM with {in_flight} requests in flight: all answered, exit 0 after "
            f"{seconds:.1f} s"
        )


def test_a_model_that_cannot_load_stops_the_server_with_the_reason(served_model, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(served_model, broken)
    (broken / "model.tflite").write_bytes(b"this is not a flatbuffer" * 10)
    env = {"SAGEMAKER_BASE_DIR": str(tmp_path / "opt_ml")}
    (tmp_path / "opt_ml" / "output").mkdir(parents=True)
    with ServerProcess(broken, tmp_path / "serve.log", workers=1, env=env) as process:
        code = process.wait(timeout=120)
    assert code == 3, process.log[-2000:]
    failure = (tmp_path / "opt_ml" / "output" / "failure").read_text()
    assert "model.tflite" in failure and "not a TFLite model" in failure


def test_bad_settings_fail_in_one_line_before_binding(served_model, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TFOD_SERVE_EXPORT": "tflite_int8"}
    completed = subprocess.run(
        [sys.executable, "-m", "container", "serve", "--model-dir", str(served_model)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1
    errors = [line for line in completed.stdout.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "model_int8.tflite is not in the model" in errors[0]


# ---- launch serve-local and invoke ---------------------------------------------------------


def test_serve_local_serves_a_model_archive(served_model, tmp_path, images):
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(served_model.iterdir()):
            tar.add(path, arcname=path.name)
    port = free_port()
    command = [sys.executable, "-m", "launch", "serve-local", str(archive), "--port", str(port)]
    command += ["--workers", "1"]
    with ServerProcess(served_model, tmp_path / "serve.log", command=command) as process:
        process.port, process.base_url = port, f"http://127.0.0.1:{port}"
        result = check_serves_jpeg(process.base_url, images[1])
        assert result["model"]["file"] == "model.tflite"
        process.terminate(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=40) == 0


class _RuntimeStandIn(BaseHTTPRequestHandler):
    """SageMaker Runtime's InvokeEndpoint on loopback: forwards the body to the container's
    server, answers its 200 as is, and anything else the way SageMaker does (424 ModelError)."""

    target = ""
    seen: list

    def do_POST(self) -> None:
        name = self.path.split("/")[2]
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        headers = {
            key: self.headers[key]
            for key in ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")
            if self.headers.get(key)
        }
        self.seen.append({"endpoint": name, **headers})
        answer = request(self.target, "POST", "/invocations", body, headers)
        if answer.status == 200:
            payload, status = answer.body, 200
            content_type = answer.headers.get("Content-Type", "application/json")
            extra = {"x-Amzn-Invoked-Production-Variant": "AllTraffic"}
        else:
            payload = json.dumps(
                {
                    "ErrorCode": "CLIENT_ERROR_FROM_MODEL",
                    "Message": f"Received client error ({answer.status}) from primary with "
                    f'message "{answer.body.decode()}".',
                    "OriginalMessage": answer.body.decode(),
                    "OriginalStatusCode": answer.status,
                    "LogStreamArn": f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/"
                    f"sagemaker/Endpoints/{name}",
                }
            ).encode()
            status, content_type = 424, "application/json"
            extra = {"x-amzn-ErrorType": "ModelError:"}
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def runtime(server, monkeypatch, tmp_path):
    handler = type("Handler", (_RuntimeStandIn,), {"target": server.base_url, "seen": []})
    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=stand_in.serve_forever, daemon=True)
    thread.start()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{stand_in.server_port}"
    )
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    yield handler
    stand_in.shutdown()
    stand_in.server_close()  # fmt: skip


def test_invoke_prints_detections_and_draws_them(runtime, synthetic_voc, tmp_path, capsys):
    from PIL import Image

    from sagemaker_tfod.launch.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    for path in sorted((synthetic_voc / "images").glob("*.jpg"))[:3]:
        shutil.copy(path, folder / path.name)
    code = main(["invoke", "tf-od-test", str(folder), "--draw", "drawn", "--score-threshold", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [Path(r["image"]).name for r in records] == sorted(p.name for p in folder.iterdir())
    assert all(r["detections"] for r in records)
    assert {seen["endpoint"] for seen in runtime.seen} == {"tf-od-test"}
    assert runtime.seen[0]["Content-Type"] == "image/jpeg"
    assert runtime.seen[0]["X-Amzn-SageMaker-Custom-Attributes"] == "score_threshold=0"
    for record in records:
        drawn = np.asarray(Image.open(record["drawn"]).convert("RGB"))
        original = np.asarray(Image.open(record["image"]).convert("RGB"))
        assert drawn.shape == original.shape and not np.array_equal(drawn, original)


def test_invoke_with_a_bad_image_is_one_line_with_the_containers_reason(runtime, tmp_path, capsys):
    from sagemaker_tfod.launch.cli import main

    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    code = main(["invoke", "tf-od-test", str(bad)])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1, err
    assert "the model container answered HTTP 400" in err and "not an image" in err
