"""Worker processes for the parallel steps, and the shared count of finished images that
the progress display reads while they work.

`multiprocessing.Pool` waits forever for a result when one of its workers is killed (the
out-of-memory killer, a `kill -9`): the build would never end and never say why. This pool
watches every worker's process sentinel next to its result pipe, so a worker that dies for
any reason fails the work at once, with the worker's exit signal and the image it was on.
(`concurrent.futures.ProcessPoolExecutor` notices a dead worker too, but on Python 3.11 it
cannot say which worker died or stop the ones still running.) Workers ignore Ctrl-C: the
parent gets it, stops them, and its caller removes what they were writing.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from sagemaker_tfod.data_prep.errors import DataPrepError

# Bytes of the "now processing" name each worker shares with the parent (longer names are cut).
_NAME_BYTES = 1024
# Seconds a stopped worker gets to exit after SIGTERM before it is sent SIGKILL.
_STOP_GRACE_S = 5.0


class WorkerDied(DataPrepError):
    """A worker process ended while it had work (killed by a signal or exited)."""


def worker_count(requested: int | None = None) -> int:
    """`requested`, else the cores this process may use."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return requested or available or os.cpu_count() or 1


# Set in each worker process (None in the parent): the shared count of finished images and
# this worker's "now processing" name.
_images_done = None
_now_processing = None


def count_image() -> None:
    """Add one to the finished-images count (call from workers after each image)."""
    if _images_done is not None:
        with _images_done.get_lock():
            _images_done.value += 1


def now_processing(name: str) -> None:
    """Tell the parent which file this worker is on, so a crash can name it."""
    if _now_processing is not None:
        _now_processing.value = os.fsencode(name)[: _NAME_BYTES - 1]


def _describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        name = signal.Signals(-exitcode).name
        if -exitcode == signal.SIGKILL:
            return f"was killed by {name} (the out-of-memory killer sends it when memory runs out)"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


def _portable(error: BaseException) -> BaseException:
    """`error` if it survives pickling (with the worker's traceback as a note), else a
    RuntimeError carrying its text: the parent must get *an* error, never a pickling one."""
    if not isinstance(error, DataPrepError | OSError):
        error.add_note("in a data_prep worker process:\n" + traceback.format_exc().rstrip())
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
    return error


def _serve(connection, images_done, current) -> None:
    """A worker's life: run (number, function, chunk) tasks until told to stop."""
    global _images_done, _now_processing
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _images_done, _now_processing = images_done, current
    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if task is None:
            return
        number, function, chunk = task
        try:
            reply = (number, True, [function(item) for item in chunk])
        except BaseException as error:
            reply = (number, False, _portable(error))
        now_processing("")
        try:
            connection.send(reply)
        except (BrokenPipeError, EOFError, OSError):
            return


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    connection: multiprocessing.connection.Connection
    current: Any  # shared bytes: the file it is on
    task: int | None = None  # number of the chunk it holds


class WorkerPool:
    """Processes that run one function over many items, like `multiprocessing.Pool.imap`,
    but raise `WorkerDied` as soon as a worker ends while the pool is in use."""

    def __init__(self, processes: int, context, images_done) -> None:
        self.workers: list[_Worker] = []
        try:
            for _ in range(processes):
                parent_end, child_end = context.Pipe()
                current = context.RawArray("c", _NAME_BYTES)
                process = context.Process(
                    target=_serve,
                    args=(child_end, images_done, current),
                    name="data_prep-worker",
                    daemon=True,
                )
                process.start()
                child_end.close()
                self.workers.append(_Worker(process, parent_end, current))
        except BaseException:
            self.stop()
            raise

    def imap(
        self, function: Callable[[Any], Any], items: Iterable[Any], chunksize: int = 1
    ) -> Iterator[Any]:
        """`function(item)` for every item, in order, computed in the workers."""
        items = list(items)
        size = max(1, chunksize)
        chunks = deque(enumerate(items[i : i + size] for i in range(0, len(items), size)))
        total = len(chunks)
        done: dict[int, list] = {}
        next_number = 0
        while next_number < total:
            for worker in self.workers:
                if worker.task is None and chunks:
                    number, chunk = chunks.popleft()
                    worker.connection.send((number, function, chunk))
                    worker.task = number
            busy = [w for w in self.workers if w.task is not None]
            watched = [w.connection for w in busy] + [w.process.sentinel for w in self.workers]
            ready = set(multiprocessing.connection.wait(watched))
            for worker in self.workers:
                if worker.task is not None and worker.connection in ready:
                    try:
                        number, ok, value = worker.connection.recv()
                    except (EOFError, OSError):
                        raise self._died(worker) from None
                    worker.task = None
                    if not ok:
                        raise value
                    done[number] = value
                if worker.process.sentinel in ready:
                    raise self._died(worker)
            while next_number in done:
                yield from done.pop(next_number)
                next_number += 1

    def _died(self, worker: _Worker) -> WorkerDied:
        worker.process.join(timeout=1.0)
        name = os.fsdecode(worker.current.value)
        where = f" while processing {name}" if name else ""
        return WorkerDied(
            f"data_prep worker process {worker.process.pid} "
            f"{_describe_exit(worker.process.exitcode)}{where}; nothing was written: free "
            "some memory or pass --workers with fewer processes, then run the command again"
        )

    def stop(self) -> None:
        """End every worker (SIGTERM, then SIGKILL after a grace period) and wait for it."""
        for worker in self.workers:
            if worker.process.is_alive():
                worker.process.terminate()
        for worker in self.workers:
            worker.process.join(timeout=_STOP_GRACE_S)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.connection.close()


@dataclass(frozen=True)
class Workers:
    """Worker processes (None: work in this process) and the count of images they finished,
    which the progress display reads while shards are being written."""

    pool: WorkerPool | None
    images_done: Any  # multiprocessing.Value("q")

    def read_images_done(self) -> int:
        return self.images_done.value

    def imap(self, function: Callable[[Any], Any], items: Iterable[Any], chunksize: int = 1):
        """`function` over `items` in the workers, or in this process without a pool."""
        if self.pool is None:
            return map(function, items)
        return self.pool.imap(function, items, chunksize)


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[Workers]:
    """Worker processes (fork where available: no re-import), or none for one worker.
    They are stopped before the block's exit goes on, so a failing build cannot have a
    worker still writing into a folder that is being cleaned up."""
    global _images_done
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    counter = context.Value("q", 0)
    _images_done = counter  # in-process work counts into the same counter
    pool = WorkerPool(workers, context, counter) if workers > 1 else None
    try:
        yield Workers(pool, counter)
    finally:
        _images_done = None
        if pool is not None:
            pool.stop()
