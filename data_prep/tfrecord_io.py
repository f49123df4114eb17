"""TFRecord framing: [u64 length][masked crc32c(length)][payload][masked crc32c(payload)]."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from sagemaker_tfod.data_prep.crc32c import crc32c_many, crc32c_small, masked_crc
from sagemaker_tfod.data_prep.errors import DataPrepError

_REBUILD = "; the file is damaged: build the channel again"


def frame_records(payloads: Sequence[bytes]) -> bytes:
    """The TFRecord file bytes holding `payloads`, in order."""
    return b"".join(framed_parts(payloads))


class RecordWriter:
    """Appends records to a TFRecord file in batches of about `batch_bytes`: checksums are
    computed per batch (the numpy CRC-32C is fastest on many buffers at once), and memory
    stays bounded however large the images of a shard are."""

    def __init__(self, path: Path | str, batch_bytes: int = 32 << 20) -> None:
        self.handle = open(path, "wb")  # noqa: SIM115 - closed in close() / __exit__
        self.batch_bytes = batch_bytes
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def write(self, payload: bytes) -> None:
        self.pending.append(payload)
        self.pending_bytes += len(payload)
        if self.pending_bytes >= self.batch_bytes:
            self.flush()

    def flush(self) -> None:
        try:
            self.handle.writelines(framed_parts(self.pending))
            self.handle.flush()
        except OSError as error:  # e.g. ENOSPC: a failed write() names no file
            raise OSError(error.errno, error.strerror, self.handle.name) from error
        self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            try:
                self.handle.close()
            except OSError as error:
                raise OSError(error.errno, error.strerror, self.handle.name) from error

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        if exc_info[0] is None:
            self.close()
        else:
            self.handle.close()  # failing: the caller removes the file


def framed_parts(payloads: Sequence[bytes]) -> list[bytes]:
    """Header, payload and footer pieces of every record, in file order."""
    payload_crcs = crc32c_many(payloads)
    parts: list[bytes] = []
    for payload, crc in zip(payloads, payload_crcs, strict=True):
        length = struct.pack("<Q", len(payload))
        parts += (
            length,
            struct.pack("<I", masked_crc(crc32c_small(length))),
            payload,
            struct.pack("<I", masked_crc(crc)),
        )
    return parts


def iter_records(path: Path, verify: bool = True) -> Iterator[bytes]:
    """Payloads of a TFRecord file; checks both CRCs unless `verify` is False.
    DataPrepError (a ValueError) for a truncated or corrupt file."""
    data = Path(path).read_bytes()
    position = 0
    while position < len(data):
        if position + 12 > len(data):
            raise DataPrepError(f"{path}: truncated record header at byte {position}" + _REBUILD)
        (length,) = struct.unpack_from("<Q", data, position)
        (length_crc,) = struct.unpack_from("<I", data, position + 8)
        start = position + 12
        end = start + length
        if end + 4 > len(data):
            raise DataPrepError(f"{path}: truncated record at byte {position}" + _REBUILD)
        payload = data[start:end]
        if verify:
            (payload_crc,) = struct.unpack_from("<I", data, end)
            if masked_crc(crc32c_small(data[position : position + 8])) != length_crc:
                raise DataPrepError(
                    f"{path}: corrupt length checksum at byte {position}" + _REBUILD
                )
            if masked_crc(crc32c_many([payload])[0]) != payload_crc:
                raise DataPrepError(
                    f"{path}: corrupt payload checksum at byte {position}" + _REBUILD
                )
        yield payload
        position = end + 4
