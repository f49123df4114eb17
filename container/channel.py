"""Find and check what the training channel holds before training starts (the checkpoint
channel: container/checkpoint_source.py)."""

from __future__ import annotations

import logging
import pathlib
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.label_map import LabelMapError, parse_label_map

logger = logging.getLogger(__name__)

PIPELINE_YAML = "pipeline.yaml"
PIPELINE_CONFIG = "pipeline.config"
# Label ids are checked on at most this many records per split (a full scan of a large
# dataset would cost minutes before training starts).
LABEL_SCAN_LIMIT = 20000


@dataclass(frozen=True)
class Channel:
    directory: pathlib.Path
    train_shards: list[str]
    eval_shards: list[str]
    label_map: dict[int, str]
    pipeline_yaml: pathlib.Path | None
    pipeline_config: pathlib.Path | None

    @property
    def label_map_file(self) -> pathlib.Path:
        return self.directory / schema.LABEL_MAP_FILE

    def pattern(self, split: str) -> str:
        return str(self.directory / schema.shard_glob(split))


def read_channel(directory: pathlib.Path) -> Channel:
    """The channel's shards, label map and optional configs; UserError if it cannot be used."""
    build_hint = "build one with `python -m data_prep build IMAGES_DIR CHANNEL_DIR`"
    if not directory.is_dir():
        raise UserError(f"training channel {directory} does not exist; {build_hint}")
    train = sorted(str(p) for p in directory.glob(schema.shard_glob(schema.TRAIN_SPLIT)))
    evals = sorted(str(p) for p in directory.glob(schema.shard_glob(schema.EVAL_SPLIT)))
    if not train:
        found = sorted(p.name for p in directory.iterdir())[:8]
        raise UserError(
            f"training channel {directory} has no {schema.shard_glob(schema.TRAIN_SPLIT)} "
            f"shards (it holds: {', '.join(found) or 'nothing'}); {build_hint}"
        )
    label_map_file = directory / schema.LABEL_MAP_FILE
    if not label_map_file.is_file():
        raise UserError(
            f"training channel {directory} has no {schema.LABEL_MAP_FILE}; {build_hint}, "
            "or add one with an item { id: N name: '...' } per class"
        )
    try:
        label_map = parse_label_map(
            label_map_file.read_text(encoding="utf-8"), source=str(label_map_file)
        )
    except LabelMapError as error:
        raise UserError(str(error)) from error
    if sorted(label_map) != list(range(1, len(label_map) + 1)):
        raise UserError(
            f"{label_map_file}: ids must be 1..N without gaps (got {sorted(label_map)}); "
            "renumber the items"
        )
    yaml_file = directory / PIPELINE_YAML
    config_file = directory / PIPELINE_CONFIG
    return Channel(
        directory=directory,
        train_shards=train,
        eval_shards=evals,
        label_map=label_map,
        pipeline_yaml=yaml_file if yaml_file.is_file() else None,
        pipeline_config=config_file if config_file.is_file() else None,
    )


@dataclass(frozen=True)
class SplitSummary:
    num_examples: int
    label_ids: frozenset[int]
    scanned_all: bool
    # Boxes of the scanned records (the anchor fit reads them): [M, 4] normalised (ymin, xmin,
    # ymax, xmax) and [M, 2] (height, width) of each box's image.
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    image_sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


_BOX_KEYS = (schema.BBOX_YMIN, schema.BBOX_XMIN, schema.BBOX_YMAX, schema.BBOX_XMAX)


def scan_split(shards: list[str], limit: int = LABEL_SCAN_LIMIT) -> SplitSummary:
    """Count the records of `shards`; collect the class ids and boxes of the first `limit`."""
    features = {
        schema.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
        schema.IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        schema.IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64, default_value=0),
        **{key: tf.io.VarLenFeature(tf.float32) for key in _BOX_KEYS},
    }
    count = 0
    label_ids: set[int] = set()
    boxes, sizes = [], []
    for shard in shards:
        try:
            for record in tf.data.TFRecordDataset(shard):
                if count < limit:
                    parsed = tf.io.parse_single_example(record, features)
                    label_ids.update(int(v) for v in parsed[schema.CLASS_LABEL].values.numpy())
                    corners = [parsed[key].values.numpy() for key in _BOX_KEYS]
                    size = (int(parsed[schema.IMAGE_HEIGHT]), int(parsed[schema.IMAGE_WIDTH]))
                    if len({len(c) for c in corners}) == 1 and min(size) > 0:
                        boxes.append(np.stack(corners, axis=-1).reshape(-1, 4))
                        sizes.append(np.tile(size, (len(corners[0]), 1)))
                count += 1
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as error:
            reason = error.message.splitlines()[0]
            raise UserError(
                f"{shard}: not a readable TFRecord of tf.train.Example ({reason}); "
                "rebuild the channel with `python -m data_prep build`"
            ) from error
    return SplitSummary(
        count,
        frozenset(label_ids),
        count <= limit,
        np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        np.concatenate(sizes) if sizes else np.zeros((0, 2)),
    )


def check_labels(summary: SplitSummary, split: str, label_map: dict[int, str], where: str) -> None:
    unknown = sorted(summary.label_ids - set(label_map))
    if unknown:
        raise UserError(
            f"the {split} shards in {where} use class id(s) {unknown} that "
            f"{schema.LABEL_MAP_FILE} lacks (it has {sorted(label_map)}); rebuild the channel "
            f"with the same label map, or add the missing ids to {schema.LABEL_MAP_FILE}"
        )
