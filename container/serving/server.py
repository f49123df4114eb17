"""`python -m container serve`: bind the port at once, then gunicorn workers that load the model.

The master binds the listening socket before it imports gunicorn, numpy or any runtime, so
the port accepts connections within milliseconds of the start (SageMaker asks for 250 ms); the
kernel queues them until a worker takes them. gunicorn (gthread workers) then forks the workers;
each loads the model once, in the background, and answers `/ping` 503 until it is ready.

SIGTERM (SageMaker's stop): the master closes the port and tells the workers; each finishes
its in-flight requests, up to TFOD_SERVE_GRACEFUL_TIMEOUT (25 s, inside SageMaker's 30 s), and
exits. A model that cannot be loaded stops the whole server with its reason in the log (and in
/opt/ml/output/failure when that folder exists), rather than leaving a worker that cannot serve.

Exit codes: 0 after a stop, 1 bad settings or model folder (one line), 3 a worker could not load
the model (gunicorn's boot error).
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import socket
import sys
from collections.abc import Sequence

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.sagemaker_env import SageMakerEnv
from sagemaker_tfod.container.serving import config as serve_config
from sagemaker_tfod.container.serving.config import ServeConfig
from sagemaker_tfod.container.serving.exports import ExportChoice, choose_export

log = logging.getLogger("sagemaker_tfod.container.serving")

EXIT_BAD_CONFIG = 1
# gunicorn's Arbiter.WORKER_BOOT_ERROR: a worker exiting with it halts the whole server.
EXIT_WORKER_BOOT_ERROR = 3
# Seconds an idle kept-alive connection stays open (SageMaker's front end reuses them).
KEEPALIVE_S = 30


def _epilog() -> str:
    rows = "\n".join(
        f"  {env:38} {default:18} {meaning}" for env, default, meaning in serve_config.describe()
    )
    return (
        "environment (SageMaker's names where it has one):\n"
        f"{rows}\n\n"
        "The model folder is $SAGEMAKER_BASE_DIR/model (default /opt/ml/model) unless "
        "--model-dir is given."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m container serve",
        description="Serve the trained detector over HTTP: SageMaker endpoints and batch "
        "transform (GET /ping, POST /invocations, GET /execution-parameters).",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=pathlib.Path, help="model folder `train` wrote")
    parser.add_argument(
        "--host", default="0.0.0.0", help="address to bind (%(default)s; SageMaker needs it)"
    )
    parser.add_argument("--port", type=int, help="port (SAGEMAKER_BIND_TO_PORT, else 8080)")
    parser.add_argument("--workers", type=int, help="worker processes (see below)")
    parser.add_argument("--export", help="which export serves (TFOD_SERVE_EXPORT)")
    return parser


def resolve(args: argparse.Namespace, environ=None) -> tuple[ServeConfig, ExportChoice]:
    """Settings and the export to serve, checked before anything binds (UserError if wrong)."""
    from sagemaker_tfod.edge.errors import EdgeError
    from sagemaker_tfod.edge.labels import read_labels

    config = ServeConfig.from_environ(
        os.environ if environ is None else environ,
        cpu_count=serve_config.usable_cpu_count(),
        gpu=serve_config.gpu_present(),
        model_dir=args.model_dir,
        host=args.host,
        overrides={"port": args.port, "workers": args.workers, "export": args.export},
    )
    choice = choose_export(config.model_dir, config.export, config.gpu)
    try:
        read_labels(None, choice.path)  # labels.txt must agree with export.json
    except EdgeError as error:
        raise UserError(str(error)) from None
    return config, choice


def bind(config: ServeConfig) -> socket.socket:
    try:
        listener = socket.create_server((config.host, config.port), backlog=config.backlog)
    except OSError as error:
        raise UserError(
            f"cannot listen on {config.host}:{config.port} ({error.strerror}); another server "
            "may hold the port: stop it or pick another (--port / SAGEMAKER_BIND_TO_PORT)"
        ) from None
    return listener


def seconds_since_start() -> float | None:
    """How long ago this process started (Linux /proc, 10 ms resolution), for the log line
    that shows the port was bound inside SageMaker's 250 ms."""
    try:
        after_name = pathlib.Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(after_name[19])  # field 22, starttime, in clock ticks since boot
        uptime = float(pathlib.Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def write_failure(message: str, environ=None) -> None:
    """SageMaker's failure file, when this runs inside its layout (never on a laptop's /opt)."""
    env = SageMakerEnv.from_environ(os.environ if environ is None else environ)
    if not env.output_dir.is_dir():
        return
    try:
        from sagemaker_tfod.data_prep.files import atomic_write_text

        atomic_write_text(env.failure_file, message.strip() + "\n")
    except OSError:
        log.exception("could not write %s", env.failure_file)


def gunicorn_options(config: ServeConfig, fd: int) -> dict:
    """The gunicorn settings for `config`, serving the already-bound socket `fd` (pure)."""
    return {
        "bind": [f"fd://{fd}"],
        "worker_class": "gthread",
        "workers": config.workers,
        "threads": config.http_threads,
        "worker_connections": config.max_connections,
        "backlog": config.backlog,
        # gthread workers report to the master from their event loop, also while a request
        # runs; this is how long a wedged worker may go silent before it is replaced.
        "timeout": max(30, 2 * config.timeout_s),
        "graceful_timeout": config.graceful_timeout_s,
        "keepalive": KEEPALIVE_S,
        "preload_app": False,  # every worker loads its own model after the fork
        "control_socket_disable": True,
        "proc_name": "tfod-serve",
        "errorlog": "-",
        "loglevel": "info",
        "accesslog": None,
    }


def _worker_app(config: ServeConfig, choice: ExportChoice):
    """Runs in each worker after the fork: start loading the model, return the WSGI app."""
    from sagemaker_tfod.container.serving.app import ServingApp
    from sagemaker_tfod.container.serving.model import ServedModel

    def give_up(reason: str) -> None:
        write_failure(f"cannot load the model {choice.path}: {reason}")
        logging.shutdown()
        os._exit(EXIT_WORKER_BOOT_ERROR)

    model = ServedModel(choice, threads=config.model_threads, on_failure=give_up)
    model.start_loading()
    return ServingApp(config, model)


def run_gunicorn(config: ServeConfig, choice: ExportChoice, listener: socket.socket) -> int:
    from gunicorn.app.base import BaseApplication

    options = gunicorn_options(config, listener.detach())

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return _worker_app(config, choice)

    try:
        Server().run()
    except SystemExit as stop:  # the arbiter ends with sys.exit(status)
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        config, choice = resolve(args)
        listener = bind(config)
    except UserError as error:
        message = " ".join(str(error).split())
        log.error("cannot serve: %s", message)
        write_failure(message)
        return EXIT_BAD_CONFIG
    since_start = seconds_since_start()
    log.info(
        "listening on %s:%d%s; serving %s (%s) with %d worker(s) x %d model thread(s)",
        config.host,
        config.port,
        "" if since_start is None else f" ({since_start * 1000:.0f} ms after the start)",
        choice.path,
        choice.reason,
        config.workers,
        config.model_threads,
    )
    return run_gunicorn(config, choice, listener)


if __name__ == "__main__":
    sys.exit(main())
