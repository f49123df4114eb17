"""Serving speed: the HTTP server against in-process inference of the same model, same images.

    .venv/bin/python benchmarks/bench_serve.py --model-dir MODEL_DIR [--seconds 8] [--rounds 2]

1. Exports (in-process, one thread, decode + detect per image): median and p90 latency of every
   export in MODEL_DIR: the measurement behind the CPU default of TFOD_SERVE_EXPORT.
2. Startup: how soon `python -m container serve` accepts a TCP connection (SageMaker asks for
   250 ms) and answers /ping 200, over several starts.
3. Server vs in-process for the default export: throughput and p50/p99 latency at 1, 2, 4 and 8
   concurrent keep-alive clients (JPEG bodies, responses read but not parsed), against the
   same decode + detect code (container.serving's, without HTTP) run in as many processes as
   the server has workers: the most a server can approach. Rounds alternate the two so a
   neighbour's load on a shared CPU hits both alike; each figure is the median over rounds.
   Also the CPU time per request (the server's master and workers from /proc; the in-process
   workers' own): on a CPU shared with other jobs, wall-clock throughput follows the
   neighbours, CPU time per request much less so.

Targets (issue 9): at saturation >= 90% of in-process throughput; p50 overhead < 5 ms.
Images: the raccoon set (real photos, about 500 x 400 px) unless --images is given.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import multiprocessing
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

logger = logging.getLogger("bench_serve")

RACCOON = REPO.parent / "shared" / "datasets" / "raccoon" / "images"
CONCURRENCY = (1, 2, 4, 8)
THROUGHPUT_TARGET, OVERHEAD_TARGET_MS = 0.90, 5.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _model(model_dir: pathlib.Path, export: str, threads: int):
    from sagemaker_tfod.container.serving.exports import choose_export
    from sagemaker_tfod.container.serving.model import ServedModel

    model = ServedModel(choose_export(model_dir, export, gpu=False), threads=threads)
    model.load()
    return model


def _detect_loop(model, images: list[bytes], seconds: float) -> list[float]:
    """Decode + detect (the server's own code, without HTTP) for `seconds`; latencies in s."""
    from sagemaker_tfod.container.serving.decoding import (
        EncodedImage,
        Options,
        decode_image,
        use_own_pixel_limit,
    )

    use_own_pixel_limit()
    options = Options(0.0, None)
    latencies, index = [], 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        image = decode_image(
            EncodedImage("bench", images[index % len(images)]), 40_000_000, model.input_size
        )
        model.detect(image, options, 60)
        latencies.append(time.perf_counter() - started)
        index += 1
    return latencies


def _in_process_worker(args) -> tuple[list[float], float]:
    model_dir, export, threads, images, seconds, start_at = args
    logging.disable(logging.INFO)
    model = _model(pathlib.Path(model_dir), export, threads)
    _detect_loop(model, images, 1.0)  # warm
    while time.time() < start_at:  # all processes start timing together
        time.sleep(0.005)
    cpu = time.process_time()
    latencies = _detect_loop(model, images, seconds)
    return latencies, time.process_time() - cpu


def in_process(
    model_dir: pathlib.Path, export: str, processes: int, threads: int, images, seconds: float
) -> dict:
    """`processes` processes, each with its own model, all looping at once."""
    context = multiprocessing.get_context("spawn")
    start_at = time.time() + 8.0 + 2.0 * processes  # time to spawn and load
    with context.Pool(processes) as pool:
        results = pool.map(
            _in_process_worker,
            [(str(model_dir), export, threads, images, seconds, start_at)] * processes,
        )
    latencies = [value for result, _ in results for value in result]
    cpu_seconds = sum(cpu for _, cpu in results)
    return {
        "throughput": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "cpu_ms": 1000 * cpu_seconds / len(latencies),
        "requests": len(latencies),
    }


def _http_client(port: int, images: list[bytes], deadline: float, out: list, offset: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    index = offset
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            connection.request(
                "POST", "/invocations", images[index % len(images)], {"Content-Type": "image/jpeg"}
            )
            answer = connection.getresponse()
            answer.read()
            out.append((time.perf_counter() - started, answer.status))
            index += 1
    finally:
        connection.close()


def server_cpu_seconds(master: int) -> float:
    """CPU time (user + system) the master and its live workers have used so far."""
    pids = [
        master,
        *map(int, pathlib.Path(f"/proc/{master}/task/{master}/children").read_text().split()),
    ]
    ticks = 0
    for pid in pids:
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return ticks / os.sysconf("SC_CLK_TCK")


def http_load(
    port: int, images: list[bytes], clients: int, seconds: float, master: int | None = None
) -> dict:
    results: list = []
    cpu_before = server_cpu_seconds(master) if master else 0.0
    deadline = time.perf_counter() + seconds
    threads = [
        threading.Thread(target=_http_client, args=(port, images, deadline, results, i * 7))
        for i in range(clients)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = server_cpu_seconds(master) - cpu_before if master else float("nan")
    latencies = [latency for latency, status in results if status == 200]
    return {
        "throughput": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 99),
        "cpu_ms": 1000 * cpu / len(results),
        "requests": len(results),
        "errors": sum(status != 200 for _, status in results),
    }


def start_server(model_dir: pathlib.Path, export: str, workers: int, log) -> tuple:
    from serving_helpers import free_port, wait_until_ready

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "TFOD_SERVE_EXPORT": export}
    command = [sys.executable, "-m", "container", "serve", "--model-dir", str(model_dir)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    accepted = None
    while accepted is None and time.monotonic() - started < 30:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                accepted = time.monotonic() - started
        except OSError:
            time.sleep(0.001)
    ready = accepted + wait_until_ready(f"http://127.0.0.1:{port}", 180, process)
    return process, port, accepted, ready


def stop_server(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=40)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def bench_exports(model_dir: pathlib.Path, images, seconds: float) -> dict:
    from sagemaker_tfod.container.serving.exports import available_exports

    rows = {}
    for export in available_exports(model_dir):
        for threads in (1, 2):
            model = _model(model_dir, export, threads)
            _detect_loop(model, images, 1.0)
            cpu = time.process_time()
            latencies = _detect_loop(model, images, seconds)
            cpu = time.process_time() - cpu
            rows[f"{export} x{threads}"] = {
                "p50_ms": 1000 * statistics.median(latencies),
                "p90_ms": 1000 * percentile(latencies, 90),
                "cpu_ms": 1000 * cpu / len(latencies),
            }
            logger.info("%s, %d thread(s): %s", export, threads, rows[f"{export} x{threads}"])
            del model
    return rows


def bench_startup(model_dir: pathlib.Path, workdir: pathlib.Path, starts: int) -> dict:
    rows = {}
    for export in ("tflite_int8", "saved_model"):
        accepted, ready = [], []
        for _ in range(starts if export != "saved_model" else max(1, starts // 3)):
            with open(workdir / f"startup-{export}.log", "ab") as log:
                process, _, first, up = start_server(model_dir, export, 1, log)
                stop_server(process)
            accepted.append(first * 1000)
            ready.append(up)
        rows[export] = {
            "accept_ms_median": statistics.median(accepted),
            "accept_ms_max": max(accepted),
            "ping_200_s_median": statistics.median(ready),
            "starts": len(accepted),
        }
        logger.info("startup %s: %s", export, rows[export])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=pathlib.Path, required=True, help="a `train` output")
    parser.add_argument("--images", type=pathlib.Path, default=RACCOON, help="folder of JPEGs")
    parser.add_argument("--num-images", type=int, default=32)
    parser.add_argument("--export", default="auto", help="export for part 3 (TFOD_SERVE_EXPORT)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--starts", type=int, default=9, help="server starts timed in part 2")
    parser.add_argument("--skip", nargs="*", default=[], choices=["exports", "startup"])
    parser.add_argument("--json", type=pathlib.Path, help="write all figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from sagemaker_tfod.container.serving.exports import choose_export

    images = [p.read_bytes() for p in sorted(args.images.glob("*.jpg"))[: args.num_images]]
    export = choose_export(args.model_dir, args.export, gpu=False).name
    report: dict = {"export": export, "workers": args.workers, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as scratch:
        workdir = pathlib.Path(scratch)
        if "exports" not in args.skip:
            report["exports"] = bench_exports(args.model_dir, images, args.seconds)
        if "startup" not in args.skip:
            report["startup"] = bench_startup(args.model_dir, workdir, args.starts)
        rounds: list[dict] = []
        threads = max(1, (os.cpu_count() or 1) // args.workers)
        for number in range(args.rounds):
            row: dict = {}
            row["in_process_1"] = in_process(
                args.model_dir, export, 1, threads, images, args.seconds
            )
            row["in_process"] = in_process(
                args.model_dir, export, args.workers, threads, images, args.seconds
            )
            with open(workdir / "server.log", "ab") as log:
                process, port, _, _ = start_server(args.model_dir, export, args.workers, log)
                try:
                    http_load(port, images, 2, 2.0)  # warm every worker
                    for clients in CONCURRENCY:
                        row[f"http_{clients}"] = http_load(
                            port, images, clients, args.seconds, process.pid
                        )
                finally:
                    stop_server(process)
            logger.info("round %d: %s", number + 1, json.dumps(row))
            rounds.append(row)
        report["rounds"] = rounds
    median = {
        key: {
            field: statistics.median(r[key][field] for r in rounds)
            for field in ("throughput", "p50_ms", "p99_ms", "cpu_ms")
        }
        for key in rounds[0]
    }
    report["median"] = median
    saturation = max(median[f"http_{c}"]["throughput"] for c in CONCURRENCY)
    ratio = saturation / median["in_process"]["throughput"]
    overhead = median["http_1"]["p50_ms"] - median["in_process_1"]["p50_ms"]
    report["ratio"], report["p50_overhead_ms"] = ratio, overhead
    # CPU time per request does not depend on how much of the CPU the neighbours take, so on a
    # shared machine it is the steadier measure of what the server adds.
    cpu_ratio = median["in_process"]["cpu_ms"] / median["http_8"]["cpu_ms"]
    cpu_overhead = median["http_1"]["cpu_ms"] - median["in_process_1"]["cpu_ms"]
    report["cpu_ratio"], report["cpu_overhead_ms"] = cpu_ratio, cpu_overhead
    print(f"\nexport {export}, {args.workers} workers, {len(images)} images, {args.rounds} rounds")
    if "exports" in report:
        print("\nin-process latency per export (decode + detect):")
        for name, row in report["exports"].items():
            print(
                f"  {name:22} p50 {row['p50_ms']:7.1f} ms   p90 {row['p90_ms']:7.1f} ms   "
                f"CPU {row['cpu_ms']:7.1f} ms/image"
            )
    if "startup" in report:
        print("\nstartup (1 worker):")
        for name, row in report["startup"].items():
            print(
                f"  {name:12} port accepts after {row['accept_ms_median']:.0f} ms (median; max "
                f"{row['accept_ms_max']:.0f}), /ping 200 after {row['ping_200_s_median']:.1f} s"
            )
    print(f"\n{'':24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11}")
    for key, row in median.items():
        print(
            f"  {key:22} {row['throughput']:8.1f} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} "
            f"{row['cpu_ms']:11.1f}"
        )
    errors = sum(r[f"http_{c}"]["errors"] for r in rounds for c in CONCURRENCY)
    print(
        f"\nsaturation: server {saturation:.1f} req/s = {ratio:.1%} of in-process "
        f"(target >= {THROUGHPUT_TARGET:.0%}); p50 overhead at 1 client {overhead:.1f} ms "
        f"(target < {OVERHEAD_TARGET_MS:g}); HTTP errors {errors}"
    )
    print(
        f"CPU time per request: in-process {median['in_process']['cpu_ms']:.1f} ms, server at 8 "
        f"clients {median['http_8']['cpu_ms']:.1f} ms: the server does {cpu_ratio:.1%} of the "
        f"in-process work per CPU second; {cpu_overhead:.1f} ms more CPU per request at 1 client"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
