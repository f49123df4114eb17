"""Annotation folder or file -> training channel (shards, label map, labels.txt, dataset.json).

`build_channel` is the whole pipeline; its pieces (`load_annotations`, `write_shards`,
`matching.match_images`) also back the `csv`, `split` and `tfrecord` subcommands. Work is spread
over processes: XML parsing in chunks, then every image's header (its size on disk and in
pixels, so oversized images are refused before anything is written and shards can be sized
by bytes, see `sharding.py`), then one shard per task. Everything is written
into a temporary folder next to the target and renamed into place at the end, so a failed
or interrupted run leaves no half channel.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.annotations import (
    ImageAnnotation,
    find_files,
    parse_coco_json,
    parse_csv,
    read_voc_file,
)
from sagemaker_tfod.data_prep.classes import files_by_class, resolve_classes
from sagemaker_tfod.data_prep.encode import ImageReport, ImageTask, encode_image
from sagemaker_tfod.data_prep.errors import SKIP_HINT, DataPrepError
from sagemaker_tfod.data_prep.files import atomic_directory, read_user_text
from sagemaker_tfod.data_prep.images import (
    DEFAULT_MAX_MEGAPIXELS,
    ImageProbe,
    max_pixels_of,
    probe_image_file,
)
from sagemaker_tfod.data_prep.label_map import format_label_map, format_labels_txt, parse_label_map
from sagemaker_tfod.data_prep.matching import ImageIndex, MatchResult, match_images
from sagemaker_tfod.data_prep.processes import (
    Workers,
    count_image,
    now_processing,
    process_pool,
    worker_count,
)
from sagemaker_tfod.data_prep.progress import progress, watch_counter
from sagemaker_tfod.data_prep.sharding import (
    DEFAULT_SHARD_MEGABYTES,
    ShardPlan,
    partition_by_bytes,
)
from sagemaker_tfod.data_prep.split import classes_missing_from_eval, split_images
from sagemaker_tfod.data_prep.summary import dataset_summary, log_findings

log = logging.getLogger(__name__)

_PARALLEL_XML_FROM = 400  # fewer XML files than this are parsed in-process
_XML_CHUNK = 64  # XML files per task sent to a worker
_PROBE_CHUNK = 64  # image headers read per task sent to a worker


@dataclass(frozen=True)
class BuildOptions:
    """Options of `build` (validated once, in `__post_init__`)."""

    eval_fraction: float = 0.2
    seed: int = 42
    shards: int | None = None  # exactly this many per split; None = sized by bytes
    min_shards: int = 1  # at least this many per split (e.g. a distributed job's workers)
    shard_megabytes: float = DEFAULT_SHARD_MEGABYTES  # target shard size
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS  # larger images are refused
    images_dir: Path | None = None  # default: the annotation folder (or the file's folder)
    label_map: Path | None = None  # label_map.pbtxt or a classes file, one name per line
    skip_unknown_classes: bool = False
    skip_bad_images: bool = False
    workers: int | None = None  # default: all cores
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise DataPrepError(f"--eval-fraction {self.eval_fraction}: use a value in [0, 1)")
        self.shard_plan  # noqa: B018 - validates the sharding options
        if not self.max_megapixels > 0:
            raise DataPrepError(f"--max-megapixels {self.max_megapixels}: use a value above 0")
        if self.workers is not None and self.workers < 1:
            raise DataPrepError(f"--workers {self.workers}: use 1 or more")

    @property
    def shard_plan(self) -> ShardPlan:
        return ShardPlan(self.shards, self.min_shards, self.shard_megabytes)


# ------------------------------------------------------------------ reading annotations


def load_annotations(source: Path, pool=None) -> list[ImageAnnotation]:
    """A folder of VOC XML (searched recursively), a CSV file, or a COCO JSON file."""
    source = Path(source)
    if source.is_dir():
        paths = find_files(source, (".xml",))
        if not paths:
            raise DataPrepError(
                f"{source}: no .xml annotation files found; point at the folder holding the "
                "Pascal VOC files, or at a .csv or COCO .json file"
            )
        parallel = pool is not None and len(paths) >= _PARALLEL_XML_FROM
        parsed = (
            pool.imap(_read_voc_file, paths, chunksize=_XML_CHUNK)
            if parallel
            else map(read_voc_file, paths)
        )
        annotations = []
        with progress(len(paths), "XML files") as advance:
            for annotation in parsed:
                annotations.append(annotation)
                advance(1)
        return annotations
    if not source.exists():
        raise DataPrepError(f"{source}: no such file or folder; check the path")
    text = read_user_text(source)
    if source.suffix.lower() == ".json":
        return parse_coco_json(text, str(source))
    if source.suffix.lower() in (".csv", ".txt"):
        return parse_csv(text, str(source))
    raise DataPrepError(
        f"{source}: unknown annotation file type; use a folder of VOC .xml, a .csv or a COCO "
        ".json file"
    )


def _read_voc_file(path: str) -> ImageAnnotation:
    now_processing(path)
    return read_voc_file(path)


# ------------------------------------------------------------------ writing shards


@dataclass(frozen=True)
class ShardsWritten:
    """What `write_shards` did: per split, the image reports and the shard count."""

    reports: dict[str, list[ImageReport]]
    shard_counts: dict[str, int]


def _probe(job: tuple[str, int]) -> tuple[ImageProbe | None, str]:
    """Header of one image (runs in a worker process): (probe, "") or (None, error)."""
    path, max_pixels = job
    now_processing(path)
    try:
        return probe_image_file(path, max_pixels), ""
    except DataPrepError as error:
        return None, str(error)


def probe_images(
    tasks: Sequence[ImageTask], max_pixels: int, skip_bad: bool, workers: Workers
) -> tuple[dict[int, ImageProbe], list[ImageReport]]:
    """Every image's size on disk and in pixels, from headers: (source_id -> probe, reports
    of the images left out with `skip_bad`). Raises the first image's error otherwise."""
    probes, skipped = {}, []
    jobs = [(task.image_path, max_pixels) for task in tasks]
    results = workers.imap(_probe, jobs, chunksize=_PROBE_CHUNK)
    with progress(len(jobs), "image headers") as advance:
        for task, (probe, error) in zip(tasks, results, strict=True):
            advance(1)
            if probe is not None:
                probes[task.source_id] = probe
                continue
            if not skip_bad:
                raise DataPrepError(error)
            reason = error.replace(SKIP_HINT, "")  # the flag was given already
            skipped.append(
                ImageReport(task.name, task.annotation.source, task.source_id, skipped=reason)
            )
    return probes, skipped


