"""Benchmark: `python -m data_prep build` vs the classic one-process TFRecord script.

Builds a 10,000-image Pascal VOC folder from the raccoon set repeated 50 times (image
symlinks, rewritten XML) in a temporary folder, warms the file cache, then times, as whole
commands including interpreter start-up:
  ours:    python -m data_prep build VOC CHANNEL            (XML parsing, split, 2 splits)
  classic: a generate_tfrecord-style script: pandas groupby on a CSV prepared beforehand
           (not timed), per image open + PIL size + tf.train.Example, one TFRecordWriter.
and prints images/s for each and the ratios (wall clock, and CPU time, which is the fairer
figure when other jobs share the cores), plus a raw `cp -rL` of the images for reference.
Usage:
  .venv/bin/python benchmarks/bench_tfrecord.py [--copies 50] [--raccoon DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from sagemaker_tfod.data_prep import crc32c as crc32c_module  # noqa: E402  (needs the path above)

DEFAULT_RACCOON = REPO.parent / "shared" / "datasets" / "raccoon"

CLASSIC_SCRIPT = """
import io, os, sys
import pandas as pd
import tensorflow as tf
from PIL import Image

csv_path, image_dir, out_path = sys.argv[1:4]
frame = pd.read_csv(csv_path)
classes = sorted(frame["class"].unique())
class_ids = {name: number for number, name in enumerate(classes, start=1)}

def bytes_feature(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

def float_feature(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))

def int_feature(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

writer = tf.io.TFRecordWriter(out_path)
count = 0
for filename, group in frame.groupby("filename"):
    with tf.io.gfile.GFile(os.path.join(image_dir, filename), "rb") as handle:
        encoded = handle.read()
    width, height = Image.open(io.BytesIO(encoded)).size
    xmins, xmaxs, ymins, ymaxs, texts, labels = [], [], [], [], [], []
    for _, row in group.iterrows():
        xmins.append(row["xmin"] / width)
        xmaxs.append(row["xmax"] / width)
        ymins.append(row["ymin"] / height)
        ymaxs.append(row["ymax"] / height)
        texts.append(row["class"].encode())
        labels.append(class_ids[row["class"]])
    count += 1
    example = tf.train.Example(features=tf.train.Features(feature={
        "image/height": int_feature([height]),
        "image/width": int_feature([width]),
        "image/filename": bytes_feature([filename.encode()]),
        "image/source_id": bytes_feature([str(count).encode()]),
        "image/encoded": bytes_feature([encoded]),
        "image/format": bytes_feature([b"jpeg"]),
        "image/object/bbox/xmin": float_feature(xmins),
        "image/object/bbox/xmax": float_feature(xmaxs),
        "image/object/bbox/ymin": float_feature(ymins),
        "image/object/bbox/ymax": float_feature(ymaxs),
        "image/object/class/text": bytes_feature(texts),
        "image/object/class/label": int_feature(labels),
    }))
    writer.write(example.SerializeToString())
writer.close()
print(count)
"""


def make_dataset(raccoon: Path, root: Path, copies: int) -> int:
    """root/images/*.jpg (symlinks) and root/annotations/*.xml, `copies` times the set."""
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    count = 0
    for xml_path in sorted((raccoon / "annotations").glob("*.xml")):
        text = xml_path.read_text()
        original = f"{xml_path.stem}.jpg"
        for copy in range(copies):
            name = f"{xml_path.stem}-c{copy:03d}.jpg"
            os.symlink(raccoon / "images" / original, images / name)
            (annotations / f"{xml_path.stem}-c{copy:03d}.xml").write_text(
                text.replace(f"<filename>{original}</filename>", f"<filename>{name}</filename>")
            )
            count += 1
    return count


def warm_cache(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            path.read_bytes()


@dataclass(frozen=True)
class Timing:
    wall_s: float  # what a user waits for
    cpu_s: float  # user + system time of the command and its worker processes
    stdout: str


def timed(command: list[str]) -> Timing:
    """Run a command; wall-clock and CPU seconds (CPU time is the fairer figure when other
    jobs share the cores)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(command)}\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Timing(elapsed, cpu, result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--raccoon",
        type=Path,
        default=DEFAULT_RACCOON,
        help="raccoon dataset folder (default: %(default)s)",
    )
    parser.add_argument("--copies", type=int, default=50, help="(default: %(default)s)")
    parser.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="work in this folder and keep it (default: a temporary folder)",
    )
    args = parser.parse_args()
    if not (args.raccoon / "annotations").is_dir():
        sys.exit(f"{args.raccoon}: raccoon dataset not found; pass --raccoon DIR")
    load_before = os.getloadavg()[0]
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_tfrecord-"))
    python = sys.executable
    try:
        voc = work / "voc"
        images = make_dataset(args.raccoon, voc, args.copies)
        # The classic script's input, prepared untimed (the classic flow has a separate
        # xml_to_csv step; giving it the CSV for free favours the classic side).
        subprocess.run(
            [
                python,
                "-m",
                "data_prep",
                "csv",
                str(voc),
                str(work / "all.csv"),
                "--images",
                str(voc / "images"),
            ],
            cwd=REPO,
            check=True,
        )
        warm_cache(voc)
        warm_cache(args.raccoon)
        ours = timed([python, "-m", "data_prep", "build", str(voc), str(work / "ours")])
        ours_images = json.loads(ours.stdout)["images"]
        from_csv = timed(
            [
                python,
                "-m",
                "data_prep",
                "tfrecord",
                str(work / "all.csv"),
                str(work / "ours" / "label_map.pbtxt"),
                str(work / "ours_csv"),
                "--images",
                str(voc / "images"),
            ]
        )
        (work / "classic.py").write_text(CLASSIC_SCRIPT)
        classic = timed(
            [
                python,
                str(work / "classic.py"),
                str(work / "all.csv"),
                str(voc / "images"),
                str(work / "classic.tfrecord"),
            ]
        )
        classic_images = int(classic.stdout.split()[-1])
        # Reference for this machine's file system: copying the images raw.
        raw_copy = timed(["cp", "-rL", str(voc / "images"), str(work / "raw_copy")])
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    if ours_images != images or classic_images != images:
        sys.exit(
            f"image counts differ: made {images}, ours {ours_images}, classic {classic_images}"
        )
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_after = os.getloadavg()[0]
    print(
        f"images: {images} ({args.copies} x raccoon), cores: {cores}, "
        f"1-min load average before: {load_before:.1f}, after: {load_after:.1f}"
    )
    rows = (
        ("ours    build (VOC XML -> channel)", ours),
        ("ours    tfrecord (CSV -> shards)", from_csv),
        ("classic pandas + tf.train.Example", classic),
        ("reference: cp -rL of the images", raw_copy),
    )
    for label, timing in rows:
        print(
            f"{label:36s} wall {timing.wall_s:6.2f} s {images / timing.wall_s:7.0f} images/s"
            f"   cpu {timing.cpu_s:6.2f} s"
        )
    print(
        f"ratio (wall) build/classic: {classic.wall_s / ours.wall_s:.1f}x, "
        f"tfrecord/classic: {classic.wall_s / from_csv.wall_s:.1f}x"
    )
    print(
        f"ratio (cpu)  build/classic: {classic.cpu_s / ours.cpu_s:.1f}x, "
        f"tfrecord/classic: {classic.cpu_s / from_csv.cpu_s:.1f}x"
    )
    crc = "google_crc32c (C)" if crc32c_module._google_crc32c else "numpy fallback"
    print(f"CRC-32C implementation in data_prep: {crc}")


if __name__ == "__main__":
    main()
