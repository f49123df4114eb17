"""Worker processes for the parallel steps, and the shared count of finished images that
the progress display reads while they work."""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.pool
import os
from collections.abc import Iterator
from dataclasses import dataclass


def worker_count(requested: int | None = None) -> int:
    """`requested`, else the cores this process may use."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return requested or available or os.cpu_count() or 1


# Images finished by this process; worker processes get the pool's shared counter.
_images_done = None


def _share_counter(counter) -> None:
    global _images_done
    _images_done = counter


def count_image() -> None:
    """Add one to the finished-images count (call from workers after each image)."""
    if _images_done is not None:
        with _images_done.get_lock():
            _images_done.value += 1


@dataclass(frozen=True)
class Workers:
    """Worker processes (None: work in this process) and the count of images they finished,
    which the progress display reads while shards are being written."""

    pool: multiprocessing.pool.Pool | None
    images_done: object  # multiprocessing.Value("q")

    def read_images_done(self) -> int:
        return self.images_done.value


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[Workers]:
    """Worker processes (fork where available: no re-import), or none for one worker.
    They are stopped before the block's exit goes on, so a failing build cannot have a
    worker still writing into a folder that is being cleaned up."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    counter = context.Value("q", 0)
    _share_counter(counter)
    pool = (
        context.Pool(workers, initializer=_share_counter, initargs=(counter,))
        if workers > 1
        else None
    )
    try:
        yield Workers(pool, counter)
    finally:
        _share_counter(None)
        if pool is not None:
            pool.terminate()
            pool.join()
