"""Faults real data and real machines bring to `data_prep build`, each caused for real: a
worker process killed mid-build, Ctrl-C and SIGTERM, a disk that fills up, a decompression
bomb, and photos large enough that shards must be sized by bytes.

A worker is caught mid-image with a named pipe (FIFO) in place of one image: the worker that
opens it blocks until the test writes, so the test knows which process holds which image
when it sends the signal. Nothing in the build is patched.
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from data_prep_helpers import REPO, image_bytes, leftovers, small_voc, voc_xml
from fault_helpers import (
    PNG_SIGNATURE,
    bomb_png,
    child_pids,
    holder_of,
    is_running,
    noise_voc,
    png_chunk,
    small_filesystem,
)

from sagemaker_tfod.data_prep.errors import DataPrepError
from sagemaker_tfod.data_prep.images import png_damage, probe_image_file
from sagemaker_tfod.data_prep.sharding import ShardPlan, partition_by_bytes

# A build that hangs on a dead worker is what these tests exist to catch: give up after this.
HANG_S = 60


@pytest.fixture
def start_build(tmp_path):
    """Start `data_prep build voc channel --workers 2` in its own process group (as a
    terminal starts a command); whatever is left of it is killed when the test ends."""
    started: list[subprocess.Popen] = []

    def start(*extra: str) -> subprocess.Popen:
        command = [sys.executable, "-m", "data_prep", "build", str(tmp_path / "voc")]
        build = subprocess.Popen(
            [*command, str(tmp_path / "channel"), "--workers", "2", *extra],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        started.append(build)
        return build

    yield start
    for build in started:
        if build.poll() is None:
            os.killpg(build.pid, signal.SIGKILL)
            build.communicate()


def _voc_with_a_pipe(tmp_path: Path) -> Path:
    """8 images; images/img-3.jpg is a FIFO, so the worker reading it waits for the test."""
    voc = small_voc(tmp_path / "voc", count=8)
    fifo = voc / "images" / "img-3.jpg"
    fifo.unlink()
    os.mkfifo(fifo)
    return fifo


def _open_for_writing_once_read(fifo: Path, build: subprocess.Popen) -> int:
    """Wait until a worker opens `fifo` for reading; returns the write end (held open, so
    the reader then blocks in read() until the test writes or closes)."""
    deadline = time.monotonic() + HANG_S
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as error:
            if error.errno != errno.ENXIO:  # ENXIO: nobody has it open for reading yet
                raise
        if build.poll() is not None:
            pytest.fail(f"build ended before reading the pipe:\n{build.communicate()[1]}")
        if time.monotonic() > deadline:
            pytest.fail("no worker opened the pipe")
        time.sleep(0.02)


def _worker_reading(fifo: Path, build: subprocess.Popen) -> tuple[int, int]:
    """(write end, pid of the worker that has `fifo` open)."""
    writer = _open_for_writing_once_read(fifo, build)
    deadline = time.monotonic() + HANG_S
    while time.monotonic() < deadline:
        holder = holder_of(fifo, child_pids(build.pid))
        if holder is not None:
            return writer, holder
        time.sleep(0.02)
    pytest.fail("the reader of the pipe is not a child of the build")


def _finish(build: subprocess.Popen) -> tuple[str, float]:
    started = time.monotonic()
    _, err = build.communicate(timeout=HANG_S)
    return err, time.monotonic() - started


def _assert_failed_cleanly(tmp_path: Path, build, err: str, workers: list[int], code: int):
    assert build.returncode == code, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    assert leftovers(tmp_path) == [], "a channel or temporary folder was left behind"
    assert not [pid for pid in workers if is_running(pid)], "a worker outlived the build"
    return errors[0]


@pytest.mark.parametrize("phase", ["header", "shard"])
def test_a_killed_worker_fails_the_build_fast_naming_its_image(tmp_path, start_build, phase):
    fifo = _voc_with_a_pipe(tmp_path)
    build = start_build()
    writer, worker = _worker_reading(fifo, build)
    if phase == "shard":  # let the header pass read a real JPEG, then catch the encoder
        os.write(writer, image_bytes(64, 48, ((8, 8, 32, 30),)))
        os.close(writer)
        writer, worker = _worker_reading(fifo, build)
    workers = child_pids(build.pid)
    os.kill(worker, signal.SIGKILL)
    err, seconds = _finish(build)
    os.close(writer)
    line = _assert_failed_cleanly(tmp_path, build, err, workers, code=2)
    assert f"worker process {worker} was killed by SIGKILL" in line
    assert "img-3.jpg" in line and "--workers" in line
    print(f"{phase}: build ended {seconds:.2f} s after the worker was killed")


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_workers_and_leaves_nothing(tmp_path, start_build, how):
    fifo = _voc_with_a_pipe(tmp_path)
    build = start_build()
    writer, _worker = _worker_reading(fifo, build)
    workers = child_pids(build.pid)
    if how == "ctrl-c":
        os.killpg(build.pid, signal.SIGINT)  # a terminal sends it to the whole group
    else:
        os.kill(build.pid, signal.SIGTERM)
    err, seconds = _finish(build)
    os.close(writer)
    code, needle = (130, "interrupted") if how == "ctrl-c" else (143, "stopped by SIGTERM")
    line = _assert_failed_cleanly(tmp_path, build, err, workers, code=code)
    assert needle in line and "nothing was written" in line
    print(f"{how}: build ended {seconds:.2f} s after the signal")


def _bomb_voc(tmp_path: Path) -> Path:
    voc = small_voc(tmp_path / "voc")
    bomb = voc / "images" / "bomb.png"
    bomb.write_bytes(bomb_png())
    (voc / "annotations" / "bomb.xml").write_text(
        voc_xml("bomb.png", 50_000, 50_000, [("cat", 10, 10, 900, 900)])
    )
    return bomb


def test_a_decompression_bomb_is_refused_by_build_in_one_line(tmp_path):
    bomb = _bomb_voc(tmp_path)
    assert bomb.stat().st_size < 1200
    command = [sys.executable, "-m", "data_prep", "build", str(tmp_path / "voc")]
    done = subprocess.run(
        [*command, str(tmp_path / "channel")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"error: {bomb}: 50000x50000 pixels (2,500 megapixels)")
    assert "above the 200-megapixel limit" in done.stderr and "--max-megapixels" in done.stderr
    assert leftovers(tmp_path) == []
    # Skipped on request, and listed in dataset.json.
    done = subprocess.run(
        [*command, str(tmp_path / "channel"), "--skip-bad-images"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    dataset = json.loads((tmp_path / "channel" / "dataset.json").read_text())
    assert [item["file"] for item in dataset["skipped"]] == ["images/bomb.png"]
    assert dataset["images"] == 5


def test_a_decompression_bomb_is_refused_by_detect_in_one_line(tmp_path):
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    (tmp_path / "model.tflite").write_text("not a model: the image is refused before loading it")

    def detect(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "edge", "detect", "--model", "model.tflite", "bomb.png", *extra],
            cwd=tmp_path,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=HANG_S,
            check=False,
        )

    done = detect()
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: bomb.png: 50000x50000 pixels (2,500 megapixels)")
    assert "200-megapixel limit" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "detections").exists()
    # The limit is a setting: raised, the image passes and the (fake) model is what fails.
    raised = detect("--max-megapixels", "3000")
    assert raised.returncode == 2 and "not a TFLite model" in raised.stderr, raised.stderr


def _shard_sizes(channel: Path, split: str = "train") -> list[int]:
    return [path.stat().st_size for path in sorted(channel.glob(f"{split}-*.tfrecord"))]


def test_large_photos_make_shards_near_the_byte_target(tmp_path):
    """30 photos of ~70 KB with a 0.4 MB target (the 150 MB default, scaled down to keep the
    test cheap): 500 images a shard would have made one shard."""
    total = noise_voc(tmp_path / "voc", 30)
    target = 400_000
    build = [sys.executable, "-m", "data_prep", "build", str(tmp_path / "voc")]
    done = subprocess.run(
        [*build, str(tmp_path / "channel"), "--shard-mb", "0.4", "--eval-fraction", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    sizes = _shard_sizes(tmp_path / "channel")
    assert len(sizes) == math.ceil(total / target)
    for size in sizes:
        assert 0.7 * target <= size <= 1.1 * target, sizes
    dataset = json.loads((tmp_path / "channel" / "dataset.json").read_text())
    assert dataset["settings"]["shard_megabytes"] == 0.4
    # A distributed job asks for at least one shard per worker.
    done = subprocess.run(
        [*build, str(tmp_path / "more"), "--min-shards", "12", "--eval-fraction", "0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=HANG_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(_shard_sizes(tmp_path / "more")) == 12


def test_a_disk_that_fills_up_during_build_is_one_line_and_leaves_nothing(tmp_path):
    total = noise_voc(tmp_path / "voc", 80)  # ~5.6 MB of photos for a 4 MB disk
    assert total > 5_000_000
    with small_filesystem(tmp_path / "disk", "4m") as disk:
        command = [sys.executable, "-m", "data_prep", "build", str(tmp_path / "voc")]
        done = subprocess.run(
            [*command, str(disk / "channel"), "--workers", "2", "--shard-mb", "1"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=HANG_S,
            check=False,
        )
        left = sorted(os.listdir(disk))
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "no space left on the device" in errors[0], errors[0]
    assert str(disk) in errors[0]  # names where it was writing
    assert left == [], f"the full disk still holds {left}"


# ------------------------------------------------------------------ the pure pieces


def test_partition_by_bytes_balances_bytes_not_counts():
    assert partition_by_bytes([10] * 6, 3) == [(0, 2), (2, 4), (4, 6)]
    # One big photo among small ones gets a shard of its own.
    assert partition_by_bytes([90, 5, 5, 5, 5, 90], 3) == [(0, 1), (1, 5), (5, 6)]
    assert partition_by_bytes([1, 1], 5) == [(0, 1), (1, 2)]  # never an empty shard
    assert partition_by_bytes([0, 0, 0, 0], 2) == [(0, 2), (2, 4)]  # sizes unknown
    assert partition_by_bytes([], 2) == []
    ranges = partition_by_bytes([7, 300, 2, 2, 2, 2, 2, 2, 80, 1], 4)
    assert ranges[0][0] == 0 and ranges[-1][1] == 10
    assert all(start < end for start, end in ranges)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


def test_shard_plan_counts():
    plan = ShardPlan(shard_megabytes=100)
    assert plan.count(0, 0) == 0
    assert plan.count(10, 50_000_000) == 1
    assert plan.count(1000, 2_000_000_000) == 20  # 2 GB of photos -> 20 shards of 100 MB
    assert ShardPlan(min_shards=8).count(1000, 10_000_000) == 8
    assert ShardPlan(min_shards=8).count(5, 10_000_000) == 5  # never more than images
    assert ShardPlan(shards=3, min_shards=8).count(1000, 9_000_000_000) == 3  # exact wins
    for bad in ({"shards": 0}, {"min_shards": 0}, {"shard_megabytes": 0.0}):
        with pytest.raises(DataPrepError):
            ShardPlan(**bad)


def _png_with_text() -> bytes:
    good = image_bytes(8, 6, fmt="PNG")
    ihdr_end = 8 + 25
    return good[:ihdr_end] + png_chunk(b"tEXt", b"k\0v") + good[ihdr_end:]


def _damage_crc(data: bytes, kind: bytes) -> bytes:
    position = data.index(kind) - 4
    length = int.from_bytes(data[position : position + 4], "big")
    damaged = bytearray(data)
    damaged[position + 8 + length] ^= 0xFF
    return bytes(damaged)


def test_png_damage_finds_what_tensorflow_refuses():
    good = _png_with_text()
    assert good.startswith(PNG_SIGNATURE) and png_damage(good) == ""
    assert "checksum of chunk 'IDAT'" in png_damage(_damage_crc(good, b"IDAT"))
    assert png_damage(_damage_crc(good, b"tEXt")) == ""  # libpng ignores ancillary CRCs
    assert "cut off" in png_damage(good[:-20])


def test_probe_reads_sizes_from_headers(tmp_path):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(image_bytes(64, 48))
    probe = probe_image_file(str(photo), max_pixels=10_000)
    assert (probe.width, probe.height, probe.file_bytes) == (64, 48, photo.stat().st_size)
    bmp = tmp_path / "photo.bmp"
    bmp.write_bytes(image_bytes(64, 48, fmt="BMP"))
    assert probe_image_file(str(bmp), max_pixels=10_000).width == 64
    with pytest.raises(DataPrepError, match=r"above the 0\.003-megapixel limit"):
        probe_image_file(str(photo), max_pixels=3_000)
    big_bmp = tmp_path / "big.bmp"  # above Pillow's own bomb limit, below ours: accepted
    header = bytearray(image_bytes(4, 4, fmt="BMP"))
    header[18:26] = (20_000).to_bytes(4, "little") + (10_000).to_bytes(4, "little")
    big_bmp.write_bytes(bytes(header))
    assert probe_image_file(str(big_bmp), max_pixels=200_000_000).width == 20_000
