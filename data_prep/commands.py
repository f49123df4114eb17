"""The step-by-step subcommands (`csv`, `label-map`, `split`, `tfrecord`): thin wrappers
over the same pieces `build` uses, for users who want to inspect or edit between steps."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.annotations import format_csv, parse_csv
from sagemaker_tfod.data_prep.build import (
    load_annotations,
    read_class_list,
    shuffled,
    warn_classes_missing_from_eval,
    write_shards,
)
from sagemaker_tfod.data_prep.classes import files_by_class, resolve_classes
from sagemaker_tfod.data_prep.encode import ImageTask
from sagemaker_tfod.data_prep.errors import DataPrepError
from sagemaker_tfod.data_prep.files import atomic_write_text, read_user_text
from sagemaker_tfod.data_prep.images import DEFAULT_MAX_MEGAPIXELS
from sagemaker_tfod.data_prep.label_map import format_label_map, format_labels_txt
from sagemaker_tfod.data_prep.matching import ImageIndex, match_images
from sagemaker_tfod.data_prep.processes import process_pool, worker_count
from sagemaker_tfod.data_prep.sharding import ShardPlan
from sagemaker_tfod.data_prep.split import split_images

TRAIN_CSV = "train.csv"
EVAL_CSV = "eval.csv"


def convert_to_csv(
    annotations: Path,
    out_csv: Path,
    images_dir: Path | None = None,
    skip_bad_images: bool = False,
) -> int:
    """Any supported annotation input -> our CSV; returns the number of images.

    With `images_dir`, every image must exist there (file names are rewritten relative to
    it); without, names are written as annotated."""
    with process_pool(worker_count()) as workers:
        items = load_annotations(Path(annotations), workers.pool)
    if images_dir is not None:
        index = ImageIndex(Path(images_dir))
        match = match_images(items, index, skip_bad_images)
        items = [
            replace(annotation, filename=index.relative(path), path_hint="")
            for annotation, path in match.matched
        ]
    check = files_by_class(items)
    resolve_classes(check, None)  # near-duplicate names fail here, before anything is written
    atomic_write_text(Path(out_csv), format_csv(items))
    return len(items)


def _read_csv(path: Path):
    return parse_csv(read_user_text(path), str(path))


def write_label_map(
    csv_path: Path,
    out_dir: Path,
    classes_file: Path | None = None,
    skip_unknown_classes: bool = False,
) -> list[str]:
    """CSV -> out_dir/label_map.pbtxt and out_dir/labels.txt; returns the class order."""
    items = _read_csv(csv_path)
    given = read_class_list(classes_file) if classes_file else None
    classes, _ = resolve_classes(
        files_by_class(items), given, str(classes_file or ""), skip_unknown_classes
    )
    if not classes:
        raise DataPrepError(f"{csv_path}: no classes (every row is an image without objects)")
    atomic_write_text(Path(out_dir) / schema.LABEL_MAP_FILE, format_label_map(classes))
    atomic_write_text(
        Path(out_dir) / schema.LABELS_FILE, format_labels_txt(dict(enumerate(classes, start=1)))
    )
    return classes


def split_csv(csv_path: Path, out_dir: Path, eval_fraction: float, seed: int) -> dict:
    """CSV -> out_dir/train.csv and out_dir/eval.csv, by image."""
    items = _read_csv(csv_path)
    train, evaluation = split_images(items, eval_fraction, seed)
    warn_classes_missing_from_eval(train, evaluation)
    atomic_write_text(Path(out_dir) / TRAIN_CSV, format_csv(train))
    atomic_write_text(Path(out_dir) / EVAL_CSV, format_csv(evaluation))
    return {"train_images": len(train), "eval_images": len(evaluation)}


def csv_to_tfrecords(
    csv_path: Path,
    label_map: Path,
    out_dir: Path,
    images_dir: Path | None = None,
    split: str = schema.TRAIN_SPLIT,
    plan: ShardPlan | None = None,
    first_source_id: int = 1,
    skip_unknown_classes: bool = False,
    skip_bad_images: bool = False,
    workers: int | None = None,
    seed: int = 42,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> dict:
    """CSV + label map + image folder -> out_dir/SPLIT-NNNNN-of-MMMMM.tfrecord.

    Training examples are written in a `seed`ed random order, as `build` writes them.
    Shards are written under temporary names and renamed once all succeeded."""
    csv_path = Path(csv_path)
    items = _read_csv(csv_path)
    images_root = Path(images_dir) if images_dir else csv_path.parent
    index = ImageIndex(images_root)
    match = match_images(items, index, skip_bad_images)
    classes, _ = resolve_classes(
        files_by_class([a for a, _ in match.matched]),
        read_class_list(label_map),
        str(label_map),
        skip_unknown_classes,
    )
    class_ids = {name: i for i, name in enumerate(classes, start=1)}
    tasks = [
        ImageTask(
            first_source_id + number,
            path,
            index.relative(path),
            annotation,
            class_ids,
        )
        for number, (annotation, path) in enumerate(match.matched)
    ]
    if split == schema.TRAIN_SPLIT:
        tasks = shuffled(tasks, seed)
    out_dir = Path(out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    # A fresh staging folder per run: a killed earlier run cannot leak its shards into this one.
    staging = Path(tempfile.mkdtemp(prefix=f".{split}.tmp-", dir=out_dir))
    plan = plan or ShardPlan()
    try:
        count = min(worker_count(workers), max(1, len(tasks)))
        with process_pool(count) as processes:
            written = write_shards(
                {split: tasks}, staging, plan, skip_bad_images, processes, max_megapixels
            )
        for old in out_dir.glob(schema.shard_glob(split)):
            old.unlink()
        for shard in sorted(staging.iterdir()):
            shard.rename(out_dir / shard.name)
    finally:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # failed before any shard landed: leave no trace
    reports = written.reports[split]
    kept = [r for r in reports if not r.skipped]
    return {
        "images": len(kept),
        "boxes": sum(len(r.labels) for r in kept),
        "skipped": len(reports) - len(kept),
        "shards": written.shard_counts[split],
    }
