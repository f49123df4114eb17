"""TFRecord framing: [u64 length][masked crc32c(length)][payload][masked crc32c(payload)]."""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from data_prep.crc32c import crc32c_many, crc32c_small, masked_crc


def frame_records(payloads: Sequence[bytes]) -> bytes:
    """The TFRecord file bytes holding `payloads`, in order."""
    return b"".join(framed_parts(payloads))


def write_records(path: Path | str, payloads: Sequence[bytes]) -> None:
    """Write a TFRecord file holding `payloads` (no joined copy of the whole file)."""
    with open(path, "wb") as handle:
        handle.writelines(framed_parts(payloads))


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
    """Payloads of a TFRecord file; checks both CRCs unless `verify` is False."""
    data = Path(path).read_bytes()
    position = 0
    while position < len(data):
        if position + 12 > len(data):
            raise ValueError(f"{path}: truncated record header at byte {position}")
        (length,) = struct.unpack_from("<Q", data, position)
        (length_crc,) = struct.unpack_from("<I", data, position + 8)
        start = position + 12
        end = start + length
        if end + 4 > len(data):
            raise ValueError(f"{path}: truncated record at byte {position}")
        payload = data[start:end]
        if verify:
            (payload_crc,) = struct.unpack_from("<I", data, end)
            if masked_crc(crc32c_small(data[position : position + 8])) != length_crc:
                raise ValueError(f"{path}: corrupt length checksum at byte {position}")
            if masked_crc(crc32c_many([payload])[0]) != payload_crc:
                raise ValueError(f"{path}: corrupt payload checksum at byte {position}")
        yield payload
        position = end + 4
