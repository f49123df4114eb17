"""Upload a 2,000-file channel to a local moto S3 server: launch's uploader vs a boto3 loop.

    .venv/bin/python benchmarks/bench_upload.py [--files 2000] [--kib 32] [--workers 16]

Prints the wall time of each, the ratio, and the time of a re-upload where every file is
unchanged (one listing plus local checksums, no PUTs). Loopback numbers measure request
overhead and parallelism, not real S3 bandwidth.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from launch.s3_sync import upload_channel


def start_moto(workdir: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/data.json", timeout=2).read()
            return process, endpoint
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("moto server did not start")


def make_channel(folder: Path, files: int, kib: int) -> int:
    folder.mkdir(parents=True)
    total = 0
    for index in range(files):
        data = os.urandom(kib * 1024 + index % 1024)
        (folder / f"image-{index:05d}.jpg").write_bytes(data)
        total += len(data)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--kib", type=int, default=32, help="size of each file in KiB")
    parser.add_argument("--workers", type=int, default=16)
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="bench-upload-")
    process, endpoint = start_moto(workdir)
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(max_pool_connections=args.workers + 4),
        )
        s3.create_bucket(Bucket="bench-upload")
        with tempfile.TemporaryDirectory() as tmp:
            channel = Path(tmp) / "channel"
            total = make_channel(channel, args.files, args.kib)
            print(f"channel: {args.files} files, {total / 2**20:.1f} MiB; server {endpoint}")

            started = time.perf_counter()
            for path in sorted(channel.iterdir()):
                s3.upload_file(str(path), "bench-upload", f"loop/{path.name}")
            loop_seconds = time.perf_counter() - started
            print(f"boto3 one-file-at-a-time loop: {loop_seconds:7.2f} s")

            report = upload_channel(
                s3, channel, "s3://bench-upload/launch", workers=args.workers, progress=False
            )
            assert len(report.uploaded) == args.files
            print(f"launch upload ({args.workers} workers):  {report.seconds:7.2f} s")
            print(f"speed-up (loop / launch):      {loop_seconds / report.seconds:7.2f}x")

            again = upload_channel(
                s3, channel, "s3://bench-upload/launch", workers=args.workers, progress=False
            )
            assert len(again.skipped) == args.files and not again.uploaded
            print(f"launch re-upload, all unchanged: {again.seconds:5.2f} s (0 files sent)")
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
