"""Annotation folder or file -> training channel (shards, label map, labels.txt, dataset.json).

`build_channel` is the whole pipeline; the pieces (`load_annotations`, `match_images`,
`write_shards`) also back the `csv`, `split` and `tfrecord` subcommands. Work is spread
over processes: XML parsing in chunks, then one shard per task. Everything is written
into a temporary folder next to the target and renamed into place at the end, so a failed
or interrupted run leaves no half channel.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from data_prep import schema
from data_prep.annotations import (
    IMAGE_SUFFIXES,
    ImageAnnotation,
    find_files,
    parse_coco_json,
    parse_csv,
    read_voc_file,
)
from data_prep.classes import files_by_class, resolve_classes
from data_prep.encode import ImageReport, ImageTask, encode_image
from data_prep.errors import SKIP_HINT, DataPrepError
from data_prep.label_map import format_label_map, format_labels_txt, parse_label_map
from data_prep.split import split_images

log = logging.getLogger(__name__)

IMAGES_PER_SHARD = 500  # automatic shard count: one shard per this many images
_PARALLEL_XML_FROM = 400  # fewer XML files than this are parsed in-process
_WARNINGS_LOGGED = 20
_PROGRESS_FROM = 1000  # images; smaller runs finish before a progress line would help
DATASET_FORMAT_VERSION = 1


@dataclass(frozen=True)
class BuildOptions:
    """Options of `build` (validated once, in `__post_init__`)."""

    eval_fraction: float = 0.2
    seed: int = 42
    shards: int | None = None  # per split; None = one per IMAGES_PER_SHARD images
    images_dir: Path | None = None  # default: the annotation folder (or the file's folder)
    label_map: Path | None = None  # label_map.pbtxt or a classes file, one name per line
    skip_unknown_classes: bool = False
    skip_bad_images: bool = False
    workers: int | None = None  # default: all cores
    overwrite: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise DataPrepError(f"--eval-fraction {self.eval_fraction}: use a value in [0, 1)")
        if self.shards is not None and self.shards < 1:
            raise DataPrepError(f"--shards {self.shards}: use 1 or more")
        if self.workers is not None and self.workers < 1:
            raise DataPrepError(f"--workers {self.workers}: use 1 or more")


# ------------------------------------------------------------------ processes


def worker_count(requested: int | None = None) -> int:
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return requested or available or os.cpu_count() or 1


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[multiprocessing.pool.Pool | None]:
    """A process pool (fork where available: no re-import), or None for one worker."""
    if workers <= 1:
        yield None
        return
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pool = context.Pool(workers)
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


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
        if pool is not None and len(paths) >= _PARALLEL_XML_FROM:
            return pool.map(read_voc_file, paths, chunksize=128)
        return [read_voc_file(path) for path in paths]
    if not source.exists():
        raise DataPrepError(f"{source}: no such file or folder; check the path")
    text = source.read_text(encoding="utf-8-sig")
    if source.suffix.lower() == ".json":
        return parse_coco_json(text, str(source))
    if source.suffix.lower() in (".csv", ".txt"):
        return parse_csv(text, str(source))
    raise DataPrepError(
        f"{source}: unknown annotation file type; use a folder of VOC .xml, a .csv or a COCO "
        ".json file"
    )


class ImageIndex:
    """Every image file under a folder, found by relative path, file name or stem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        prefix = len(os.path.join(os.fspath(self.root), ""))
        self.by_relative: dict[str, str] = {}
        self.by_name: dict[str, list[str]] = defaultdict(list)
        self.by_stem: dict[str, list[str]] = defaultdict(list)
        for path in find_files(self.root, IMAGE_SUFFIXES):
            relative = path[prefix:].replace(os.sep, "/")
            self.by_relative[relative] = path
            name = relative.rsplit("/", 1)[-1]
            self.by_name[name].append(path)
            self.by_stem[name.rsplit(".", 1)[0]].append(path)
        self.relative_of = {path: relative for relative, path in self.by_relative.items()}

    def relative(self, path: str) -> str:
        """Image path relative to the root, with forward slashes."""
        return self.relative_of[path]

    def find(self, annotation: ImageAnnotation) -> str | None:
        """The image an annotation names; DataPrepError when the name is ambiguous."""
        name = annotation.filename.replace("\\", "/")
        if name in self.by_relative:
            return self.by_relative[name]
        if os.path.isabs(name):  # e.g. keras-retinanet CSVs often hold absolute paths
            inside = os.path.relpath(name, self.root).replace(os.sep, "/")
            if inside in self.by_relative:
                return self.by_relative[inside]
        for candidate in (name, annotation.path_hint.replace("\\", "/")):
            if not candidate:
                continue
            base = PurePosixPath(candidate).name
            matches = self.by_name.get(base) or (
                self.by_stem.get(base, []) if not PurePosixPath(base).suffix else []
            )
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                shown = ", ".join(self.relative(path) for path in matches[:3])
                raise DataPrepError(
                    f"{annotation.source}: image name '{candidate}' matches several files "
                    f"({shown}); write the path relative to {self.root} in the annotation"
                )
        return None