def _write_shard(job: tuple[str, list[ImageTask], bool]) -> list[ImageReport]:
    """Encode the images of one shard and write it (runs in a worker process)."""
    from sagemaker_tfod.data_prep.tfrecord_io import RecordWriter

    path, tasks, skip_bad = job
    reports = []
    with RecordWriter(path) as writer:
        for task in tasks:
            now_processing(task.image_path)
            try:
                example, report = encode_image(task)
            except DataPrepError as error:
                if not skip_bad:
                    raise
                reason = str(error).replace(SKIP_HINT, "")  # the flag was given already
                reports.append(
                    ImageReport(task.name, task.annotation.source, task.source_id, skipped=reason)
                )
                continue
            finally:
                count_image()
            writer.write(example)
            reports.append(report)
    return reports


def write_shards(
    tasks_by_split: dict[str, list[ImageTask]],
    out_dir: Path,
    plan: ShardPlan,
    skip_bad: bool,
    workers: Workers,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
) -> ShardsWritten:
    """Write `{split}-NNNNN-of-MMMMM.tfrecord` files for each split into `out_dir`: first
    every image's header is read (too many pixels or an unreadable header fails here, before
    any shard is opened), then each split is cut into `plan.count` shards of about equal
    bytes, one shard per task, with progress per image."""
    every_task = [task for tasks in tasks_by_split.values() for task in tasks]
    probes, skipped = probe_images(every_task, max_pixels_of(max_megapixels), skip_bad, workers)
    skipped_ids = {report.source_id for report in skipped}
    reports: dict[str, list[ImageReport]] = {}
    jobs, job_split, counts = [], [], {}
    for split, tasks in tasks_by_split.items():
        ids = {task.source_id for task in tasks}
        reports[split] = [report for report in skipped if report.source_id in ids]
        kept = [task for task in tasks if task.source_id not in skipped_ids]
        sizes = [probes[task.source_id].file_bytes for task in kept]
        counts[split] = plan.count(len(kept), sum(sizes))
        for shard, (start, end) in enumerate(partition_by_bytes(sizes, counts[split])):
            path = str(out_dir / schema.shard_name(split, shard, counts[split]))
            jobs.append((path, kept[start:end], skip_bad))
            job_split.append(split)
    total = sum(len(job[1]) for job in jobs)
    results = workers.imap(_write_shard, jobs)
    start = workers.read_images_done()
    with watch_counter(lambda: workers.read_images_done() - start, total, "images"):
        for split, shard_reports in zip(job_split, results, strict=True):
            reports[split].extend(shard_reports)
    return ShardsWritten(reports, counts)


