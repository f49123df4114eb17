"""TensorFlow's own C++ log lines (written straight to stderr), sorted into kept and chatter.

Python's logging never sees these lines, so `start_native_log_filter` points the process's
stderr (file descriptor 2) at a small child process that reads them line by line and drops
the chatter unless the log level is debug. The child (this module's `main`) only reads and
writes: when the job ends or crashes it still drains every line written before, so a fatal
TensorFlow message is never lost with the process. Lines it does not recognise (tracebacks,
anything else) pass through unchanged.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import glob
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable

# `2026-12-01 09:13:40.129823: E tensorflow/core/util/util.cc:131] message` (TSL's format) and
# `W0000 00:00:1796116664.952589   10341 tf_tfl_flatbuffer_helpers.cc:364] message` (absl's).
_TSL_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: ([IWEF]) (\S+?):\d+\] (.*)$")
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ (\S+?):\d+\] (.*)$")

# Warnings and errors that are chatter: (source file pattern, message pattern).
_CHATTER = (
    # CPU feature notes: informational, printed as an error on CPUs without AVX-512.
    (r"util\.cc$", r"^oneDNN supports DT_INT32 only on platforms with AVX-512"),
    # The TFLite converter's notes on options it does not use.
    (r"tf_tfl_flatbuffer_helpers\.cc$", r"^Ignored (output_format|drop_control_dependency)\."),
    (r"flatbuffer_export\.cc$", r"^Skipping runtime version metadata in the model"),
)
# CUDA probes (cuInit failing, no cuDNN/cuFFT/cuBLAS to register): chatter on a machine
# without an NVIDIA device, real news on one with it.
_CUDA_SOURCE = re.compile(r"(^|/)(cuda[^/]*|[^/]*_cuda[^/]*|gpu_device|cudart_stub)\.cc$")
# Whole lines without a header, printed by the converter and the TFLite runtime.
_CHATTER_LINES = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
    r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, "
    r"output_inference_type: \w+$",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate "
    r"compiler flags\.$",
)


def has_nvidia_device() -> bool:
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def is_chatter(line: str, gpu_present: bool) -> bool:
    """Whether one stderr line (no newline) is framework chatter that belongs to DEBUG."""
    for pattern in (_TSL_LINE, _ABSL_LINE):
        match = pattern.match(line)
        if match:
            severity, source, message = match.groups()
            if severity == "I":
                return True
            if severity == "F":
                return False
            if _CUDA_SOURCE.search(source) and not gpu_present:
                return True
            return any(
                re.search(file_pattern, source) and re.search(message_pattern, message)
                for file_pattern, message_pattern in _CHATTER
            )
    return any(re.match(pattern, line) for pattern in _CHATTER_LINES)


def filter_stream(
    lines, write: Callable[[bytes], None], show_chatter: bool, gpu_present: bool
) -> int:
    """Write every line (bytes) of `lines` that is not chatter (all of them with
    `show_chatter`); returns how many were held back."""
    held_back = 0
    for line in lines:
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if show_chatter or not is_chatter(text, gpu_present):
            write(line)
        else:
            held_back += 1
    return held_back


def start_native_log_filter(show_chatter: bool) -> Callable[[], None]:
    """Route this process's stderr through the filter process; returns the function that
    undoes it and waits for the last lines to be written (also registered with atexit)."""
    original = os.dup(2)
    child = subprocess.Popen(
        [sys.executable, "-m", "sagemaker_tfod.container.native_log"]
        + (["--show-chatter"] if show_chatter else [])
        + (["--gpu"] if has_nvidia_device() else []),
        stdin=subprocess.PIPE,
        stdout=original,
        stderr=original,
    )
    assert child.stdin is not None
    sys.stderr.flush()
    os.dup2(child.stdin.fileno(), 2)
    child.stdin.close()  # fd 2 is now this process's only write end of the pipe
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped:
            return
        stopped = True
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's write end: the child drains it and exits
        os.close(original)
        # A process the job started may still hold the pipe; do not wait for it forever.
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=10)

    atexit.register(stop)
    return stop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show-chatter", action="store_true", help="pass every line")
    parser.add_argument("--gpu", action="store_true", help="keep CUDA messages")
    args = parser.parse_args()
    # Ctrl-C and SIGTERM are for the job; this process ends when the job's stderr closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    output = sys.stdout.buffer

    def write(line: bytes) -> None:
        output.write(line)
        output.flush()

    filter_stream(iter(sys.stdin.buffer.readline, b""), write, args.show_chatter, args.gpu)
    return 0


if __name__ == "__main__":
    sys.exit(main())
