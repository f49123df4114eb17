"""The training channel contract, defined once and imported by the container.

A channel folder holds:
  train-00000-of-0000N.tfrecord ...   training shards
  eval-00000-of-0000N.tfrecord ...    evaluation shards (optional)
  label_map.pbtxt                     TF Object Detection API label map, ids from 1
  labels.txt                          one class name per line, line i = id i+1
  dataset.json                        counts, box statistics, skipped files
  pipeline.yaml / pipeline.config     optional training overrides

The TFRecords use the TF Object Detection API feature keys below, so data made
for the older pipelines keeps working.
"""

from __future__ import annotations

# Channel file names.
LABEL_MAP_FILE = "label_map.pbtxt"
LABELS_FILE = "labels.txt"
DATASET_JSON = "dataset.json"
DATASET_PNG = "dataset.png"
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"
SHARD_SUFFIX = ".tfrecord"


def shard_name(split: str, index: int, count: int) -> str:
    """`train-00000-of-00004.tfrecord`: the shard naming every reader globs for."""
    return f"{split}-{index:05d}-of-{count:05d}{SHARD_SUFFIX}"


def shard_glob(split: str) -> str:
    """Glob pattern matching every shard of one split."""
    return f"{split}-*-of-*{SHARD_SUFFIX}"


# tf.train.Example feature keys (TF Object Detection API schema).
IMAGE_ENCODED = "image/encoded"
IMAGE_FORMAT = "image/format"
IMAGE_HEIGHT = "image/height"
IMAGE_WIDTH = "image/width"
IMAGE_FILENAME = "image/filename"
IMAGE_SOURCE_ID = "image/source_id"
IMAGE_KEY_SHA256 = "image/key/sha256"
BBOX_XMIN = "image/object/bbox/xmin"
BBOX_XMAX = "image/object/bbox/xmax"
BBOX_YMIN = "image/object/bbox/ymin"
BBOX_YMAX = "image/object/bbox/ymax"
CLASS_TEXT = "image/object/class/text"
CLASS_LABEL = "image/object/class/label"
OBJECT_DIFFICULT = "image/object/difficult"
OBJECT_TRUNCATED = "image/object/truncated"
OBJECT_AREA = "image/object/area"
OBJECT_IS_CROWD = "image/object/is_crowd"
