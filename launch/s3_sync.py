"""Upload a channel folder to S3: parallel, multipart, skip-unchanged, resumable.

Unchanged files are recognised without extra requests: one listing gives every object's size
and ETag, and the ETag of an unencrypted (SSE-S3) object is a checksum we can compute locally -
the MD5 of the file, or for a multipart upload the MD5 of the parts' MD5s plus "-N". Using the
same part size as the AWS CLI (8 MiB) makes files uploaded by either tool comparable. Objects
whose ETag is not an MD5 (SSE-KMS) are uploaded again: correct, only slower.

An interrupted multipart upload stays pending in S3; the next run lists pending uploads, keeps
every part whose size and MD5 match the local file, and sends only the rest.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from launch.errors import LaunchError, aws_action

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB  # the AWS CLI's multipart_chunksize, so ETags agree
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
DEFAULT_WORKERS = 16

_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/a/b/` -> ("bucket", "a/b"); a malformed URI is a user error."""
    match = _S3_URI.match(uri.strip())
    if not match:
        raise LaunchError(f"'{uri}' is not an S3 URI; write s3://bucket/prefix")
    return match.group(1), (match.group(2) or "").strip("/")


@dataclass(frozen=True)
class LocalFile:
    path: Path
    key: str
    size: int


@dataclass(frozen=True)
class RemoteObject:
    size: int
    etag: str


@dataclass(frozen=True)
class Part:
    number: int  # 1-based, as S3 numbers them
    offset: int
    length: int


@dataclass
class UploadReport:
    uploaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    resumed_parts: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.bytes_sent / MIB / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{len(self.uploaded)} uploaded, {len(self.skipped)} unchanged (skipped), "
            f"{self.resumed_parts} part(s) resumed, {self.bytes_sent / MIB:.1f} MiB sent "
            f"in {self.seconds:.1f} s ({rate:.1f} MiB/s)"
        )


# ---- pure logic -------------------------------------------------------------------------


def list_local_files(channel_dir: Path, prefix: str) -> list[LocalFile]:
    """Every regular file under `channel_dir`, keyed `prefix/relative/path` (sorted)."""
    if not channel_dir.is_dir():
        raise LaunchError(f"{channel_dir}: not a folder; pass the channel folder data_prep built")
    files = []
    for root, dirs, names in os.walk(channel_dir):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if not path.is_file():
                continue
            relative = path.relative_to(channel_dir).as_posix()
            key = f"{prefix}/{relative}" if prefix else relative
            files.append(LocalFile(path=path, key=key, size=path.stat().st_size))
    if not files:
        raise LaunchError(f"{channel_dir}: the folder is empty; nothing to upload")
    return files


def split_parts(size: int, part_size: int) -> list[Part]:
    """Byte ranges of a multipart upload; a file of at most `part_size` is a single PUT."""
    if size <= part_size:
        return [Part(1, 0, size)]
    return [
        Part(index + 1, offset, min(part_size, size - offset))
        for index, offset in enumerate(range(0, size, part_size))
    ]


def part_md5s(path: Path, parts: Sequence[Part]) -> list[bytes]:
    """The binary MD5 of each part of the file."""
    digests = []
    with path.open("rb") as stream:
        for part in parts:
            stream.seek(part.offset)
            digest = hashlib.md5(usedforsecurity=False)
            remaining = part.length
            while remaining:
                chunk = stream.read(min(remaining, MIB))
                if not chunk:
                    raise LaunchError(f"{path}: the file shrank while reading; retry the upload")
                digest.update(chunk)
                remaining -= len(chunk)
            digests.append(digest.digest())
    return digests


def etag_from_md5s(md5s: Sequence[bytes], multipart: bool) -> str:
    """S3's ETag: the MD5 for a single PUT, MD5(concatenated part MD5s)-N for multipart."""
    if not multipart:
        return md5s[0].hex()
    combined = hashlib.md5(b"".join(md5s), usedforsecurity=False).hexdigest()
    return f"{combined}-{len(md5s)}"


def local_etag(path: Path, size: int, part_size: int) -> str:
    parts = split_parts(size, part_size)
    return etag_from_md5s(part_md5s(path, parts), multipart=len(parts) > 1)


