"""Read a training channel's TFRecord shards without TensorFlow.

A TFRecord is a run of [length uint64][crc uint32][data][crc uint32]; each record here is a
`tf.train.Example`, decoded by data_prep's TensorFlow-free decoder (the one `stats` uses). That
keeps `python -m edge evaluate` on TFLite models free of TensorFlow on a Raspberry Pi. Records
are streamed, not read whole, so large eval shards fit a Pi's memory.
"""

from __future__ import annotations

import pathlib
import struct
from collections.abc import Iterator

from sagemaker_tfod.data_prep.examples import parse_example
from sagemaker_tfod.edge.errors import EdgeError

__all__ = ["parse_example", "read_records"]


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
