"""Read a training channel's TFRecord shards without TensorFlow.

A TFRecord is a run of [length uint64][crc uint32][data][crc uint32]; each record here is a
`tf.train.Example`, whose protobuf wire format is small enough to decode by hand. That keeps
`python -m edge evaluate` on TFLite models free of TensorFlow on a Raspberry Pi.
"""

from __future__ import annotations

import pathlib
import struct
from collections.abc import Iterator

from edge.errors import EdgeError

Feature = list[bytes] | list[float] | list[int]


def read_records(path: str | pathlib.Path) -> Iterator[bytes]:
    """The records of one TFRecord file (CRCs not checked: the shards are local files)."""
    path = pathlib.Path(path)
    with path.open("rb") as stream:
        while True:
            header = stream.read(12)
            if not header:
                return
            if len(header) != 12:
                raise EdgeError(f"{path}: truncated TFRecord header; rebuild the channel")
            (length,) = struct.unpack("<Q", header[:8])
            data = stream.read(length)
            if len(data) != length or len(stream.read(4)) != 4:
                raise EdgeError(f"{path}: truncated TFRecord; rebuild the channel")
            yield data


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(buffer: bytes) -> Iterator[tuple[int, int, bytes | int]]:
    """(field number, wire type, value) for each field of one protobuf message."""
    position = 0
    while position < len(buffer):
        key, position = _varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(buffer, position)
        elif wire_type == 2:
            length, position = _varint(buffer, position)
            value = buffer[position : position + length]
            position += length
        elif wire_type == 5:
            value = buffer[position : position + 4]
            position += 4
        elif wire_type == 1:
            value = buffer[position : position + 8]
            position += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")
        yield number, wire_type, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _feature_values(feature: bytes) -> Feature:
    """tf.train.Feature: oneof bytes_list (1), float_list (2), int64_list (3)."""
    for kind, _, payload in _fields(feature):
        values: list = []
        for _, wire_type, item in _fields(payload):
            if kind == 1:
                values.append(bytes(item))
            elif kind == 2:
                if wire_type == 2:  # packed
                    values.extend(struct.unpack(f"<{len(item) // 4}f", item))
                else:
                    values.append(struct.unpack("<f", item)[0])
            elif kind == 3:
                if wire_type == 2:  # packed varints
                    position = 0
                    while position < len(item):
                        number, position = _varint(item, position)
                        values.append(_signed64(number))
                else:
                    values.append(_signed64(item))
        return values
    return []


def parse_example(record: bytes) -> dict[str, Feature]:
    """Serialized tf.train.Example -> {feature key: list of values}."""
    features: dict[str, Feature] = {}
    for number, _, features_message in _fields(record):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features_message):
            if entry_number != 1:
                continue
            key, value = "", b""
            for field, _, item in _fields(entry):
                if field == 1:
                    key = bytes(item).decode("utf-8")
                elif field == 2:
                    value = bytes(item)
            features[key] = _feature_values(value)
    return features
