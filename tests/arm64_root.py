"""The Raspberry Pi's own platform on an x86 machine: a Debian bookworm arm64 root under qemu.

Raspberry Pi OS 64-bit is Debian bookworm on aarch64 (Python 3.11.2), so a root built by
`debootstrap --arch=arm64` and run through qemu-user's binfmt entry runs the same Python and
the same aarch64 wheels a Pi installs with pip.

- `ensure_emulation()` registers qemu-aarch64 with the kernel when needed; it raises
  `EmulationUnavailable` (the one reason to skip) where that cannot be done.
- `build_root()` runs debootstrap once per recipe and caches the result outside the
  repository (`TFOD_ARM64_ROOT_CACHE`, default `~/.cache/sagemaker-tfod/arm64-root`), keyed by
  a hash of the recipe, so changing the recipe builds a new root.
- `run_in_root()` runs a command in the root with a clean environment (`env -i`), inside a
  private mount namespace: the root itself is mounted read-only (nothing a test does changes
  the cache), a work folder and a pip cache are bound in, and the machine's CA bundle
  (`SSL_CERT_FILE`) is bound read-only over the root's, never copied into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass

BINFMT_DIR = pathlib.Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "qemu-aarch64"
BINFMT_CONF = pathlib.Path("/usr/lib/binfmt.d/qemu-aarch64.conf")  # from qemu-user-static
CACHE_ENV = "TFOD_ARM64_ROOT_CACHE"
# Mount points inside the root: the test's work folder and the pip download cache.
WORK_MOUNT = "/pi"
PIP_CACHE_MOUNT = "/pi-cache"
ROOT_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEBOOTSTRAP_TIMEOUT_S = 3600


class EmulationUnavailable(Exception):
    """This machine cannot run aarch64 binaries (the reason says why)."""


@dataclass(frozen=True)
class Recipe:
    """Everything the root is built from; its hash names the cached root."""

    suite: str = "bookworm"
    arch: str = "arm64"
    variant: str = "minbase"
    # What a Raspberry Pi OS Lite user has for `python3 -m venv` (pip comes from ensurepip).
    packages: tuple[str, ...] = ("python3", "python3-venv", "ca-certificates")
    mirror: str = "http://deb.debian.org/debian"
    # Folders created after debootstrap (mount points; the root is mounted read-only later).
    mount_points: tuple[str, ...] = (WORK_MOUNT, PIP_CACHE_MOUNT)
    version: int = 1  # bump when the build steps below change

    @property
    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir() -> pathlib.Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return pathlib.Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "sagemaker-tfod" / "arm64-root"


def ensure_emulation() -> None:
    """Register qemu-aarch64 with binfmt_misc unless it already is.

    Raises EmulationUnavailable when this machine cannot do it: not root, no qemu-user-static,
    or a kernel/container that refuses binfmt_misc.
    """
    if os.geteuid() != 0:
        raise EmulationUnavailable(
            "registering qemu-aarch64 and chrooting need root; run `make pi-test` as root"
        )
    if not BINFMT_CONF.is_file():
        raise EmulationUnavailable(
            f"{BINFMT_CONF} is missing; install qemu-user-static (apt-get install qemu-user-static)"
        )
    if not (BINFMT_DIR / "register").exists():
        completed = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise EmulationUnavailable(
                f"cannot mount binfmt_misc at {BINFMT_DIR}: {completed.stderr.strip()}"
            )
    entry = BINFMT_DIR / BINFMT_NAME
    if not entry.exists():
        try:
            (BINFMT_DIR / "register").write_bytes(BINFMT_CONF.read_bytes().strip())
        except OSError as error:
            raise EmulationUnavailable(
                f"the kernel refused the qemu-aarch64 entry: {error}"
            ) from None
    if entry.read_text().splitlines()[0].strip() != "enabled":
        raise EmulationUnavailable(f"{entry} exists but is disabled (echo 1 > {entry} enables it)")


def build_root(recipe: Recipe = Recipe(), log=print) -> pathlib.Path:
    """The cached root for `recipe`, built with debootstrap if it is not there yet."""
    cache = cache_dir()
    root = cache / recipe.key
    if (root / ".recipe.json").is_file():
        return root
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed; apt-get install debootstrap")
    cache.mkdir(parents=True, exist_ok=True)
    for stale in cache.glob(f".{recipe.key}.tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or not pathlib.Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    building = cache / f".{recipe.key}.tmp-{os.getpid()}"
    started = time.monotonic()
    log(f"building the {recipe.suite} {recipe.arch} root in {root} (debootstrap, once)")
    # In a private mount namespace, so the proc/sys mounts debootstrap makes inside the target
    # disappear with it even if it is killed (then deleting the half-built root is safe).
    command = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "nice",
        "-n",
        "10",
        "debootstrap",
        f"--arch={recipe.arch}",
        f"--variant={recipe.variant}",
        f"--include={','.join(recipe.packages)}",
        recipe.suite,
        str(building),
        recipe.mirror,
    ]
    completed = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=DEBOOTSTRAP_TIMEOUT_S,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    )
    if completed.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        raise RuntimeError(
            f"debootstrap failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n"
            f"{completed.stderr[-3000:]}"
        )
    for mount_point in recipe.mount_points:
        (building / mount_point.lstrip("/")).mkdir(parents=True, exist_ok=True)
    (building / "etc" / "resolv.conf").touch()  # a bind-mount target
    (building / ".recipe.json").write_text(json.dumps(asdict(recipe), indent=2) + "\n")
    try:
        building.rename(root)
    except OSError:  # built by a concurrent run meanwhile
        shutil.rmtree(building, ignore_errors=True)
    log(f"root built in {time.monotonic() - started:.0f} s")
    return root


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What `env -i` leaves, plus what a login shell on the Pi would have."""
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": f"{WORK_MOUNT}/home",
        "LANG": "C.UTF-8",
        "TMPDIR": "/tmp",
        "PIP_CACHE_DIR": PIP_CACHE_MOUNT,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }
    if os.environ.get("SSL_CERT_FILE"):
        environment["SSL_CERT_FILE"] = ROOT_CA_BUNDLE
        environment["PIP_CERT"] = ROOT_CA_BUNDLE
    environment.update(extra or {})
    return environment


