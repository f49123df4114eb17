"""How many shards a split gets and which images go in each (pure functions).

Shards are sized by bytes, not by image count: a folder of 12-megapixel photos at 500 images
a shard made 1-2 GB files, which read slowly, shuffle poorly and cannot be resumed in part.
TensorFlow's TFRecord guide asks for files of at least 10 MB and ideally 100 MB or more (for
read-ahead), and for about ten times as many files as hosts reading them; the default target
here is 150 MB. A distributed job reads best when every worker gets shards of its own, so a
split can be given a minimum count (`--min-shards`, e.g. the number of training processes);
`--shards N` fixes the count instead. A split never gets more shards than images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sagemaker_tfod.data_prep.errors import DataPrepError

DEFAULT_SHARD_MEGABYTES = 150.0


@dataclass(frozen=True)
class ShardPlan:
    """The sharding options of `build` and `tfrecord`, validated once."""

    shards: int | None = None  # exactly this many per split (None: sized by bytes)
    min_shards: int = 1  # at least this many per split
    shard_megabytes: float = DEFAULT_SHARD_MEGABYTES  # target size of one shard

    def __post_init__(self) -> None:
        if self.shards is not None and self.shards < 1:
            raise DataPrepError(f"--shards {self.shards}: use 1 or more")
        if self.min_shards < 1:
            raise DataPrepError(f"--min-shards {self.min_shards}: use 1 or more")
        if not self.shard_megabytes > 0 or math.isinf(self.shard_megabytes):
            raise DataPrepError(
                f"--shard-mb {self.shard_megabytes}: use a size in MB above 0 (default "
                f"{DEFAULT_SHARD_MEGABYTES:g})"
            )

    def count(self, images: int, total_bytes: int) -> int:
        """Shards for a split of `images` images holding `total_bytes` bytes."""
        if images == 0:
            return 0
        if self.shards is not None:
            wanted = self.shards
        else:
            by_size = math.ceil(total_bytes / (self.shard_megabytes * 1e6))
            wanted = max(self.min_shards, by_size, 1)
        return max(1, min(wanted, images))

    def describe(self) -> dict:
        """The plan as dataset.json records it."""
        if self.shards is not None:
            return {"shards_per_split": self.shards}
        return {"shard_megabytes": self.shard_megabytes, "min_shards": self.min_shards}


def partition_by_bytes(sizes: Sequence[int], count: int) -> list[tuple[int, int]]:
    """`count` consecutive (start, end) ranges over `sizes`, each non-empty, holding about
    the same number of bytes (equal image counts when no size is known)."""
    images = len(sizes)
    if count <= 0 or images == 0:
        return []
    count = min(count, images)
    total = sum(sizes)
    if total <= 0:
        return [(i * images // count, (i + 1) * images // count) for i in range(count)]
    ranges, start, running = [], 0, 0
    for shard in range(count - 1):
        goal = total * (shard + 1) / count
        end = start + 1  # at least one image
        running += sizes[start]
        # Take the next image while that brings the shard closer to its goal, leaving at
        # least one image for each shard still to come.
        while end < images - (count - shard - 1) and abs(running + sizes[end] - goal) <= abs(
            running - goal
        ):
            running += sizes[end]
            end += 1
        ranges.append((start, end))
        start = end
    ranges.append((start, images))
    return ranges
