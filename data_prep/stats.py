"""Statistics of a built channel (read back from the shards) and `dataset.png`."""

from __future__ import annotations

import io
import json
import random
from collections import Counter
from pathlib import Path

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.errors import DataPrepError
from sagemaker_tfod.data_prep.examples import parse_example
from sagemaker_tfod.data_prep.files import atomic_output_path, read_user_text
from sagemaker_tfod.data_prep.label_map import parse_label_map
from sagemaker_tfod.data_prep.summary import anchor_fit_summary
from sagemaker_tfod.data_prep.tfrecord_io import iter_records


def shard_paths(channel_dir: Path, split: str) -> list[Path]:
    return sorted(Path(channel_dir).glob(schema.shard_glob(split)))


def iter_examples(channel_dir: Path, split: str):
    """Parsed examples (feature key -> values) of one split, shard by shard."""
    for path in shard_paths(channel_dir, split):
        for record in iter_records(path):
            yield parse_example(record)


def channel_stats(channel_dir: Path | str, image_size: int | None = None) -> dict:
    """Counts per class and split, box sizes and the presets' anchor fit (at `image_size`, or
    each preset's input size), computed from the shards themselves."""
    channel = Path(channel_dir)
    if image_size is not None and image_size < 32:
        raise DataPrepError(f"--image-size {image_size}: use the training input size, e.g. 320")
    label_map_path = channel / schema.LABEL_MAP_FILE
    if not label_map_path.is_file():
        raise DataPrepError(
            f"{channel}: no {schema.LABEL_MAP_FILE}; is this a channel folder "
            "written by `python -m data_prep build`?"
        )
    label_map = parse_label_map(read_user_text(label_map_path), str(label_map_path))
    stats: dict = {
        "channel": str(channel),
        "classes": [label_map[i] for i in sorted(label_map)],
        "splits": {},
    }
    widths, heights = [], []
    train_boxes, train_image_sizes = [], []
    for split in (schema.TRAIN_SPLIT, schema.EVAL_SPLIT):
        paths = shard_paths(channel, split)
        if not paths:
            continue
        images = negatives = 0
        boxes: Counter[str] = Counter()
        for example in iter_examples(channel, split):
            images += 1
            labels = example.get(schema.CLASS_LABEL, [])
            negatives += not labels
            boxes.update(label_map.get(label, f"id {label}") for label in labels)
            for x0, x1, y0, y1 in zip(
                example[schema.BBOX_XMIN],
                example[schema.BBOX_XMAX],
                example[schema.BBOX_YMIN],
                example[schema.BBOX_YMAX],
                strict=True,
            ):
                widths.append(x1 - x0)
                heights.append(y1 - y0)
                if split == schema.TRAIN_SPLIT:
                    train_boxes.append((y0, x0, y1, x1))
                    train_image_sizes.append(
                        (example[schema.IMAGE_HEIGHT][0], example[schema.IMAGE_WIDTH][0])
                    )
        stats["splits"][split] = {
            "shards": len(paths),
            "images": images,
            "negative_images": negatives,
            "boxes": sum(boxes.values()),
            "boxes_per_class": dict(sorted(boxes.items())),
        }
    if not stats["splits"]:
        raise DataPrepError(f"{channel}: no {schema.shard_glob('*')} shards; build the channel")
    stats["box_widths"], stats["box_heights"] = widths, heights
    stats["anchor_fit"] = anchor_fit_summary(train_boxes, train_image_sizes, image_size)
    dataset_json = channel / schema.DATASET_JSON
    if dataset_json.is_file():
        recorded = json.loads(read_user_text(dataset_json))
        stats["warnings"] = len(recorded.get("warnings", []))
        stats["skipped"] = len(recorded.get("skipped", []))
    return stats


def format_stats(stats: dict) -> str:
    """Human-readable table of `channel_stats`."""
    lines = [f"channel {stats['channel']}: classes {', '.join(stats['classes'])}"]
    for split, numbers in stats["splits"].items():
        per_class = ", ".join(f"{k} {v}" for k, v in numbers["boxes_per_class"].items())
        lines.append(
            f"  {split}: {numbers['images']} images ({numbers['negative_images']} "
            f"without objects), {numbers['boxes']} boxes [{per_class}] in "
            f"{numbers['shards']} shard(s)"
        )
    if stats["box_widths"]:
        ordered_w, ordered_h = sorted(stats["box_widths"]), sorted(stats["box_heights"])
        mid = len(ordered_w) // 2
        lines.append(
            f"  box width  (fraction of image): min {ordered_w[0]:.3f} median "
            f"{ordered_w[mid]:.3f} max {ordered_w[-1]:.3f}"
        )
        lines.append(
            f"  box height (fraction of image): min {ordered_h[0]:.3f} median "
            f"{ordered_h[mid]:.3f} max {ordered_h[-1]:.3f}"
        )
    fit = stats["anchor_fit"]
    lines.append(
        f"  anchor fit of the presets' default anchors on the train boxes (IoU >= "
        f"{fit['iou_threshold']}; anchors=auto fits below a recall of {fit['auto_fit_below']}):"
    )
    for name, preset in fit["presets"].items():
        lines.append(
            f"    {name} at {preset['input_size']} px: best possible recall "
            f"{preset['best_possible_recall']:.3f}, mean best IoU {preset['mean_best_iou']:.3f}"
        )
    if "warnings" in stats:
        lines.append(
            f"  build warnings {stats['warnings']}, skipped images {stats['skipped']} "
            f"(see {schema.DATASET_JSON})"
        )
    return "\n".join(lines)


