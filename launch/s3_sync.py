"""Upload a channel folder to S3: parallel, multipart, skip-unchanged, resumable.

Unchanged files are recognised without extra requests: one listing gives every object's size
and ETag, and the ETag of an unencrypted (SSE-S3) object is a checksum we can compute locally -
the MD5 of the file, or for a multipart upload the MD5 of the parts' MD5s plus "-N". The
part size is not stored, so it is derived: our own part size for that file, the AWS CLI's 8 MiB,
or the smallest whole-MiB size that gives N parts; files uploaded by another tool or with another
--part-size-mb are then recognised without re-sending them. Objects whose ETag is not an MD5
(SSE-KMS) are uploaded again: correct, only slower.

S3 allows at most 10,000 parts of 5 MiB to 5 GiB each (the last part may be smaller), so a big
file's parts grow beyond the requested size when needed (`part_size_for`).

An interrupted multipart upload stays pending in S3; the next run lists pending uploads, keeps
every part whose size and MD5 match the local file, and sends only the rest. Pending uploads of
files that are skipped (unchanged) or sent in one PUT are aborted: S3 bills their parts.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
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

from sagemaker_tfod.launch.errors import LaunchError, aws_action
from sagemaker_tfod.launch.s3_uri import parse_s3_uri

log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MIB  # the AWS CLI's multipart_chunksize, so ETags agree
GIB = 1024 * MIB
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
MAX_PART_SIZE = 5 * GIB  # S3's maximum part (and single PUT) size
MAX_PARTS = 10_000  # S3's maximum number of parts in one upload
MAX_OBJECT_SIZE = 5 * 1024 * GIB  # S3's maximum object size, 5 TiB
DEFAULT_WORKERS = 16

# Part sizes other tools use: AWS CLI / boto3 (8 MiB), this tool's minimum, s3cmd (15 MiB),
# and round sizes people pass by hand; tried when a remote "-N" ETag must be reproduced.
COMMON_PART_SIZES = tuple(n * MIB for n in (8, 5, 16, 15, 32, 64, 100, 128, 256, 512))
MAX_ETAG_GUESSES = 4

_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")


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
    aborted_uploads: int = 0
    bytes_sent: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        rate = self.bytes_sent / MIB / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{len(self.uploaded)} uploaded, {len(self.skipped)} unchanged (skipped), "
            f"{self.resumed_parts} part(s) resumed, {self.aborted_uploads} stale upload(s) "
            f"aborted, {self.bytes_sent / MIB:.1f} MiB sent "
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


def check_part_size(part_size: int) -> None:
    """The requested part size must be one S3 accepts (5 MiB to 5 GiB)."""
    if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
        raise LaunchError(
            f"--part-size-mb {part_size / MIB:g} is outside S3's part size limits; use "
            f"{MIN_PART_SIZE // MIB} to {MAX_PART_SIZE // MIB} MiB"
        )


def part_size_for(size: int, requested: int) -> int:
    """The part size of a `size`-byte multipart upload: at least `requested`, large enough for
    S3's 10,000-part limit, rounded up to whole MiB."""
    check_part_size(requested)
    if size > MAX_OBJECT_SIZE:
        raise LaunchError(f"a {size / GIB:.0f} GiB file is larger than S3's 5 TiB object limit")
    needed = max(requested, math.ceil(size / MAX_PARTS))
    return math.ceil(needed / MIB) * MIB


def part_count(size: int, part_size: int) -> int:
    return max(1, math.ceil(size / part_size))


def etag_part_sizes(size: int, remote_etag: str, own_part_size: int) -> list[int | None]:
    """Part sizes worth checking to reproduce `remote_etag` locally (pure).

    None stands for a single PUT (plain MD5). For an "-N" ETag: `own_part_size`, the AWS CLI's
    and boto3's 8 MiB, other common sizes and the smallest whole-MiB size, each kept only if it
    gives exactly N parts, at most MAX_ETAG_GUESSES of them (each costs a read of the file).
    An ETag that is no MD5 at all (SSE-KMS) gives no candidate: the file is sent again.
    """
    etag = remote_etag.strip('"')
    if _MD5_ETAG.match(etag):
        return [None]
    match = _MULTIPART_ETAG.match(etag)
    if not match:
        return []
    count = int(match.group(1))
    smallest = math.ceil(math.ceil(size / count) / MIB) * MIB
    candidates: list[int | None] = []
    for part_size in (own_part_size, *COMMON_PART_SIZES, max(smallest, MIB)):
        if part_size not in candidates and part_count(size, part_size) == count:
            candidates.append(part_size)
    return candidates[:MAX_ETAG_GUESSES]


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


def local_etag(path: Path, size: int, part_size: int | None) -> str:
    """The ETag S3 gives this file uploaded with `part_size` parts (None: one PUT).

    A file no larger than `part_size` is a single PUT, as this uploader sends it.
    """
    if part_size is None:
        return etag_from_md5s(part_md5s(path, [Part(1, 0, size)]), multipart=False)
    parts = split_parts(size, part_size)
    return etag_from_md5s(part_md5s(path, parts), multipart=len(parts) > 1)


def multipart_etag(path: Path, size: int, part_size: int) -> str:
    """The ETag of a multipart upload, even of one part ("...-1"), as other tools may send."""
    return etag_from_md5s(part_md5s(path, split_parts(size, part_size)), multipart=True)


def is_unchanged(
    local: LocalFile,
    remote: RemoteObject | None,
    etag_of: Callable[[LocalFile, int | None], str],
    own_part_size: int = DEFAULT_PART_SIZE,
) -> bool:
    """Same size and same checksum (the ETag); `etag_of(file, part_size)` (None: one PUT) is
    only called when the sizes agree, once per part size that could explain the remote ETag."""
    if remote is None or remote.size != local.size:
        return False
    wanted = remote.etag.strip('"')
    return any(
        etag_of(local, part_size) == wanted
        for part_size in etag_part_sizes(local.size, wanted, own_part_size)
    )


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
        check_part_size(part_size)
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
        pending = list_pending_uploads(self.s3, self.bucket, self.prefix)
        todo, unchanged = [], []
        for item in files:
            if is_unchanged(item, remote.get(item.key), self._etag, self._part_size(item)):
                unchanged.append(item)
            else:
                todo.append(item)
        report.skipped = [item.key for item in unchanged]
        singles = [item for item in todo if item.size <= self.part_size]
        # Parts of a pending upload of a file skipped or sent whole would never be completed.
        for item in [*unchanged, *singles]:
            report.aborted_uploads += self._abort(item.key, pending.pop(item.key, []))
        multiparts = self._prepare_multiparts(
            [item for item in todo if item.size > self.part_size], pending, report
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

    def _part_size(self, item: LocalFile) -> int:
        return part_size_for(item.size, self.part_size)

    def _etag(self, item: LocalFile, part_size: int | None) -> str:
        if part_size is None:
            return local_etag(item.path, item.size, None)
        return multipart_etag(item.path, item.size, part_size)

    def _abort(self, key: str, upload_ids: Sequence[str]) -> int:
        for upload_id in upload_ids:
            log.info("%s: aborting an unfinished upload that is no longer needed", key)
            with aws_action(f"aborting an unfinished upload of s3://{self.bucket}/{key}"):
                self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        return len(upload_ids)

    def _prepare_multiparts(
        self, files: Sequence[LocalFile], pending: dict[str, list[str]], report: UploadReport
    ) -> list[_Multipart]:
        prepared = []
        for item in files:
            parts = split_parts(item.size, self._part_size(item))
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
        self._abort(item.key, [upload_id for upload_id in upload_ids if upload_id != best[0]])
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
