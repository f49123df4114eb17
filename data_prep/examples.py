"""Annotated image -> serialized `tf.train.Example`, hand-encoded in the protobuf wire format.

The messages involved are tiny (Example > Features > map<string, Feature> > Bytes/Float/
Int64List), so writing the bytes directly avoids TensorFlow and protobuf start-up and is
several times faster than building message objects.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from sagemaker_tfod.data_prep import schema

_LENGTH_DELIMITED = 2
_ONE_BYTE = [bytes((value,)) for value in range(128)]


def _varint(value: int) -> bytes:
    if 0 <= value < 128:
        return _ONE_BYTE[value]
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def bytes_feature(values: Sequence[bytes]) -> bytes:
    """Feature{bytes_list: BytesList{value: values}}."""
    inner = b"".join([b"\x0a" + _varint(len(value)) + value for value in values])
    return b"\x0a" + _varint(len(inner)) + inner


def float_feature(values: Sequence[float]) -> bytes:
    """Feature{float_list: FloatList{value: values}} (packed little-endian float32)."""
    if not values:
        return b"\x12\x00"
    packed = struct.pack(f"<{len(values)}f", *values)
    inner = b"\x0a" + _varint(len(packed)) + packed
    return b"\x12" + _varint(len(inner)) + inner


def int64_feature(values: Sequence[int]) -> bytes:
    """Feature{int64_list: Int64List{value: values}} (packed varints)."""
    if not values:
        return b"\x1a\x00"
    if all(0 <= value < 128 for value in values):
        packed = bytes(values)
    else:
        packed = b"".join([_varint(int(value)) for value in values])
    inner = b"\x0a" + _varint(len(packed)) + packed
    return b"\x1a" + _varint(len(inner)) + inner


# Per feature key, the start of its map entry: field 1 (the key), then the tag of field 2
# (the Feature; its length and bytes follow).
_ENTRY_PREFIX: dict[str, bytes] = {}


def _entry_prefix(key: str) -> bytes:
    prefix = _ENTRY_PREFIX.get(key)
    if prefix is None:
        raw = key.encode()
        prefix = _ENTRY_PREFIX[key] = b"\x0a" + _varint(len(raw)) + raw + b"\x12"
    return prefix


def _entry(key: str, feature: bytes) -> bytes:
    body = _entry_prefix(key) + _varint(len(feature)) + feature
    return b"\x0a" + _varint(len(body)) + body


def example_bytes(features: dict[str, bytes]) -> bytes:
    """Example{features: Features{feature: map}} from encoded Feature messages by key
    (keys in sorted order, as protobuf's deterministic serialisation writes a map)."""
    entries = b"".join([_entry(key, features[key]) for key in sorted(features)])
    return b"\x0a" + _varint(len(entries)) + entries


def _large_bytes_entry(key: str, value: bytes) -> tuple[bytes, int]:
    """Head bytes of the map entry holding one large bytes value, and the entry length;
    the value itself follows the head, so it is copied once, in the final join."""
    bytes_list_len = 1 + len(_varint(len(value))) + len(value)
    feature_head = b"\x0a" + _varint(bytes_list_len) + b"\x0a" + _varint(len(value))
    feature_len = len(feature_head) + len(value)
    body_head = _entry_prefix(key) + _varint(feature_len)
    head = b"\x0a" + _varint(len(body_head) + feature_len) + body_head + feature_head
    return head, len(head) + len(value)


@dataclass(frozen=True)
class ExampleBoxes:
    """Boxes of one image, normalised to [0, 1], with their class ids and names."""

    xmin: Sequence[float]
    ymin: Sequence[float]
    xmax: Sequence[float]
    ymax: Sequence[float]
    class_ids: Sequence[int]
    class_names: Sequence[str]
    difficult: Sequence[int]
    truncated: Sequence[int]


def detection_example(
    *,
    encoded: bytes,
    image_format: str,
    width: int,
    height: int,
    filename: str,
    source_id: int,
    sha256: str,
    boxes: ExampleBoxes,
) -> bytes:
    """Serialized tf.train.Example in the TF Object Detection API schema.

    `source_id` is written as a decimal string: Model Garden's evaluator converts it to a
    number and fails on anything else.
    """
    areas = [
        (x1 - x0) * (y1 - y0) * width * height
        for x0, y0, x1, y1 in zip(boxes.xmin, boxes.ymin, boxes.xmax, boxes.ymax, strict=True)
    ]
    small = {
        schema.IMAGE_FORMAT: bytes_feature([image_format.encode()]),
        schema.IMAGE_HEIGHT: int64_feature([height]),
        schema.IMAGE_WIDTH: int64_feature([width]),
        schema.IMAGE_FILENAME: bytes_feature([filename.encode()]),
        schema.IMAGE_SOURCE_ID: bytes_feature([str(source_id).encode()]),
        schema.IMAGE_KEY_SHA256: bytes_feature([sha256.encode()]),
        schema.BBOX_XMIN: float_feature(boxes.xmin),
        schema.BBOX_XMAX: float_feature(boxes.xmax),
        schema.BBOX_YMIN: float_feature(boxes.ymin),
        schema.BBOX_YMAX: float_feature(boxes.ymax),
        schema.CLASS_TEXT: bytes_feature([name.encode() for name in boxes.class_names]),
        schema.CLASS_LABEL: int64_feature(boxes.class_ids),
        schema.OBJECT_DIFFICULT: int64_feature(boxes.difficult),
        schema.OBJECT_TRUNCATED: int64_feature(boxes.truncated),
        schema.OBJECT_AREA: float_feature(areas),
        schema.OBJECT_IS_CROWD: int64_feature([0] * len(areas)),
    }
    # The same bytes as example_bytes({IMAGE_ENCODED: ..., **small}): sorted keys.
    parts: list[bytes] = []
    length = 0
    for key in sorted([*small, schema.IMAGE_ENCODED]):
        if key == schema.IMAGE_ENCODED:
            head, entry_len = _large_bytes_entry(key, encoded)
            parts += (head, encoded)
        else:
            entry = _entry(key, small[key])
            parts.append(entry)
            entry_len = len(entry)
        length += entry_len
    return b"".join([b"\x0a", _varint(length), *parts])


# ---- reading back (stats, tests): a minimal decoder for the messages written above ----


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _iter_fields(data: bytes):
    """(field number, wire type, value) for each field; value is bytes or int."""
    position = 0
    while position < len(data):
        tag, position = _read_varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == _LENGTH_DELIMITED:
            length, position = _read_varint(data, position)
            yield number, wire_type, data[position : position + length]
            position += length
        elif wire_type == 0:
            value, position = _read_varint(data, position)
            yield number, wire_type, value
        elif wire_type == 5:
            yield number, wire_type, data[position : position + 4]
            position += 4
        elif wire_type == 1:
            yield number, wire_type, data[position : position + 8]
            position += 8
        else:
            raise ValueError(f"unsupported protobuf wire type {wire_type}")


def parse_example(data: bytes) -> dict[str, list]:
    """Feature key -> list of values (bytes, float or int) of a serialized Example."""
    parsed: dict[str, list] = {}
    for _, _, features in _iter_fields(data):
        for _, _, entry in _iter_fields(features):
            key, feature = "", b""
            for number, _, value in _iter_fields(entry):
                if number == 1:
                    key = value.decode()
                else:
                    feature = value
            parsed[key] = _parse_feature(feature)
    return parsed


def _parse_feature(feature: bytes) -> list:
    values: list = []
    for kind, _, payload in _iter_fields(feature):
        for _, wire_type, value in _iter_fields(payload):
            if kind == 1:
                values.append(bytes(value))
            elif kind == 2:
                if wire_type == _LENGTH_DELIMITED:
                    values.extend(struct.unpack(f"<{len(value) // 4}f", value))
                else:
                    values.append(struct.unpack("<f", value)[0])
            elif wire_type == _LENGTH_DELIMITED:
                position = 0
                while position < len(value):
                    number, position = _read_varint(value, position)
                    values.append(number - (1 << 64) if number >= 1 << 63 else number)
            else:
                values.append(value - (1 << 64) if value >= 1 << 63 else value)
    return values