@dataclass(frozen=True)
class Board:
    """A Raspberry Pi model as emulated: qemu's CPU and what /proc/cpuinfo says about it."""

    qemu_cpu: str
    model: str
    part: str  # MIDR part number
    variant: str
    revision: int
    features: str

    def proc_cpuinfo(self, cpus: int) -> str:
        block = (
            "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n"
            "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {variant}\n"
            "CPU part\t: {part}\nCPU revision\t: {revision}\n\n"
        )
        blocks = "".join(
            block.format(
                n=n,
                features=self.features,
                variant=self.variant,
                part=self.part,
                revision=self.revision,
            )
            for n in range(cpus)
        )
        return f"{blocks}Model\t\t: {self.model}\n"


BOARDS = {
    "cortex-a72": Board(
        "cortex-a72", "Raspberry Pi 4 Model B", "0xd08", "0x0", 3, "fp asimd evtstrm crc32 cpuid"
    ),
    "cortex-a76": Board(
        "cortex-a76",
        "Raspberry Pi 5 Model B",
        "0xd0b",
        "0x4",
        1,
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
        "dcpop asimddp",
    ),
}


def run_in_root(
    root: pathlib.Path,
    work: pathlib.Path,
    command: list[str],
    *,
    cpu: str = "cortex-a72",
    pip_cache: pathlib.Path | None = None,
    environment: dict[str, str] | None = None,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """Run `command` in `root` (read-only) with `work` at /pi, under qemu via binfmt, as the
    Raspberry Pi whose CPU is `cpu` (a key of BOARDS)."""
    board = BOARDS[cpu]
    cpus = os.cpu_count() or 1
    environment = {"QEMU_CPU": board.qemu_cpu, **(environment or {})}
    pip_cache = pip_cache or cache_dir() / "pip-cache"
    pip_cache.mkdir(parents=True, exist_ok=True)
    (work / "home").mkdir(parents=True, exist_ok=True)
    q = shlex.quote
    r = q(str(root))
    lines = [
        "set -e",
        f"mount --bind {r} {r}",
        f"mount -o remount,bind,ro {r}",
        f"mount -t proc proc {r}/proc",
        f"mount --rbind /dev {r}/dev",
        f"mount -t tmpfs tmpfs {r}/tmp",
        # What XNNPACK's CPU probe (cpuinfo) reads on a Pi: without it, XNNPACK does not start
        # and TFLite silently runs its slower built-in kernels; the x86 host's own files
        # crash it. The instruction set itself is qemu's (QEMU_CPU).
        f"mount -t tmpfs -o size=1m tmpfs {r}/sys",
        f"mkdir -p {r}/sys/devices/system/cpu",
        f"echo 0-{cpus - 1} > {r}/sys/devices/system/cpu/possible",
        f"echo 0-{cpus - 1} > {r}/sys/devices/system/cpu/present",
        f"printf %s {q(board.proc_cpuinfo(cpus))} > {r}/tmp/.cpuinfo",
        f"mount --bind {r}/tmp/.cpuinfo {r}/proc/cpuinfo",
        f"mount --bind {q(str(work))} {r}{WORK_MOUNT}",
        f"mount --bind {q(str(pip_cache))} {r}{PIP_CACHE_MOUNT}",
        f"mount -o bind,ro /etc/resolv.conf {r}/etc/resolv.conf",
    ]
    ca_bundle = os.environ.get("SSL_CERT_FILE")
    if ca_bundle:
        lines.append(f"mount -o bind,ro {q(ca_bundle)} {r}{ROOT_CA_BUNDLE}")
    env_args = " ".join(q(f"{k}={v}") for k, v in clean_environment(environment).items())
    lines.append(
        f"exec chroot {r} /usr/bin/env -i {env_args} " + " ".join(q(part) for part in command)
    )
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"},
    )


def main() -> int:
    """`python -m tests.arm64_root`: build (or find) the root and run its Python once; where
    emulation is unavailable, say why and succeed (the tests then skip with that reason)."""
    try:
        ensure_emulation()
    except EmulationUnavailable as reason:
        print(f"arm64 root: not built, aarch64 emulation is not available here: {reason}")
        return 0
    started = time.monotonic()
    built = build_root()
    scratch = cache_dir() / "scratch"
    version = run_in_root(built, scratch, ["python3", "-V"]).stdout.strip()
    print(f"arm64 root: {built} ({version}, ready in {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
