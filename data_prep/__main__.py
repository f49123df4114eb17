"""`python -m data_prep SUBCOMMAND ...`: annotations -> training channel.

Heavy modules are imported inside each command so `--help` starts instantly.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import signal
import sys
import threading
from pathlib import Path

from sagemaker_tfod.data_prep.console import log_level, missing_extra_message, prog_name

# Light modules (no numpy, Pillow or TensorFlow): the defaults --help shows.
from sagemaker_tfod.data_prep.images import DEFAULT_MAX_MEGAPIXELS
from sagemaker_tfod.data_prep.sharding import DEFAULT_SHARD_MEGABYTES

log = logging.getLogger("sagemaker_tfod.data_prep")

_EPILOG = """typical use:
  {prog} build path/to/voc_folder path/to/channel
  {prog} stats path/to/channel
"""


def _cmd_synth(args: argparse.Namespace) -> None:
    from sagemaker_tfod.data_prep.synth import write_synthetic_voc

    counts = write_synthetic_voc(
        args.out_dir,
        num_images=args.num_images,
        image_size=args.image_size,
        seed=args.seed,
        overwrite=args.overwrite,
        aspect_ratio=args.aspect_ratio,
    )
    print(json.dumps(counts))


def _build_options(args: argparse.Namespace):
    from sagemaker_tfod.data_prep.build import BuildOptions

    return BuildOptions(
        eval_fraction=args.eval_fraction,
        seed=args.seed,
        shards=args.shards,
        min_shards=args.min_shards,
        shard_megabytes=args.shard_mb,
        max_megapixels=args.max_megapixels,
        images_dir=args.images,
        label_map=args.label_map,
        skip_unknown_classes=args.skip_unknown_classes,
        skip_bad_images=args.skip_bad_images,
        workers=args.workers,
        overwrite=args.overwrite,
    )


def _cmd_build(args: argparse.Namespace) -> None:
    from sagemaker_tfod.data_prep.build import build_channel

    summary = build_channel(args.annotations, args.channel_dir, _build_options(args))
    print(
        json.dumps({key: summary[key] for key in ("images", "boxes", "negative_images", "classes")})
    )


def _cmd_csv(args: argparse.Namespace) -> None:
    from sagemaker_tfod.data_prep.commands import convert_to_csv

    count = convert_to_csv(
        args.annotations, args.out_csv, images_dir=args.images, skip_bad_images=args.skip_bad_images
    )
    log.info("wrote %s (%d images)", args.out_csv, count)


def _cmd_label_map(args: argparse.Namespace) -> None:
    from sagemaker_tfod.data_prep.commands import write_label_map

    classes = write_label_map(
        args.csv,
        args.out_dir,
        classes_file=args.classes,
        skip_unknown_classes=args.skip_unknown_classes,
    )
    log.info("%d classes: %s", len(classes), ", ".join(classes))


def _cmd_split(args: argparse.Namespace) -> None:
    from sagemaker_tfod.data_prep.commands import split_csv

    counts = split_csv(args.csv, args.out_dir, eval_fraction=args.eval_fraction, seed=args.seed)
    print(json.dumps(counts))


def _cmd_tfrecord(args: argparse.Namespace) -> None:
    from sagemaker_tfod.data_prep.commands import csv_to_tfrecords
    from sagemaker_tfod.data_prep.sharding import ShardPlan

    counts = csv_to_tfrecords(
        args.csv,
        args.label_map,
        args.out_dir,
        images_dir=args.images,
        split=args.split,
        plan=ShardPlan(args.shards, args.min_shards, args.shard_mb),
        max_megapixels=args.max_megapixels,
        first_source_id=args.first_source_id,
        skip_unknown_classes=args.skip_unknown_classes,
        skip_bad_images=args.skip_bad_images,
        workers=args.workers,
        seed=args.seed,
    )
    print(json.dumps(counts))


def _cmd_stats(args: argparse.Namespace) -> None:
    from sagemaker_tfod.data_prep.stats import channel_stats, format_stats, write_dataset_png

    stats = channel_stats(args.channel_dir, image_size=args.image_size)
    print(format_stats(stats))
    if not args.no_png:
        out = write_dataset_png(args.channel_dir, args.png, samples=args.samples)
        log.info("wrote %s", out)


def _add_common_build_flags(parser: argparse.ArgumentParser, split_flags: bool) -> None:
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="image folder (default: the annotation folder, or the file's "
        "folder); searched recursively",
    )
    parser.add_argument(
        "--skip-unknown-classes",
        action="store_true",
        help="drop boxes whose class is not in --label-map instead of failing",
    )
    parser.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out missing/unreadable images (listed in dataset.json) instead of failing",
    )
    parser.add_argument(
        "--shard-mb",
        type=float,
        default=DEFAULT_SHARD_MEGABYTES,
        help="target shard size in MB; a split gets as many shards as it needs for this "
        "(default: %(default)s, as TensorFlow's TFRecord guide advises 100 MB or more)",
    )
    parser.add_argument(
        "--min-shards",
        type=int,
        default=1,
        help="at least this many shards per split (capped at its image count): give a "
        "distributed job at least one per training process (default: %(default)s)",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=None,
        help="exactly this many shards per split instead (capped at its image count)",
    )
    parser.add_argument(
        "--max-megapixels",
        type=float,
        default=DEFAULT_MAX_MEGAPIXELS,
        help="refuse images with more pixels than this, read from the header before "
        "anything is written (default: %(default)s)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    if split_flags:
        parser.add_argument(
            "--eval-fraction",
            type=float,
            default=0.2,
            help="fraction of images for evaluation, 0 for none (default: %(default)s)",
        )
        parser.add_argument(
            "--seed", type=int, default=42, help="split seed (default: %(default)s)"
        )


def make_parser() -> argparse.ArgumentParser:
    prog = prog_name("data_prep")
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Turn labelImg / VoTT / CVAT (Pascal VOC), CSV or COCO annotations into a "
        "TFRecord training channel; no TensorFlow needed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG.format(prog=prog),
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging (also TFOD_LOG_LEVEL=debug)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_build_command(sub)
    _add_synth_command(sub)
    _add_csv_command(sub)
    _add_label_map_command(sub)
    _add_split_command(sub)
    _add_tfrecord_command(sub)
    _add_stats_command(sub)
    return parser


def _add_build_command(sub) -> None:
    p = sub.add_parser(
        "build",
        help="annotations -> channel folder (shards, label map, labels.txt, dataset.json)",
        description="Annotations (VOC XML folder, CSV or COCO JSON) -> training "
        "channel folder, in one go.",
    )
    p.add_argument(
        "annotations",
        type=Path,
        help="folder of Pascal VOC .xml (recursive; images beside or below), or a "
        ".csv (ours or keras-retinanet), or a COCO .json",
    )
    p.add_argument("channel_dir", type=Path, help="output channel folder (created)")
    p.add_argument(
        "--label-map",
        type=Path,
        default=None,
        help="label_map.pbtxt or classes file (one per line) fixing ids and order "
        "(default: annotation classes, sorted)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty channel folder")
    _add_common_build_flags(p, split_flags=True)
    p.set_defaults(func=_cmd_build)


def _add_synth_command(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic Pascal VOC dataset (shapes)",
        description="Synthetic Pascal VOC dataset: circles (red), squares "
        "(blue), triangles (yellow) on textured backgrounds, ~10%% "
        "images without objects.",
    )
    p.add_argument("out_dir", type=Path, help="writes OUT_DIR/images and OUT_DIR/annotations")
    p.add_argument(
        "--num-images", type=int, default=200, help="images to write (default: %(default)s)"
    )
    p.add_argument(
        "--image-size", type=int, default=256, help="square side in pixels (default: %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="random seed; the same seed writes the same files (default: %(default)s)",
    )
    p.add_argument(
        "--aspect-ratio",
        type=float,
        default=1.0,
        help="1: the shapes; R > 1: every box stretched to R:1 or 1:R, long side 45-90%% of "
        "the image (boxes the default anchors miss; default: %(default)s)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT_DIR")
    p.set_defaults(func=_cmd_synth)


def _add_csv_command(sub) -> None:
    p = sub.add_parser(
        "csv",
        help="VOC XML folder / retinanet CSV / COCO JSON -> one CSV",
        description="Write filename,width,height,class,xmin,ymin,xmax,ymax "
        "(one row per box; empty class = image without objects).",
    )
    p.add_argument(
        "annotations",
        type=Path,
        help="folder of Pascal VOC .xml (recursive), keras-retinanet .csv or COCO .json",
    )
    p.add_argument("out_csv", type=Path, help="CSV to write (replaced if it exists)")
    p.add_argument(
        "--images",
        type=Path,
        default=None,
        help="image folder used to check that every image exists",
    )
    p.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave out annotations whose image is missing instead of failing",
    )
    p.set_defaults(func=_cmd_csv)


def _add_label_map_command(sub) -> None:
    p = sub.add_parser(
        "label-map",
        help="CSV -> label_map.pbtxt and labels.txt",
        description="Ids from 1 in sorted order (or --classes order). Names "
        "differing only by case/whitespace are an error.",
    )
    p.add_argument("csv", type=Path, help="our CSV, e.g. written by the csv command")
    p.add_argument("out_dir", type=Path, help="folder for label_map.pbtxt and labels.txt")
    p.add_argument(
        "--classes",
        type=Path,
        default=None,
        help="classes file (one per line) or label map fixing the order",
    )
    p.add_argument(
        "--skip-unknown-classes",
        action="store_true",
        help="allow CSV classes missing from --classes",
    )
    p.set_defaults(func=_cmd_label_map)


def _add_split_command(sub) -> None:
    p = sub.add_parser(
        "split",
        help="CSV -> train.csv and eval.csv (by image, stratified)",
        description="Seeded split by image; every class with >= 2 images gets "
        "at least one eval image.",
    )
    p.add_argument("csv", type=Path, help="our CSV, e.g. written by the csv command")
    p.add_argument("out_dir", type=Path, help="folder for train.csv and eval.csv")
    p.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="fraction of images for eval.csv, in [0, 1) (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=42, help="split seed (default: %(default)s)")
    p.set_defaults(func=_cmd_split)


def _add_tfrecord_command(sub) -> None:
    p = sub.add_parser(
        "tfrecord",
        help="CSV + label map + images -> sharded TFRecords",
        description="Write SPLIT-NNNNN-of-MMMMM.tfrecord shards for one CSV.",
    )
    p.add_argument("csv", type=Path, help="our CSV (or keras-retinanet CSV) of one split")
    p.add_argument("label_map", type=Path, help="label_map.pbtxt or classes file")
    p.add_argument(
        "out_dir", type=Path, help="folder for the shards (this split's old shards are replaced)"
    )
    p.add_argument("--split", default="train", help="shard name prefix (default: %(default)s)")
    p.add_argument(
        "--first-source-id",
        type=int,
        default=1,
        help="numeric image/source_id of the first image (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=42,
        help="order of the examples in train shards (default: %(default)s)",
    )
    _add_common_build_flags(p, split_flags=False)
    p.set_defaults(func=_cmd_tfrecord)


def _add_stats_command(sub) -> None:
    p = sub.add_parser(
        "stats",
        help="print a channel's statistics and write dataset.png",
        description="Counts per class and split, box sizes, how well each preset's default "
        "anchors fit the training boxes, and dataset.png with sample images and their boxes.",
    )
    p.add_argument("channel_dir", type=Path, help="channel folder written by build")
    p.add_argument(
        "--png",
        type=Path,
        default=None,
        help="where to write the picture (default: CHANNEL_DIR/dataset.png)",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=12,
        help="sample images drawn with their boxes (default: %(default)s)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="measure the anchor fit at this square input size (default: each preset's)",
    )
    p.add_argument("--no-png", action="store_true", help="only print the statistics")
    p.set_defaults(func=_cmd_stats)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a closing terminal session, a job scheduler): cleaned up like Ctrl-C."""


def _raise_terminated(_signum, _frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if threading.current_thread() is not threading.main_thread():
        return _run(args)  # only the main thread may handle signals
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return _run(args)
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=log_level(args.verbose), format="%(levelname)s %(message)s")
    from sagemaker_tfod.data_prep.errors import DataPrepError

    try:
        args.func(args)
    except DataPrepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # unwritable output, disk full, ...: the user's to fix
        where = f"{error.filename}: " if error.filename else ""
        if error.errno == errno.ENOSPC:
            print(
                f"error: {where}no space left on the device; free some space there or write "
                "to another disk (nothing half-written was left behind)",
                file=sys.stderr,
            )
            return 2
        print(
            f"error: {where}{error.strerror or error}; check the path, its permissions and "
            "the free space",
            file=sys.stderr,
        )
        return 2
    except Terminated:
        print("error: stopped by SIGTERM; nothing was written", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except ModuleNotFoundError as error:  # an optional package of another extra
        message = missing_extra_message(error, f"{prog_name('data_prep')} {args.command}")
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
