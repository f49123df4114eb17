"""Shared by the launch tests and benchmarks/bench_upload.py.

`moto_server`: a real moto server (HTTP on loopback) in a subprocess. `sagemaker_metrics`: what
SageMaker does with a job's MetricDefinitions, so tests check the regexes the job sends.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
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
