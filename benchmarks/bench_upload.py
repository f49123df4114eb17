"""Upload a 2,000-file channel to a local moto S3 server: launch's uploader vs a boto3 loop.

    .venv/bin/python benchmarks/bench_upload.py [--files 2000] [--kib 32] [--workers 16]

Prints the wall time of each, the ratio, and the time of a re-upload where every file is
unchanged (one listing plus local checksums, no PUTs). Loopback numbers measure request
overhead and parallelism, not real S3 bandwidth.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from launch_helpers import moto_server  # noqa: E402 - after the path set-up above

from sagemaker_tfod.launch.s3_sync import DEFAULT_WORKERS, UploadReport, upload_channel  # noqa: E402


class BenchmarkError(RuntimeError):
    """The uploader did not do what the benchmark measures; the timing would be meaningless."""


def check_report(report: UploadReport, uploaded: int, skipped: int, what: str) -> None:
    if (len(report.uploaded), len(report.skipped)) != (uploaded, skipped):
        raise BenchmarkError(
            f"{what}: expected {uploaded} uploaded and {skipped} skipped, got "
            f"{len(report.uploaded)} and {len(report.skipped)}"
        )


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
    parser.add_argument(
        "--files", type=int, default=2000, help="files in the channel (%(default)s)"
    )
    parser.add_argument("--kib", type=int, default=32, help="size of each file in KiB")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="parallel requests of the launch uploader (%(default)s)",
    )
    args = parser.parse_args()
    if args.files < 1 or args.kib < 0 or args.workers < 1:
        parser.error("--files and --workers must be at least 1, --kib at least 0")

    with (
        tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp,
        moto_server(Path(tmp)) as endpoint,
    ):
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(max_pool_connections=args.workers + 4),
        )
        s3.create_bucket(Bucket="bench-upload")
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
        check_report(report, uploaded=args.files, skipped=0, what="first upload")
        print(f"launch upload ({args.workers} workers):  {report.seconds:7.2f} s")
        print(f"speed-up (loop / launch):      {loop_seconds / report.seconds:7.2f}x")

        again = upload_channel(
            s3, channel, "s3://bench-upload/launch", workers=args.workers, progress=False
        )
        check_report(again, uploaded=0, skipped=args.files, what="re-upload")
        print(f"launch re-upload, all unchanged: {again.seconds:5.2f} s (0 files sent)")


if __name__ == "__main__":
    main()