@dataclass
class MatchResult:
    matched: list[tuple[ImageAnnotation, str]]  # (annotation, image path)
    skipped: list[dict[str, str]]
    unannotated: list[str]


def match_images(
    annotations: Sequence[ImageAnnotation], index: ImageIndex, skip_missing: bool
) -> MatchResult:
    """Pair each annotation with its image; two annotations for one image is an error."""
    matched, skipped = [], []
    owner: dict[str, str] = {}
    for annotation in annotations:
        path = index.find(annotation)
        if path is None:
            message = (
                f"{annotation.source}: image '{annotation.filename}' not found under {index.root}"
            )
            if not skip_missing:
                raise DataPrepError(
                    f"{message}; add the image, fix the file name, or pass --skip-bad-images"
                )
            skipped.append({"file": annotation.filename, "reason": message})
            continue
        if path in owner:
            raise DataPrepError(
                f"two annotations for {path}: {owner[path]} and {annotation.source}; delete "
                "one or merge them into one file"
            )
        owner[path] = annotation.source
        matched.append((annotation, path))
    used = set(owner)
    unannotated = [rel for rel, path in index.by_relative.items() if path not in used]
    return MatchResult(matched, skipped, sorted(unannotated))


# ------------------------------------------------------------------ writing shards


def auto_shard_count(images: int, requested: int | None) -> int:
    if images == 0:
        return 0
    wanted = requested or math.ceil(images / IMAGES_PER_SHARD)
    return max(1, min(wanted, images))


def _write_shard(job: tuple[str, list[ImageTask], bool]) -> list[ImageReport]:
    """Encode the images of one shard and write it (runs in a worker process)."""
    from data_prep.tfrecord_io import write_records

    path, tasks, skip_bad = job
    payloads, reports = [], []
    for task in tasks:
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
        payloads.append(example)
        reports.append(report)
    write_records(path, payloads)
    return reports


def write_shards(
    tasks_by_split: dict[str, list[ImageTask]],
    out_dir: Path,
    shards: int | None,
    skip_bad: bool,
    pool=None,
) -> dict[str, list[ImageReport]]:
    """Write `{split}-NNNNN-of-MMMMM.tfrecord` files for each split into `out_dir`."""
    jobs, job_split = [], []
    for split, tasks in tasks_by_split.items():
        count = auto_shard_count(len(tasks), shards)
        for shard in range(count):
            # Contiguous slices keep each shard in source-id order.
            start = shard * len(tasks) // count
            end = (shard + 1) * len(tasks) // count
            path = str(out_dir / schema.shard_name(split, shard, count))
            jobs.append((path, tasks[start:end], skip_bad))
            job_split.append(split)
    total = sum(len(tasks) for tasks in tasks_by_split.values())
    reports: dict[str, list[ImageReport]] = {split: [] for split in tasks_by_split}
    results = pool.imap(_write_shard, jobs) if pool is not None else map(_write_shard, jobs)
    with _progress(total) as bar:
        for split, shard_reports in zip(job_split, results, strict=True):
            reports[split].extend(shard_reports)
            bar.update(len(shard_reports))
    return reports