def is_unchanged(
    local: LocalFile, remote: RemoteObject | None, etag_of: Callable[[LocalFile], str]
) -> bool:
    """Same size and same checksum (the ETag); `etag_of` is only called when sizes agree."""
    if remote is None or remote.size != local.size:
        return False
    return remote.etag.strip('"') == etag_of(local)


def reusable_parts(
    parts: Sequence[Part], md5s: Sequence[bytes], uploaded: Iterable[dict[str, Any]]
) -> dict[int, str]:
    """Parts already in a pending upload whose size and MD5 match the local file: number -> ETag."""
    wanted = {part.number: (part.length, md5.hex()) for part, md5 in zip(parts, md5s, strict=True)}
    reuse = {}
    for item in uploaded:
        number = int(item["PartNumber"])
        etag = str(item["ETag"])
        if wanted.get(number) == (int(item["Size"]), etag.strip('"')):
            reuse[number] = etag
    return reuse


# ---- I/O --------------------------------------------------------------------------------


def list_remote(s3: Any, bucket: str, prefix: str) -> dict[str, RemoteObject]:
    with aws_action(f"listing s3://{bucket}/{prefix}"):
        paginator = s3.get_paginator("list_objects_v2")
        listing = {}
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            for item in page.get("Contents", []):
                listing[item["Key"]] = RemoteObject(size=int(item["Size"]), etag=item["ETag"])
    return listing


def list_pending_uploads(s3: Any, bucket: str, prefix: str) -> dict[str, list[str]]:
    """Key -> upload ids of unfinished multipart uploads (newest last)."""
    with aws_action(f"listing unfinished uploads in s3://{bucket}/{prefix}"):
        paginator = s3.get_paginator("list_multipart_uploads")
        pending: dict[str, list[tuple[Any, str]]] = {}
        for page in paginator.paginate(Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""):
            for item in page.get("Uploads", []):
                pending.setdefault(item["Key"], []).append((item["Initiated"], item["UploadId"]))
    return {key: [upload for _, upload in sorted(items)] for key, items in pending.items()}


def _read_range(path: Path, part: Part) -> bytes:
    with path.open("rb") as stream:
        stream.seek(part.offset)
        data = stream.read(part.length)
    if len(data) != part.length:
        raise LaunchError(f"{path}: the file changed while uploading; run the upload again")
    return data


@dataclass
class _Multipart:
    file: LocalFile
    parts: list[Part]
    md5s: list[bytes]
    upload_id: str
    etags: dict[int, str]