def shuffled(items: Sequence, seed: int) -> list:
    """`items` in a seeded random order. Training shards are written in this order: Model
    Garden shuffles only within a buffer of examples, so a folder sorted by class would
    otherwise reach training in long runs of one class."""
    order = list(items)
    random.Random(seed).shuffle(order)
    return order


# ------------------------------------------------------------------ label map input


def read_class_list(path: Path) -> list[str]:
    """Class order from a label_map.pbtxt (ids 1..N) or a text file with one name per line."""
    path = Path(path)
    text = read_user_text(path)
    if "item" in text and "{" in text:
        label_map = parse_label_map(text, str(path))
        ids = sorted(label_map)
        if ids != list(range(1, len(ids) + 1)):
            raise DataPrepError(f"{path}: ids must be 1..N without gaps, got {ids}")
        return [label_map[i] for i in ids]
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise DataPrepError(f"{path}: no class names; write one per line")
    if len(set(names)) != len(names):
        duplicates = sorted(name for name, n in Counter(names).items() if n > 1)
        raise DataPrepError(f"{path}: names listed twice: {duplicates}; list each once")
    return names


# ------------------------------------------------------------------ the pipeline


def build_channel(
    annotation_dir: Path | str,
    channel_dir: Path | str,
    options: BuildOptions | None = None,
    **overrides,
) -> dict:
    """Build a training channel from annotations; returns the dataset.json content.

    `annotation_dir` is a folder of Pascal VOC XML (images anywhere below it, or under
    `images_dir`), a CSV (ours or keras-retinanet) or a COCO JSON file. `channel_dir` gets
    `train-*-of-*.tfrecord`, `eval-*-of-*.tfrecord` (when eval_fraction > 0),
    `label_map.pbtxt`, `labels.txt` and `dataset.json`. Keyword `overrides` set
    `BuildOptions` fields, e.g. `build_channel(voc, out, eval_fraction=0.25, seed=1)`.
    Raises DataPrepError (one-line message naming the file and the fix) for bad input;
    then nothing is left at `channel_dir`.
    """
    options = options or BuildOptions()
    if overrides:
        options = BuildOptions(**{**asdict(options), **overrides})
    source = Path(annotation_dir)
    images_root = (
        Path(options.images_dir)
        if options.images_dir
        else (source if source.is_dir() else source.parent)
    )
    if not images_root.is_dir():
        raise DataPrepError(f"{images_root}: image folder not found; pass --images DIR")
    given = read_class_list(options.label_map) if options.label_map else None
    # The pool lives inside the staging folder's block: workers are stopped before a
    # failed build removes the folder they write into.
    with atomic_directory(Path(channel_dir), options.overwrite) as staging:
        with process_pool(worker_count(options.workers)) as workers:
            annotations = load_annotations(source, workers.pool)
            index = ImageIndex(images_root)
            match = match_images(annotations, index, options.skip_bad_images)
            matched = [annotation for annotation, _ in match.matched]
            classes, _ = resolve_classes(
                files_by_class(matched),
                given,
                str(options.label_map or ""),
                options.skip_unknown_classes,
            )
            if not classes:
                raise DataPrepError(f"{source}: no labelled objects at all; label some images")
            tasks = plan_tasks(match, index, classes, options.eval_fraction, options.seed)
            written = write_shards(
                tasks,
                staging,
                options.shard_plan,
                options.skip_bad_images,
                workers,
                options.max_megapixels,
            )
        settings = {
            "source": str(source),
            "images_dir": str(images_root),
            "eval_fraction": options.eval_fraction,
            "seed": options.seed,
            "label_map": str(options.label_map) if options.label_map else None,
            "max_megapixels": options.max_megapixels,
            **options.shard_plan.describe(),
        }
        summary = dataset_summary(
            written.reports,
            classes,
            match.skipped,
            match.unannotated,
            settings,
            written.shard_counts,
        )
        if summary["splits"].get(schema.TRAIN_SPLIT, {}).get("images", 0) == 0:
            raise DataPrepError(f"{source}: no usable training images were left")
        write_channel_files(staging, classes, summary)
    log_findings(summary)
    log.info(
        "%s: %d images (%d without objects), %d boxes, %d classes -> %s",
        source,
        summary["images"],
        summary["negative_images"],
        summary["boxes"],
        len(classes),
        channel_dir,
    )
    return summary


