"""Shared by the serving tests, benchmarks/bench_serve.py and (later) the image test.

`ServerProcess` runs `python -m container serve` on a free loopback port in a subprocess and
stops it with SIGTERM; `post` and `get` make one HTTP request; `check_serves_jpeg` is the whole
"this base URL serves the detector" check, so the image test can run it against the container.
Everything here talks to 127.0.0.1 only and every wait is bounded.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:300]!r})"


def request(
    base_url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    connection: http.client.HTTPConnection | None = None,
) -> Response:
    """One HTTP request (on `connection` when given, to reuse it)."""
    own = connection is None
    if own:
        parts = urlsplit(base_url)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=dict(headers or {}))
        answer = connection.getresponse()
        return Response(answer.status, dict(answer.getheaders()), answer.read())
    finally:
        if own:
            connection.close()


def post(
    base_url: str, body: bytes, content_type: str | None, timeout: float = 60.0, **headers: str
) -> Response:
    sent = {"Content-Type": content_type} if content_type else {}
    sent.update({key.replace("_", "-"): value for key, value in headers.items()})
    return request(base_url, "POST", "/invocations", body, sent, timeout=timeout)


def get(base_url: str, path: str, timeout: float = 10.0) -> Response:
    return request(base_url, "GET", path, timeout=timeout)


def wait_until_ready(base_url: str, timeout: float = READY_TIMEOUT_S, process=None) -> float:
    """Poll /ping until it answers 200; returns the seconds waited. Bounded by `timeout`."""
    started = time.monotonic()
    while True:
        try:
            if get(base_url, "/ping", timeout=5).status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was ready")
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{base_url}/ping not 200 after {timeout:.0f} s")
        time.sleep(0.05)


def check_serves_jpeg(base_url: str, jpeg: bytes, timeout: float = READY_TIMEOUT_S) -> dict:
    """The serving check for any base URL (local process or the built image): /ping turns 200,
    a JPEG gets 200 with the response shape of container/serving/responses.py, and the
    execution parameters answer. Returns the JPEG's response for further checks."""
    wait_until_ready(base_url, timeout)
    answer = post(base_url, jpeg, "image/jpeg")
    assert answer.status == 200, answer
    assert answer.headers.get("Content-Type") == "application/json"
    result = answer.json()
    assert set(result) == {"model", "width", "height", "detections"}, result
    assert set(result["model"]) == {"export", "file", "input_size"}
    for detection in result["detections"]:
        assert set(detection) == {
            "label",
            "label_id",
            "label_index",
            "score",
            "box",
            "normalized_box",
        }
        assert detection["label_id"] == detection["label_index"] + 1
        assert all(0.0 <= value <= 1.0 for value in detection["normalized_box"])
    parameters = get(base_url, "/execution-parameters").json()
    assert set(parameters) == {"MaxConcurrentTransforms", "BatchStrategy", "MaxPayloadInMB"}
    return result


class ServerProcess:
    """`python -m container serve` on a free loopback port; `with` stops it (SIGTERM)."""

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        workers: int = 1,
        env: Mapping[str, str] | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.command = command or [
            sys.executable,
            "-m",
            "container",
            "serve",
            "--model-dir",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> ServerProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command, env=self.env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> float:
        return wait_until_ready(self.base_url, timeout, self.process)

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        return self.process.returncode

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pids(self) -> list[int]:
        """The master and its workers."""
        assert self.process is not None
        master = self.process.pid
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        return [master, *map(int, children)]

    def rss_bytes(self) -> int:
        """Resident memory of the master and all workers together."""
        total = 0
        for pid in self.pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG header declaring width x height RGB pixels, with one compressed row: a few
    hundred bytes that would decode to width * height * 3 bytes (7.5 GB by default)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + b"\x00" * (3 * width), 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", row)
        + png_chunk(b"IEND", b"")
    )


def encode_image(pixels, image_format: str = "JPEG", **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=image_format, **options)
    return buffer.getvalue()