class _LogProgress:
    """Progress as log lines (about every 10%, with rate and ETA) when stderr is no TTY."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.next_report = total, 0, total / 10
        self.start = time.perf_counter()

    def update(self, count: int) -> None:
        self.done += count
        if self.done >= self.next_report and self.done < self.total:
            self.next_report += self.total / 10
            elapsed = time.perf_counter() - self.start
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = (self.total - self.done) / rate if rate else 0.0
            log.info(
                "%d/%d images, %.0f images/s, about %.0f s left", self.done, self.total, rate, eta
            )


@contextlib.contextmanager
def _progress(total: int):
    """A tqdm bar on a terminal, log lines otherwise; silent below _PROGRESS_FROM images."""
    if total < _PROGRESS_FROM:
        yield _LogProgress(0)  # reports nothing: done never falls below total
        return
    if not sys.stderr.isatty():
        yield _LogProgress(total)
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="img", desc="shards", leave=False) as bar:
        yield bar


# ------------------------------------------------------------------ atomic output


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target`."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise DataPrepError(f"{target}: exists and is not a folder; choose another output")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise DataPrepError(
            f"{target}: folder is not empty; choose a new folder or pass --overwrite"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    temporary.chmod(0o777 & ~umask)  # mkdtemp makes it private; a channel is a normal folder
    try:
        yield temporary
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            target.rename(old / "previous")
            temporary.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            temporary.rename(target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file under a temporary name in the same folder, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


# ------------------------------------------------------------------ label map input


def read_class_list(path: Path) -> list[str]:
    """Class order from a label_map.pbtxt (ids 1..N) or a text file with one name per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DataPrepError(f"{path}: cannot read ({error.strerror}); check the path") from None
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


# ------------------------------------------------------------------ statistics


def _summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 6)

    return {
        "min": round(ordered[0], 6),
        "p05": pick(0.05),
        "median": pick(0.5),
        "p95": pick(0.95),
        "max": round(ordered[-1], 6),
        "mean": round(sum(ordered) / len(ordered), 6),
    }


def dataset_summary(
    reports: dict[str, list[ImageReport]],
    classes: Sequence[str],
    skipped: list[dict[str, str]],
    unannotated: list[str],
    settings: dict,
    shard_counts: dict[str, int],
) -> dict:
    """The content of dataset.json."""
    splits, all_w, all_h, warnings, changed = {}, [], [], [], []
    per_class: dict[str, dict[str, int]] = {name: {} for name in classes}
    total_images = total_boxes = total_negative = 0
    for split, split_reports in reports.items():
        kept = [r for r in split_reports if not r.skipped]
        boxes = Counter()
        images_with = Counter()
        for report in kept:
            boxes.update(report.labels)
            images_with.update(set(report.labels))
            all_w.extend(w for w, _ in report.box_sizes)
            all_h.extend(h for _, h in report.box_sizes)
            warnings.extend({"file": report.source, "message": m} for m in report.warnings)
            if report.change:
                changed.append({"file": report.name, "change": report.change})
        skipped.extend({"file": r.name, "reason": r.skipped} for r in split_reports if r.skipped)
        negatives = sum(1 for r in kept if not r.labels)
        splits[split] = {
            "images": len(kept),
            "boxes": sum(boxes.values()),
            "negative_images": negatives,
            "shards": shard_counts.get(split, 0),
            "boxes_per_class": {classes[i - 1]: boxes[i] for i in range(1, len(classes) + 1)},
            "images_per_class": {
                classes[i - 1]: images_with[i] for i in range(1, len(classes) + 1)
            },
        }
        for i, name in enumerate(classes, start=1):
            per_class[name][split] = boxes[i]
        total_images += len(kept)
        total_boxes += sum(boxes.values())
        total_negative += negatives
    areas = [w * h for w, h in zip(all_w, all_h, strict=True)]
    return {
        "format_version": DATASET_FORMAT_VERSION,
        "images": total_images,
        "boxes": total_boxes,
        "negative_images": total_negative,
        "classes": list(classes),
        "boxes_per_class": per_class,
        "splits": splits,
        "box_size": {
            "note": "fractions of the image width, height and area",
            "width": _summary(all_w),
            "height": _summary(all_h),
            "area": _summary(areas),
        },
        "settings": settings,
        "skipped": skipped,
        "warnings": warnings,
        "changed_images": changed,
        "unannotated_images": unannotated,
    }