class ChannelUploader:
    """One upload run: plan, then send puts and parts through one thread pool."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        prefix: str,
        part_size: int = DEFAULT_PART_SIZE,
        workers: int = DEFAULT_WORKERS,
        progress: bool = True,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise LaunchError(
                f"part size must be at least {MIN_PART_SIZE // MIB} MiB (S3's minimum)"
            )
        self.s3 = s3
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.workers = max(1, workers)
        self.progress = progress
        self._lock = threading.Lock()

    def upload(self, files: Sequence[LocalFile]) -> UploadReport:
        started = time.perf_counter()
        report = UploadReport()
        remote = list_remote(self.s3, self.bucket, self.prefix)
        todo = []
        for item in files:
            if is_unchanged(item, remote.get(item.key), self._etag):
                report.skipped.append(item.key)
            else:
                todo.append(item)
        singles = [item for item in todo if item.size <= self.part_size]
        multiparts = self._prepare_multiparts(
            [item for item in todo if item.size > self.part_size], report
        )
        units: list[Callable[[], int]] = [lambda item=item: self._put(item) for item in singles]
        for upload in multiparts:
            units += [
                lambda upload=upload, part=part: self._send_part(upload, part)
                for part in upload.parts
                if part.number not in upload.etags
            ]
        total = sum(item.size for item in singles) + sum(
            part.length for upload in multiparts for part in upload.parts
        )
        done_already = sum(
            part.length
            for upload in multiparts
            for part in upload.parts
            if part.number in upload.etags
        )
        with (
            tqdm(
                total=total,
                initial=done_already,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"upload s3://{self.bucket}/{self.prefix}",
                disable=not self.progress,
            ) as bar,
            ThreadPoolExecutor(max_workers=self.workers) as pool,
        ):
            futures = [pool.submit(unit) for unit in units]
            try:
                for future in as_completed(futures):
                    sent = future.result()
                    report.bytes_sent += sent
                    bar.update(sent)
                for completed in pool.map(self._complete, multiparts):
                    log.debug("completed %s", completed)
            except BaseException:
                # Stop queued work at once; sent parts stay pending in S3 for the next run.
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        report.uploaded = [item.key for item in todo]
        report.seconds = time.perf_counter() - started
        return report

    def _etag(self, item: LocalFile) -> str:
        return local_etag(item.path, item.size, self.part_size)

    def _prepare_multiparts(
        self, files: Sequence[LocalFile], report: UploadReport
    ) -> list[_Multipart]:
        if not files:
            return []
        pending = list_pending_uploads(self.s3, self.bucket, self.prefix)
        prepared = []
        for item in files:
            parts = split_parts(item.size, self.part_size)
            md5s = part_md5s(item.path, parts)
            upload_id, etags = self._resume(item, parts, md5s, pending.get(item.key, []))
            if upload_id is None:
                with aws_action(f"starting the upload of {item.path}"):
                    upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=item.key)[
                        "UploadId"
                    ]
            else:
                report.resumed_parts += len(etags)
                log.info(
                    "%s: resuming, %d of %d parts already in S3", item.key, len(etags), len(parts)
                )
            prepared.append(_Multipart(item, parts, md5s, upload_id, etags))
        return prepared

    def _resume(
        self, item: LocalFile, parts: list[Part], md5s: list[bytes], upload_ids: list[str]
    ) -> tuple[str | None, dict[int, str]]:
        """Pick the pending upload with most matching parts; abort the other stale ones."""
        best: tuple[str | None, dict[int, str]] = (None, {})
        for upload_id in upload_ids:
            with aws_action(f"listing the parts of an unfinished upload of {item.key}"):
                listed: list[dict[str, Any]] = []
                for page in self.s3.get_paginator("list_parts").paginate(
                    Bucket=self.bucket, Key=item.key, UploadId=upload_id
                ):
                    listed += page.get("Parts", [])
            reuse = reusable_parts(parts, md5s, listed)
            if best[0] is None or len(reuse) > len(best[1]):
                best = (upload_id, reuse)
        for upload_id in upload_ids:
            if upload_id != best[0]:
                with aws_action(f"aborting a stale upload of {item.key}"):
                    self.s3.abort_multipart_upload(
                        Bucket=self.bucket, Key=item.key, UploadId=upload_id
                    )
        return best

    def _put(self, item: LocalFile) -> int:
        data = item.path.read_bytes()
        if len(data) != item.size:
            raise LaunchError(f"{item.path}: the file changed while uploading; run it again")
        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        with aws_action(f"uploading {item.path} to s3://{self.bucket}/{item.key}"):
            self.s3.put_object(Bucket=self.bucket, Key=item.key, Body=data, ContentMD5=md5)
        return item.size

    def _send_part(self, upload: _Multipart, part: Part) -> int:
        data = _read_range(upload.file.path, part)
        md5 = upload.md5s[part.number - 1]
        with aws_action(f"uploading part {part.number} of {upload.file.path}"):
            response = self.s3.upload_part(
                Bucket=self.bucket,
                Key=upload.file.key,
                UploadId=upload.upload_id,
                PartNumber=part.number,
                Body=data,
                ContentMD5=base64.b64encode(md5).decode(),
            )
        with self._lock:
            upload.etags[part.number] = response["ETag"]
        return part.length

    def _complete(self, upload: _Multipart) -> str:
        with aws_action(f"finishing the upload of {upload.file.path}"):
            self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=upload.file.key,
                UploadId=upload.upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": number, "ETag": etag}
                        for number, etag in sorted(upload.etags.items())
                    ]
                },
            )
        return upload.file.key


def upload_channel(
    s3: Any,
    channel_dir: Path,
    destination: str,
    part_size: int = DEFAULT_PART_SIZE,
    workers: int = DEFAULT_WORKERS,
    progress: bool = True,
) -> UploadReport:
    """Upload every file of `channel_dir` under the `destination` s3:// prefix."""
    bucket, prefix = parse_s3_uri(destination)
    files = list_local_files(channel_dir, prefix)
    uploader = ChannelUploader(s3, bucket, prefix, part_size, workers, progress)
    return uploader.upload(files)
