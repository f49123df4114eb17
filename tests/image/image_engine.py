"""Build and run the training image without a Docker engine: podman (and its built-in buildah)
as root, with the settings this kind of machine needs, in a storage of its own.

Everything lives under one cache folder outside the repository (`SAGEMAKER_TFOD_CACHE`, else
`${XDG_CACHE_HOME:-~/.cache}/sagemaker-tfod/image-test`): the container storage, the
debootstrap root file system and the stand-in base image. The stand-in is the Dockerfile's own
`tensorflow` stage built on Debian bookworm made with debootstrap (the official bases cannot be
pulled here), tagged with a hash of its recipe: a changed recipe builds a new one, an unchanged
one is reused from the previous run on the same machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger("image-test")

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
BASE_LOCK = REPO / "requirements-base.lock"

# Debian bookworm as `debian:bookworm-slim` has it: the minimal variant of debootstrap.
DEBOOTSTRAP_ARGS = ("--variant=minbase", "bookworm")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
STANDIN_REPOSITORY = "localhost/tfod-standin-base"
OS_REPOSITORY = "localhost/tfod-debootstrap-bookworm"
# The Dockerfile's first stage: Python 3.11 + TensorFlow. The stand-in is that stage without the
# CUDA libraries (no GPU here), so the image build that uses it skips those layers.
TENSORFLOW_STAGE = "tensorflow"
FINAL_STAGE_LINE = f"FROM {TENSORFLOW_STAGE}"

# Settings this machine needs (shared/notes/image-and-pi.md): runc (crun fails on its hybrid
# cgroups), cgroupfs, no default ulimits (they exceed the hard limits), no pids limit.
CONTAINERS_CONF = """\
[containers]
default_ulimits = []
pids_limit = 0

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""


def cache_dir() -> pathlib.Path:
    explicit = os.environ.get("SAGEMAKER_TFOD_CACHE")
    if explicit:
        return pathlib.Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "sagemaker-tfod" / "image-test"


def ca_bundle() -> pathlib.Path | None:
    """The CA bundle the environment points pip at (behind a TLS-intercepting proxy), if any."""
    for variable in ("PIP_CERT", "SSL_CERT_FILE"):
        value = os.environ.get(variable)
        if value and pathlib.Path(value).is_file():
            return pathlib.Path(value)
    return None


def ca_secret_args() -> list[str]:
    """`--secret` for the Dockerfile's `pip-ca` mount: read-only, for one RUN, never in a layer."""
    bundle = ca_bundle()
    return ["--secret", f"id=pip-ca,src={bundle}"] if bundle else []


def why_podman_cannot_run() -> str | None:
    """None when this machine can build and run images the way the image test does."""
    if os.geteuid() != 0:
        return "the image test builds and runs containers as root (podman with chroot isolation)"
    missing = [tool for tool in ("podman", "runc", "debootstrap") if not shutil.which(tool)]
    if missing:
        return f"missing {', '.join(missing)}: apt-get install podman runc debootstrap"
    return None


def storage_driver() -> str:
    """overlay where the kernel has it (a container starts at once), else vfs, which copies
    the whole image (3 GB) for every container and every layer; IMAGE_TEST_STORAGE_DRIVER
    chooses."""
    chosen = os.environ.get("IMAGE_TEST_STORAGE_DRIVER")
    if chosen:
        return chosen
    filesystems = pathlib.Path("/proc/filesystems")
    has_overlay = filesystems.exists() and "\toverlay\n" in filesystems.read_text()
    return "overlay" if has_overlay else "vfs"


