"""Ending a job within SageMaker's grace period: the stop signal, its deadline, a watchdog.

SageMaker stops a job (StopTrainingJob, a spot interruption, MaxRuntimeInSeconds) with
SIGTERM and sends SIGKILL 120 s later; whatever `/opt/ml/model` holds then is uploaded. So:
- the handler is installed before anything heavy is imported (`import tensorflow` takes
  seconds; a SIGTERM there used to end the process with 143 and no `output/failure`);
- the stop's arrival time is taken when the signal arrives, not when Python next runs the
  handler: the main thread may be inside a TensorFlow call for many seconds (a training
  loop), so a thread reading `signal.set_wakeup_fd`'s pipe records it;
- the deadline is arrival + grace - margin (both settings: `stop_grace_seconds`,
  `stop_margin_seconds`); work after the stop starts only if it fits before it;
- a watchdog thread ends the process at the deadline whatever the main thread is doing: it
  runs the current phase's *last words* (what to record: the failure file, or the list of
  exports left out) under the same lock the phase uses to put files in place, then exits.
  The margin is the time those last words and the process's exit may take.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

SAGEMAKER_GRACE_SECONDS = 120.0  # SIGTERM -> SIGKILL on SageMaker
DEFAULT_MARGIN_SECONDS = 15.0  # kept free before SIGKILL (measured need: README)
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

LastWords = Callable[[], int]  # records what a phase must leave behind; returns the exit code


class StopFlag:
    """Set when a stop signal arrives (or by `set`); read between training loops."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self.signal_name = ""
        self.stopped_at: float | None = None  # time.monotonic() of the first stop

    def set(self, signal_name: str = "request", at: float | None = None) -> None:
        with self._lock:
            if self.stopped_at is None:
                self.stopped_at = time.monotonic() if at is None else at
                self.signal_name = signal_name
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def install(self) -> Callable[[], None]:
        """Handle SIGTERM (SageMaker's stop/spot notice) and SIGINT; returns an uninstaller.
        Call from the main thread."""
        previous = {}

        def handler(signum: int, _frame: Any) -> None:
            name = signal.Signals(signum).name
            logger.warning("%s received: stopping after the current training loop or export", name)
            self.set(name)

        for signum in _STOP_SIGNALS:
            previous[signum] = signal.signal(signum, handler)
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        closed = threading.Event()

        def record_arrivals() -> None:
            # The C-level handler writes the signal number here the moment it arrives.
            while not closed.is_set():
                try:
                    data = os.read(read_end, 64)
                except OSError:
                    return
                if not data:
                    return
                for number in data:
                    if number in _STOP_SIGNALS:
                        self.set(signal.Signals(number).name, at=time.monotonic())

        reader = threading.Thread(target=record_arrivals, name="stop-signal", daemon=True)
        reader.start()

        def uninstall() -> None:
            signal.set_wakeup_fd(previous_wakeup)
            for signum, old in previous.items():
                signal.signal(signum, old)
            closed.set()
            os.close(write_end)  # ends the reader's read()
            reader.join(timeout=1.0)
            os.close(read_end)

        return uninstall


class GracefulStop:
    """The stop flag, the deadline it sets, and the watchdog that keeps it.

    `on_deadline(last_words)` says what the current phase must record if the deadline
    passes before `finished()`; `commit()` is the lock a phase holds while it puts an
    output in place, so the watchdog never records a file as missing that is being renamed.
    """

    def __init__(
        self,
        grace_seconds: float = SAGEMAKER_GRACE_SECONDS,
        margin_seconds: float = DEFAULT_MARGIN_SECONDS,
    ) -> None:
        self.flag = StopFlag()
        self.grace_seconds = grace_seconds
        self.margin_seconds = margin_seconds
        self._commit_lock = threading.RLock()
        self._finished = threading.Event()
        self._last_words: LastWords = _exit_code_one
        self._uninstall: Callable[[], None] | None = None
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle
    def install(self) -> GracefulStop:
        self._uninstall = self.flag.install()
        self._watchdog = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._watchdog.start()
        return self

    def uninstall(self) -> None:
        self.finished()
        if self._uninstall is not None:
            self._uninstall()
            self._uninstall = None

    def configure(self, grace_seconds: float, margin_seconds: float) -> None:
        """The settings, once the job has read them (a stop before then uses the defaults)."""
        self.grace_seconds, self.margin_seconds = grace_seconds, margin_seconds
        if self.flag.is_set():
            logger.info("stop deadline now in %.1f s", self.remaining())

    def on_deadline(self, last_words: LastWords) -> None:
        self._last_words = last_words

    def finished(self) -> None:
        """The job is done: the watchdog stands down."""
        with self._commit_lock:
            self._finished.set()

    # ------------------------------------------------------------------ the deadline
    @property
    def deadline(self) -> float | None:
        """time.monotonic() by which the job must have ended (None: no stop yet)."""
        if self.flag.stopped_at is None:
            return None
        return self.flag.stopped_at + self.grace_seconds - self.margin_seconds

    def remaining(self) -> float:
        """Seconds left before the deadline (infinite without a stop)."""
        deadline = self.deadline
        return math.inf if deadline is None else deadline - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return seconds <= self.remaining()

    @contextlib.contextmanager
    def commit(self):
        """Hold while putting an output in place (rename, record file)."""
        with self._commit_lock:
            yield

    # ------------------------------------------------------------------ the watchdog
    def _watch(self) -> None:
        while not self.flag.wait(timeout=1.0):
            if self._finished.is_set():
                return
        while not self._finished.is_set():
            remaining = self.remaining()
            if remaining <= 0:
                self._expire()
                return
            self._finished.wait(timeout=min(remaining, 0.5))  # configure() may move it

    def _expire(self) -> None:
        # Wait for an output being put in place, but never past the margin.
        locked = self._commit_lock.acquire(timeout=max(self.margin_seconds / 2, 0.1))
        if self._finished.is_set():
            if locked:
                self._commit_lock.release()
            return
        started = time.monotonic()
        logger.error(
            "stop deadline reached (%s %.1f s ago, grace %.0f s, margin %.0f s): ending now",
            self.flag.signal_name,
            started - (self.flag.stopped_at or started),
            self.grace_seconds,
            self.margin_seconds,
        )
        try:
            code = self._last_words()
        except BaseException:
            logger.exception("recording the stop failed")
            code = 1
        logger.warning(
            "last records written in %.2f s; exit code %d", time.monotonic() - started, code
        )
        exit_now(code)  # the main thread may be deep in TensorFlow: end the process itself


def _exit_code_one() -> int:
    return 1


def exit_now(code: int) -> None:
    """End the process at once (no interpreter shutdown), logs flushed first."""
    _flush_logs()
    os._exit(code)


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
