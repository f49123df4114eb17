"""Shared by the launch tests and benchmarks/bench_upload.py.

`moto_server`: a real moto server (HTTP on loopback) in a subprocess. `FileServer`: files over
HTTP on loopback, as Google Cloud Storage serves them (for `launch pretrained fetch`).
`sagemaker_metrics`: what SageMaker does with a job's MetricDefinitions, so tests check the
regexes the job sends.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MOTO_START_TIMEOUT_S = 60.0


class MotoServerError(RuntimeError):
    """The moto server did not come up (moto[server] missing, or the port was taken)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server(workdir: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Run `python -m moto.server` on a free loopback port; yields its endpoint URL.

    The server runs in `workdir` (its request recorder writes a file there), and is stopped on
    exit.
    """
    port = free_port()
    recording = workdir / "moto_recording"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "MOTO_RECORDER_FILEPATH": str(recording), **(extra_env or {})},
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, endpoint)
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_until_up(process: subprocess.Popen, endpoint: str) -> None:
    deadline = time.monotonic() + MOTO_START_TIMEOUT_S
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2).read()
            return
        except OSError:
            if process.poll() is not None:
                raise MotoServerError(
                    f"moto server exited with code {process.returncode}; is moto[server] "
                    "installed (requirements-dev.lock)?"
                ) from None
            if time.monotonic() > deadline:
                raise MotoServerError(
                    f"moto server not answering at {endpoint} after {MOTO_START_TIMEOUT_S:.0f} s"
                ) from None
            time.sleep(0.2)


def sagemaker_metrics(
    lines: Iterable[str], definitions: Sequence[Mapping[str, str]]
) -> dict[str, list[float]]:
    """Metric name -> values: the first group of each definition's regex, line by line."""
    lines = list(lines)
    found: dict[str, list[float]] = {}
    for definition in definitions:
        regex = re.compile(definition["Regex"])
        for line in lines:
            match = regex.search(line)
            if match:
                found.setdefault(definition["Name"], []).append(float(match.group(1)))
    return found


class FileServer:
    """Files over HTTP on loopback, answered as Google Cloud Storage answers: `x-goog-hash`
    (MD5 and CRC32C of the whole object, base64) on every response, `Range: bytes=N-` ->
    206 with Content-Range. Faults on request: `cut` (path -> bytes) sends that many bytes of
    the first response of a path and closes the connection; `wrong_hash` paths announce the
    checksums of other bytes. Records (path, Range header) per request; answers at most
    `max_requests`, then 503, and stops when the `with` block ends."""

    def __init__(
        self,
        files: Mapping[str, bytes],
        cut: Mapping[str, int] | None = None,
        wrong_hash: Sequence[str] = (),
        max_requests: int = 50,
    ) -> None:
        self.files = dict(files)
        self.cut = dict(cut or {})
        self.wrong_hash = set(wrong_hash)
        self.max_requests = max_requests
        self.requests: list[tuple[str, str | None]] = []
        self._server: ThreadingHTTPServer | None = None

    @staticmethod
    def goog_hash(data: bytes) -> str:
        import google_crc32c

        md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
        crc = base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
        return f"crc32c={crc},md5={md5}"

    def __enter__(self) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append((self.path, self.headers.get("Range")))
                data = owner.files.get(self.path)
                if len(owner.requests) > owner.max_requests:
                    self.send_error(503, "request limit of the test server")
                    return
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
                if match:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                hashed = b"other bytes" if self.path in owner.wrong_hash else data
                self.send_header("x-goog-hash", owner.goog_hash(hashed))
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                cut = owner.cut.pop(self.path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