@dataclass(frozen=True)
class Podman:
    """`podman` with its own storage and containers.conf under `root`."""

    root: pathlib.Path
    driver: str

    @classmethod
    def at(cls, root: pathlib.Path, driver: str | None = None) -> Podman:
        driver = driver or storage_driver()
        root.mkdir(parents=True, exist_ok=True)
        (root / "containers.conf").write_text(CONTAINERS_CONF)
        (root / f"storage-{driver}.conf").write_text(
            "[storage]\n"
            f'driver = "{driver}"\n'
            f'graphroot = "{root / ("storage-" + driver)}"\n'
            f'runroot = "{root / ("run-" + driver)}"\n'
        )
        return cls(root, driver)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "CONTAINERS_CONF": str(self.root / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.root / f"storage-{self.driver}.conf"),
            "BUILDAH_ISOLATION": "chroot",
        }

    def command(self, *args: str) -> list[str]:
        return ["podman", *args]

    def run(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run(
            self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and completed.returncode != 0:
            raise RuntimeError(
                f"podman {' '.join(args[:3])} failed ({completed.returncode}):\n"
                f"{(completed.stdout + completed.stderr)[-4000:]}"
            )
        return completed

    def build(self, *args: str, log_file: pathlib.Path, timeout: float = 3000) -> None:
        """`podman build` with its output in `log_file` (progress of a long build is there)."""
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("w") as out:
            completed = subprocess.run(
                # --layers=false: one layer per stage (vfs stores every layer as a full copy).
                self.command("build", "--layers=false", *ca_secret_args(), *args),
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        if completed.returncode != 0:
            tail = log_file.read_text()[-6000:]
            raise RuntimeError(f"podman build failed ({completed.returncode}), {log_file}:\n{tail}")

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "exists", ref, check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self.run("image", "inspect", "--format", "{{.Size}}", ref).stdout.strip())

    def tags(self, repository: str) -> list[str]:
        out = self.run("images", "--format", "{{.Repository}}:{{.Tag}}", repository).stdout
        return [line for line in out.split() if line.startswith(repository + ":")]

    @contextmanager
    def mounted(self, ref: str) -> Iterator[pathlib.Path]:
        """The image's root file system, read from the host (no container copy)."""
        path = pathlib.Path(self.run("image", "mount", ref).stdout.strip())
        try:
            yield path
        finally:
            self.run("image", "unmount", ref, check=False)


def _sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def tensorflow_stage_recipe(dockerfile_text: str) -> str:
    """The Dockerfile up to its final stage: what the stand-in base is built from."""
    head, found, _tail = dockerfile_text.partition("\n" + FINAL_STAGE_LINE + "\n")
    if not found:
        raise ValueError(f"Dockerfile has no line {FINAL_STAGE_LINE!r} starting the final stage")
    return head


def os_key() -> str:
    return _sha256(" ".join((*DEBOOTSTRAP_ARGS, DEBIAN_MIRROR)).encode())


def standin_key() -> str:
    """Changes whenever anything the stand-in is built from changes."""
    return _sha256(
        os_key().encode(),
        tensorflow_stage_recipe(DOCKERFILE.read_text()).encode(),
        BASE_LOCK.read_bytes(),
    )


def _debootstrap_tar(cache: pathlib.Path) -> pathlib.Path:
    tar = cache / f"debootstrap-bookworm-{os_key()}.tar"
    if tar.is_file():
        return tar
    with tempfile.TemporaryDirectory(dir=cache, prefix=".debootstrap-") as work:
        rootfs = pathlib.Path(work) / "rootfs"
        log.info("debootstrap %s into %s", " ".join(DEBOOTSTRAP_ARGS), rootfs)
        subprocess.run(
            ["debootstrap", *DEBOOTSTRAP_ARGS, str(rootfs), DEBIAN_MIRROR],
            check=True,
            capture_output=True,
            timeout=1200,
        )
        partial = pathlib.Path(work) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True)
        partial.rename(tar)  # whole or absent: an interrupted run leaves no half tarball
    return tar


@dataclass
class StandinBase:
    ref: str
    cached: bool
    seconds: float


def ensure_standin_base(podman: Podman, cache: pathlib.Path) -> StandinBase:
    """The cached stand-in base for this recipe, built (about 2-4 minutes) when missing."""
    ref = f"{STANDIN_REPOSITORY}:{standin_key()}"
    if podman.image_exists(ref):
        return StandinBase(ref, cached=True, seconds=0.0)
    started = time.monotonic()
    os_ref = f"{OS_REPOSITORY}:{os_key()}"
    if not podman.image_exists(os_ref):
        podman.run("import", str(_debootstrap_tar(cache)), os_ref, timeout=1200)
    podman.build(
        "--target", TENSORFLOW_STAGE,
        "--build-arg", f"BASE_IMAGE={os_ref}",
        "--build-arg", "TENSORFLOW_EXTRAS=",
        "--tag", ref,
        str(REPO),
        log_file=cache / "logs" / "standin-base.log",
    )  # fmt: skip
    for stale in podman.tags(STANDIN_REPOSITORY):
        if stale != ref:
            podman.run("rmi", "--force", stale, check=False)
    podman.run("image", "prune", "--force", check=False)
    return StandinBase(ref, cached=False, seconds=time.monotonic() - started)


@dataclass
class BuiltImage:
    """The training image built from this checkout's Dockerfile on the stand-in base."""

    podman: Podman
    ref: str
    base: StandinBase
    build_seconds: float
    size: int
    base_size: int

    @property
    def added_bytes(self) -> int:
        return self.size - self.base_size

    def summary(self) -> str:
        mb = 1e6
        origin = "cached" if self.base.cached else f"built in {self.base.seconds:.0f} s"
        return (
            f"stand-in base {self.base.ref} ({origin}), {self.base_size / mb:.0f} MB; "
            f"image {self.ref} built in {self.build_seconds:.0f} s, {self.size / mb:.0f} MB, "
            f"{self.added_bytes / mb:.0f} MB on top of the base"
        )


def build_image(podman: Podman, cache: pathlib.Path, tag: str) -> BuiltImage:
    base = ensure_standin_base(podman, cache)
    started = time.monotonic()
    podman.build(
        "--build-arg", f"BASE_IMAGE={base.ref}",
        "--build-arg", "TENSORFLOW_EXTRAS=",
        "--tag", tag,
        str(REPO),
        log_file=cache / "logs" / "image.log",
    )  # fmt: skip
    seconds = time.monotonic() - started
    podman.run("image", "prune", "--force", check=False)  # the previous build's image
    return BuiltImage(
        podman=podman,
        ref=tag,
        base=base,
        build_seconds=seconds,
        size=podman.image_size(tag),
        base_size=podman.image_size(base.ref),
    )


def existing_image(podman: Podman, cache: pathlib.Path, tag: str) -> BuiltImage:
    """The image a previous build left under `tag` (no build; for iterating on tests)."""
    base = ensure_standin_base(podman, cache)
    if not podman.image_exists(tag):
        raise RuntimeError(f"no image {tag} to reuse: run once without IMAGE_TEST_REUSE")
    return BuiltImage(
        podman=podman,
        ref=tag,
        base=base,
        build_seconds=0.0,
        size=podman.image_size(tag),
        base_size=podman.image_size(base.ref),
    )


# ---- running the image as SageMaker does -------------------------------------------------


@dataclass
class ContainerRun:
    """A finished container: exit code and everything it printed."""

    returncode: int
    log: str
    notes: dict[str, str] = field(default_factory=dict)


def run_args(
    image: BuiltImage,
    opt_ml: pathlib.Path,
    args: Sequence[str] = (),
    *,
    name: str | None = None,
    publish: Sequence[str] = (),
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """`podman run` arguments: `opt_ml` mounted at /opt/ml, as SageMaker mounts it."""
    command = ["run", "--rm", "--volume", f"{opt_ml}:/opt/ml"]
    if name:
        command += ["--name", name]
    for mapping in publish:
        command += ["--publish", mapping]
    for key, value in (env or {}).items():
        command += ["--env", f"{key}={value}"]
    return [*command, *extra, image.ref, *args]


def run_image(
    image: BuiltImage,
    opt_ml: pathlib.Path,
    args: Sequence[str] = (),
    *,
    timeout: float = 900,
    **options,
) -> ContainerRun:
    """Run the image to completion (`args` after the image name, as SageMaker passes `train`)."""
    completed = image.podman.run(
        *run_args(image, opt_ml, args, **options), timeout=timeout, check=False
    )
    return ContainerRun(completed.returncode, completed.stdout + completed.stderr)


@contextmanager
def started_container(
    image: BuiltImage, opt_ml: pathlib.Path, args: Sequence[str] = (), *, name: str, **options
) -> Iterator[subprocess.Popen[str]]:
    """A container in the foreground of a `podman run` process whose output can be read line by
    line (stdout and stderr together); removed, if still there, on exit."""
    process = subprocess.Popen(
        image.podman.command(*run_args(image, opt_ml, args, name=name, **options)),
        env=image.podman.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            image.podman.run("rm", "--force", "--time", "0", name, check=False)
            process.wait(timeout=60)


def write_json(path: pathlib.Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