def plan_tasks(
    match: MatchResult,
    index: ImageIndex,
    classes: Sequence[str],
    eval_fraction: float,
    seed: int,
) -> dict[str, list[ImageTask]]:
    """Split name -> the images to write, each with a unique numeric source_id (1..N in
    annotation order); training images in a seeded random order (see `shuffled`)."""
    class_ids = {name: i for i, name in enumerate(classes, start=1)}
    tasks = {
        id(annotation): ImageTask(
            source_id=number,
            image_path=path,
            name=index.relative(path),
            annotation=annotation,
            class_ids=class_ids,
        )
        for number, (annotation, path) in enumerate(match.matched, start=1)
    }
    train, evaluation = split_images([a for a, _ in match.matched], eval_fraction, seed)
    warn_classes_missing_from_eval(train, evaluation)
    planned = {
        schema.TRAIN_SPLIT: shuffled([tasks[id(a)] for a in train], seed),
        schema.EVAL_SPLIT: [tasks[id(a)] for a in evaluation],
    }
    return {split: items for split, items in planned.items() if items}


def warn_classes_missing_from_eval(
    train: Sequence[ImageAnnotation], evaluation: Sequence[ImageAnnotation]
) -> None:
    """Log the classes the stratified split could not give an eval image (see split.py)."""
    missing = classes_missing_from_eval(train, evaluation)
    if missing:
        log.warning(
            "class(es) %s have two or more images but none in eval: each of their images "
            "also holds a class that has only that image, which must stay in train; label "
            "more images of them to evaluate them",
            ", ".join(repr(name) for name in missing),
        )


def write_channel_files(staging: Path, classes: Sequence[str], summary: dict) -> None:
    """label_map.pbtxt, labels.txt and dataset.json into the (staging) channel folder."""
    label_map = dict(enumerate(classes, start=1))
    files = {
        schema.LABEL_MAP_FILE: format_label_map(classes),
        schema.LABELS_FILE: format_labels_txt(label_map),
        schema.DATASET_JSON: json.dumps(summary, indent=2) + "\n",
    }
    for name, text in files.items():
        (staging / name).write_text(text, encoding="utf-8")
