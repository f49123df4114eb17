"""Progress of long work: a tqdm bar on a terminal, otherwise periodic log lines with the
rate and the time left. Runs that finish within a second or two show nothing."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

LOG_INTERVAL_S = 10.0  # seconds between progress lines when stderr is not a terminal
BAR_DELAY_S = 1.0  # a terminal bar appears only for work that takes longer than this
POLL_INTERVAL_S = 0.25  # how often `watch_counter` looks at work done in other processes

Advance = Callable[[int], None]


class _LogLines:
    """`N/TOTAL what, R what/s, about S s left` every LOG_INTERVAL_S, and a last line."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.what, self.done = total, what, 0
        self.start = self.last_line = time.perf_counter()
        self.lines = 0

    def update(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.done < self.total and now - self.last_line >= LOG_INTERVAL_S:
            self.last_line = now
            self.lines += 1
            rate = self.done / (now - self.start)
            eta = (self.total - self.done) / rate if rate > 0 else float("nan")
            log.info(
                "%d/%d %s, %.0f %s/s, about %.0f s left",
                self.done,
                self.total,
                self.what,
                rate,
                self.what,
                eta,
            )

    def close(self) -> None:
        elapsed = time.perf_counter() - self.start
        if self.lines or elapsed >= LOG_INTERVAL_S:
            rate = self.done / elapsed if elapsed > 0 else float("nan")
            log.info(
                "%d/%d %s in %.1f s, %.0f %s/s",
                self.done,
                self.total,
                self.what,
                elapsed,
                rate,
                self.what,
            )


@contextlib.contextmanager
def progress(total: int, what: str) -> Iterator[Advance]:
    """Yield `advance(count)`, to call as pieces of `total` units of work finish."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        with tqdm(total=total, unit=what, desc=what, delay=BAR_DELAY_S, file=sys.stderr) as bar:
            yield bar.update
        return
    lines = _LogLines(total, what)
    try:
        yield lines.update
    finally:
        lines.close()


@contextlib.contextmanager
def watch_counter(read_done: Callable[[], int], total: int, what: str) -> Iterator[None]:
    """Show progress of work counted by `read_done()` (e.g. a counter that worker processes
    bump after each image): a thread polls it while the block runs."""
    with progress(total, what) as advance:
        stop = threading.Event()
        seen = 0

        def report() -> None:
            nonlocal seen
            done = read_done()
            if done > seen:
                advance(done - seen)
                seen = done

        def poll() -> None:
            while not stop.wait(POLL_INTERVAL_S):
                report()

        thread = threading.Thread(target=poll, name="data_prep-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            report()