def _samples(channel: Path, count: int, seed: int) -> list[dict]:
    """Up to `count` examples spread over the train split (reservoir sampling)."""
    rng = random.Random(seed)
    chosen: list[dict] = []
    for seen, example in enumerate(iter_examples(channel, schema.TRAIN_SPLIT)):
        if len(chosen) < count:
            chosen.append(example)
        elif (slot := rng.randrange(seen + 1)) < count:
            chosen[slot] = example
    return chosen


def write_dataset_png(
    channel_dir: Path | str, out: Path | None = None, samples: int = 12, seed: int = 0
) -> Path:
    """dataset.png: boxes per class and split, box sizes, and sample images with boxes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channel = Path(channel_dir)
    stats = channel_stats(channel)
    out = Path(out) if out else channel / schema.DATASET_PNG
    examples = _samples(channel, samples, seed)
    columns = 4
    rows = 1 + (len(examples) + columns - 1) // columns
    figure = plt.figure(figsize=(4 * columns, 4 * rows))
    grid = figure.add_gridspec(rows, columns)
    _plot_counts(figure.add_subplot(grid[0, :2]), stats)
    _plot_sizes(figure.add_subplot(grid[0, 2:]), stats)
    for index, example in enumerate(examples):
        axis = figure.add_subplot(grid[1 + index // columns, index % columns])
        _plot_sample(axis, example, stats["classes"])
    figure.tight_layout()
    with atomic_output_path(out) as temporary:
        figure.savefig(temporary, dpi=60, format="png")
    plt.close(figure)
    return out


def _plot_counts(axis, stats: dict) -> None:
    classes = stats["classes"]
    offset = 0.0
    for split, numbers in stats["splits"].items():
        values = [numbers["boxes_per_class"].get(name, 0) for name in classes]
        positions = [i + offset for i in range(len(classes))]
        axis.bar(positions, values, width=0.4, label=f"{split} ({numbers['images']} images)")
        offset += 0.4
    axis.set_xticks([i + 0.2 for i in range(len(classes))], classes, rotation=30, ha="right")
    axis.set_title("boxes per class")
    axis.legend()


def _plot_sizes(axis, stats: dict) -> None:
    axis.scatter(stats["box_widths"], stats["box_heights"], s=6, alpha=0.5)
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("box width / image width")
    axis.set_ylabel("box height / image height")
    axis.set_title(f"box sizes ({len(stats['box_widths'])} boxes)")


def _plot_sample(axis, example: dict, classes: list[str]) -> None:
    """One training image with its boxes and class names, as the trainer will see it."""
    import matplotlib.pyplot as plt
    from PIL import Image

    colours = plt.get_cmap("tab10")
    image = Image.open(io.BytesIO(example[schema.IMAGE_ENCODED][0])).convert("RGB")
    width, height = image.size
    axis.imshow(image)
    for x0, x1, y0, y1, label in zip(
        example[schema.BBOX_XMIN],
        example[schema.BBOX_XMAX],
        example[schema.BBOX_YMIN],
        example[schema.BBOX_YMAX],
        example[schema.CLASS_LABEL],
        strict=True,
    ):
        colour = colours((label - 1) % 10)
        corner = (x0 * width, y0 * height)
        axis.add_patch(
            plt.Rectangle(
                corner,
                (x1 - x0) * width,
                (y1 - y0) * height,
                fill=False,
                color=colour,
                linewidth=2,
            )
        )
        name = classes[label - 1] if 0 < label <= len(classes) else str(label)
        axis.text(
            *corner,
            name,
            color="white",
            fontsize=8,
            backgroundcolor=colour,
            va="bottom" if y0 > 0.08 else "top",  # keep the name on the picture
        )
    axis.set_title(example[schema.IMAGE_FILENAME][0].decode(), fontsize=8)
    axis.axis("off")