def _log_findings(summary: dict) -> None:
    for kind, items in (("warning", summary["warnings"]), ("skipped", summary["skipped"])):
        for item in items[:_WARNINGS_LOGGED]:
            log.warning("%s: %s", item["file"], item.get("message") or item.get("reason"))
        if len(items) > _WARNINGS_LOGGED:
            log.warning(
                "... %d more %s entries in %s",
                len(items) - _WARNINGS_LOGGED,
                kind,
                schema.DATASET_JSON,
            )
    if summary["unannotated_images"]:
        log.warning(
            "%d image(s) have no annotation and were not used (listed under "
            "'unannotated_images' in %s)",
            len(summary["unannotated_images"]),
            schema.DATASET_JSON,
        )


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
    with process_pool(worker_count(options.workers)) as pool:
        annotations = load_annotations(source, pool)
        index = ImageIndex(images_root)
        match = match_images(annotations, index, options.skip_bad_images)
        matched_annotations = [annotation for annotation, _ in match.matched]
        classes, _ = resolve_classes(
            files_by_class(matched_annotations),
            given,
            str(options.label_map or ""),
            options.skip_unknown_classes,
        )
        class_ids = {name: i for i, name in enumerate(classes, start=1)}
        if not classes:
            raise DataPrepError(f"{source}: no labelled objects at all; label some images")
        path_of = {id(annotation): path for annotation, path in match.matched}
        source_id_of = {id(a): i for i, a in enumerate(matched_annotations, start=1)}
        train, evaluation = split_images(matched_annotations, options.eval_fraction, options.seed)
        tasks = {
            split: [
                ImageTask(
                    source_id=source_id_of[id(a)],
                    image_path=path_of[id(a)],
                    name=index.relative(path_of[id(a)]),
                    annotation=a,
                    class_ids=class_ids,
                )
                for a in items
            ]
            for split, items in ((schema.TRAIN_SPLIT, train), (schema.EVAL_SPLIT, evaluation))
            if items
        }
        shard_counts = {
            split: auto_shard_count(len(t), options.shards) for split, t in tasks.items()
        }
        with atomic_directory(Path(channel_dir), options.overwrite) as staging:
            reports = write_shards(tasks, staging, options.shards, options.skip_bad_images, pool)
            settings = {
                "source": str(source),
                "images_dir": str(images_root),
                "eval_fraction": options.eval_fraction,
                "seed": options.seed,
                "label_map": str(options.label_map) if options.label_map else None,
            }
            summary = dataset_summary(
                reports, classes, match.skipped, match.unannotated, settings, shard_counts
            )
            if summary["splits"].get(schema.TRAIN_SPLIT, {}).get("images", 0) == 0:
                raise DataPrepError(f"{source}: no usable training images were left")
            label_map = dict(enumerate(classes, start=1))
            (staging / schema.LABEL_MAP_FILE).write_text(format_label_map(classes))
            (staging / schema.LABELS_FILE).write_text(format_labels_txt(label_map))
            (staging / schema.DATASET_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    _log_findings(summary)
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
