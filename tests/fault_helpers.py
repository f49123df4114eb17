"""Real faults for the fault tests: a small filesystem that fills up, a decompression-bomb
PNG, photos with incompressible pixels, and finding a process's children in /proc."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path

from conftest import cannot_run_here

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int = 50_000, height: int = 50_000) -> bytes:
    """A valid PNG of about 1 KB whose header declares `width` x `height` RGB pixels (7.5 GB
    decoded at the default size): its image data holds the first rows of zeros only."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\0" * 1_000_000, 9)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", data)
        + png_chunk(b"IEND", b"")
    )


def noise_jpeg(width: int, height: int, seed: int) -> bytes:
    """A JPEG of random pixels: incompressible, so its size is predictable (~70 KB at
    320x240), like a detailed photo."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def noise_voc(root: Path, count: int, width: int = 320, height: int = 240) -> int:
    """A Pascal VOC folder of `count` noise photos, one box each; returns their total bytes."""
    from data_prep_helpers import voc_xml

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    total = 0
    for number in range(count):
        data = noise_jpeg(width, height, seed=number)
        (root / "images" / f"photo-{number:03d}.jpg").write_bytes(data)
        box = ("cat" if number % 2 else "dog", 10, 10, width // 2, height // 2)
        xml = voc_xml(f"photo-{number:03d}.jpg", width, height, [box])
        (root / "annotations" / f"photo-{number:03d}.xml").write_text(xml)
        total += len(data)
    return total


@contextlib.contextmanager
def small_filesystem(mount_point: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (e.g. "4m") mounted at `mount_point`: a real disk that fills up.
    Skips the test when this machine cannot mount one (mounting needs root)."""
    if os.geteuid() != 0:
        cannot_run_here("a full-disk test mounts a small tmpfs, which needs root; run as root")
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = done.stderr.strip()
        cannot_run_here(f"cannot mount a tmpfs here, so no full disk to test: {reason}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=False)


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is `parent`, from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("PPid:") and int(line.split()[1]) == parent:
                children.append(int(entry))
    return children


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def holder_of(path: Path, pids: list[int]) -> int | None:
    """The first of `pids` with `path` open."""
    target = str(path)
    for pid in pids:
        try:
            descriptors = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for descriptor in descriptors:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{descriptor}") == target:
                    return pid
    return None
