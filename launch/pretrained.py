"""Pretrained weights on the user's machine: the catalogue (pure data) and a thin downloader.

Each entry names the preset whose architecture matches the checkpoint, what it initialises
(`init_checkpoint_modules`), the published accuracy and where that figure is published. The
download goes to a local cache over HTTPS, resumes a cut connection with HTTP Range requests
(also after the command is run again), and is checked before it is used: the size against
the server's Content-Length (and the catalogue's size when it has one), and the content against
the checksums Google Cloud Storage sends in its `x-goog-hash` header (MD5 and CRC32C of the
whole object), or against the catalogue's SHA-256 when it has one. Neither Model Garden nor
Keras publishes sizes or checksums for these files, so the catalogue has none: the server's
own checksums are the check, and the SHA-256 computed on the first download is kept in the
cache manifest, so a changed or damaged cache is noticed later.

Training jobs never download anything: `launch train --pretrained NAME` uploads the cached
files as the `checkpoint` channel (`container/checkpoint_source.py` reads them there).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import pathlib
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sagemaker_tfod.data_prep.files import atomic_write_text
from sagemaker_tfod.launch.errors import LaunchError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DEFAULT_ATTEMPTS = 5
TIMEOUT_S = 60.0
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
PARTIAL_DIR = ".partial"

GCS = "https://storage.googleapis.com"
MODEL_GARDEN_MD = "https://github.com/tensorflow/models/blob/master/official/vision/MODEL_GARDEN.md"
QAT_README = (
    "https://github.com/tensorflow/models/blob/master/official/projects/qat/vision/README.md"
)


@dataclass(frozen=True)
class RemoteFile:
    url: str
    size: int | None = None  # bytes, when published
    sha256: str | None = None  # hex, when published

    @property
    def name(self) -> str:
        return pathlib.PurePosixPath(urllib.parse.urlparse(self.url).path).name


@dataclass(frozen=True)
class Pretrained:
    """One published set of weights and the preset it fits."""

    name: str
    preset: str  # the container's `model` hyperparameter
    modules: str  # the container's `init_checkpoint_modules`
    description: str
    published: str  # the accuracy its publisher reports
    source: str  # the page that publishes the file and the figure
    files: tuple[RemoteFile, ...]


# Facts from Model Garden's and Keras' own files (README's "Pretrained weights" says how each
# was checked); URLs are the https form of the gs:// paths those files give.
CATALOGUE: dict[str, Pretrained] = {
    entry.name: entry
    for entry in (
        Pretrained(
            name="mobilenetv2_256_coco",
            preset="retinanet_mobilenetv2_fpnlite_256",
            modules="backbone,decoder",
            description="RetinaNet MobileNetV2, FPN/head 128 separable, levels 3-7, COCO",
            published="COCO val2017 box AP 23.3 (float)",
            source=QAT_README,
            files=(
                RemoteFile(
                    f"{GCS}/tf_model_garden/vision/qat/mobilenetv2_ssd_coco/"
                    "mobilenetv2_ssd_i256_ckpt.tar.gz"
                ),
            ),
        ),
        Pretrained(
            name="spinenet49_mobile_384_coco",
            preset="retinanet_spinenet49_mobile_384",
            modules="backbone",  # its decoder is the identity: no variables
            description="RetinaNet SpineNet-49 mobile (SE 0.2), head 48 separable, COCO",
            published="COCO val2017 box AP 28.1",
            source=MODEL_GARDEN_MD,
            files=(RemoteFile(f"{GCS}/tf_model_garden/vision/retinanet/spinenet49mobile.tar.gz"),),
        ),
        Pretrained(
            name="resnet50_fpn_640_coco",
            preset="retinanet_resnet50_fpn_640",
            modules="backbone,decoder",
            description="RetinaNet ResNet-50 FPN, 72 epochs from ImageNet, COCO",
            published="COCO val2017 box AP 36.8",
            source=MODEL_GARDEN_MD,
            files=(
                RemoteFile(f"{GCS}/tf_model_garden/vision/retinanet/retinanet-resnet50fpn.tar.gz"),
            ),
        ),
        Pretrained(
            name="mobilenetv2_imagenet",
            preset="retinanet_mobilenetv2_fpnlite_320",
            modules="backbone",
            description="Model Garden MobileNetV2 1.0 ImageNet classifier (backbone only)",
            published="not published with the file (Model Garden's tutorial uses it)",
            source="https://github.com/tensorflow/models/blob/master/docs/vision/"
            "instance_segmentation.ipynb",
            files=tuple(
                RemoteFile(f"{GCS}/tf_model_garden/vision/mobilenet/v2_1.0_float/ckpt-180648{ext}")
                for ext in (".index", ".data-00000-of-00001")
            ),
        ),
        Pretrained(
            name="resnet50_imagenet",
            preset="retinanet_resnet50_fpn_640",
            modules="backbone",
            description="ResNet-50 ImageNet classifier (backbone only)",
            published="not published with the file (retinanet_resnetfpn_coco's init_checkpoint)",
            source="https://github.com/tensorflow/models/blob/master/official/vision/configs/"
            "retinanet.py",
            files=tuple(
                RemoteFile(
                    f"{GCS}/cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080{ext}"
                )
                for ext in (".index", ".data-00000-of-00001")
            ),
        ),
        Pretrained(
            name="keras_mobilenetv2_imagenet",
            preset="retinanet_mobilenetv2_fpnlite_320",
            modules="backbone",
            description="Keras Applications MobileNetV2 1.0 ImageNet (.h5, converted in the job)",
            published="ImageNet top-1 71.3% (Keras Applications table, 224 px)",
            source="https://keras.io/api/applications/",
            files=(
                RemoteFile(
                    f"{GCS}/tensorflow/keras-applications/mobilenet_v2/"
                    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
                ),
            ),
        ),
    )
}


def get(name: str) -> Pretrained:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise LaunchError(
            f"'{name}' is not in the pretrained catalogue; `python -m launch pretrained list` "
            f"shows them: {', '.join(CATALOGUE)}"
        ) from None


def download_url(url: str, mirror: str | None) -> str:
    """`url`, or the same path under `mirror` (a base URL standing in for the publisher's
    host, e.g. a company mirror or a test server). Plain HTTP only on loopback (pure)."""
    if mirror:
        path = urllib.parse.urlparse(url).path
        url = mirror.rstrip("/") + path
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "https":
        return url
    if parsed.scheme == "http" and parsed.hostname in LOOPBACK_HOSTS:
        return url
    raise LaunchError(
        f"{url}: pretrained weights are downloaded over https only (http only from a loopback "
        "address); fix the pretrained_mirror setting"
    )


def with_pretrained(hyperparameters: Mapping[str, Any], entry: Pretrained) -> dict[str, Any]:
    """The job's hyperparameters with the entry's preset and modules (pure); a `model` set to
    another preset is an error, an explicit `init_checkpoint_modules` is kept."""
    values = dict(hyperparameters)
    model = values.get("model")
    if model not in (None, "", entry.preset):
        raise LaunchError(
            f"--pretrained {entry.name} fits model={entry.preset}, but the hyperparameters say "
            f"model={model}; drop that setting or pick a checkpoint of {model} "
            "(python -m launch pretrained list)"
        )
    values["model"] = entry.preset
    values.setdefault("init_checkpoint_modules", entry.modules)
    return values


def default_cache_dir(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CACHE_HOME") or str(pathlib.Path.home() / ".cache")
    return pathlib.Path(base) / "sagemaker-tfod" / "pretrained"


def catalogue_rows(cache_dir: pathlib.Path) -> list[dict[str, Any]]:
    """What `pretrained list` prints: one row per entry, with its cached size if fetched."""
    rows = []
    for entry in CATALOGUE.values():
        manifest = read_manifest(cache_dir, entry.name)
        published = [f.size for f in entry.files if f.size is not None]
        size: int | None = None
        if manifest:
            size = sum(item["size"] for item in manifest["files"].values())
        elif len(published) == len(entry.files):
            size = sum(published)
        rows.append(
            {
                "name": entry.name,
                "preset": entry.preset,
                "initialises": entry.modules,
                "published": entry.published,
                "size": _format_size(size) if size is not None else "unknown until fetched",
                "cached": bool(manifest),
                "source_url": " ".join(f.url for f in entry.files),
                "published_in": entry.source,
            }
        )
    return rows


def _format_size(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


# ---- checksums --------------------------------------------------------------------------


def parse_goog_hash(headers: Mapping[str, str] | Any) -> dict[str, str]:
    """{'md5': base64, 'crc32c': base64} from `x-goog-hash` headers (repeated or joined)."""
    values = headers.get_all("x-goog-hash") if hasattr(headers, "get_all") else None
    if values is None:
        single = headers.get("x-goog-hash")
        values = [single] if single else []
    found = {}
    for value in values or []:
        for part in str(value).split(","):
            kind, _, digest = part.strip().partition("=")
            if kind in ("md5", "crc32c") and digest:
                found[kind] = digest
    return found


class _Digests:
    """MD5, SHA-256 and (with google_crc32c) CRC32C of a stream, in base64 / hex."""

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        try:
            import google_crc32c

            self._crc = google_crc32c.Checksum()
        except ImportError:  # the lock has it; without it the MD5 check remains
            self._crc = None

    def update(self, data: bytes) -> None:
        self.md5.update(data)
        self.sha256.update(data)
        if self._crc is not None:
            self._crc.update(data)

    def goog(self) -> dict[str, str]:
        found = {"md5": base64.b64encode(self.md5.digest()).decode()}
        if self._crc is not None:
            found["crc32c"] = base64.b64encode(self._crc.digest()).decode()
        return found


def file_digests(path: pathlib.Path) -> _Digests:
    digests = _Digests()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digests.update(chunk)
    return digests


# ---- the cache --------------------------------------------------------------------------


def manifest_path(cache_dir: pathlib.Path, name: str) -> pathlib.Path:
    return cache_dir / f"{name}.json"


def read_manifest(cache_dir: pathlib.Path, name: str) -> dict[str, Any] | None:
    path = manifest_path(cache_dir, name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def cached_folder(cache_dir: pathlib.Path, entry: Pretrained) -> pathlib.Path | None:
    """The entry's folder when every file is there with the size and SHA-256 recorded at
    download; None otherwise (not fetched, or changed since)."""
    manifest = read_manifest(cache_dir, entry.name)
    folder = cache_dir / entry.name
    if not manifest:
        return None
    for remote in entry.files:
        item = manifest["files"].get(remote.name)
        path = folder / remote.name
        if not item or not path.is_file() or path.stat().st_size != item["size"]:
            return None
        if file_digests(path).sha256.hexdigest() != item["sha256"]:
            log.warning("%s: changed since it was downloaded; fetching it again", path)
            return None
    return folder


@dataclass
class FetchReport:
    name: str
    folder: str
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    bytes_downloaded: int = 0
    resumed: int = 0  # requests that continued a partial download
    from_cache: bool = False

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# ---- HTTP -------------------------------------------------------------------------------

Opener = Callable[[urllib.request.Request, float], Any]


def _open(request: urllib.request.Request, timeout: float) -> Any:
    return urllib.request.urlopen(request, timeout=timeout)  # https, or http on loopback only


@dataclass
class _Partial:
    """A download in progress: `path.part` and what the server said about the object."""

    path: pathlib.Path
    total: int | None = None
    hashes: dict[str, str] = field(default_factory=dict)

    @property
    def info_path(self) -> pathlib.Path:
        return self.path.with_name(self.path.name + ".json")

    def load(self) -> None:
        if self.info_path.is_file() and self.path.is_file():
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
            self.total, self.hashes = info.get("total"), info.get("hashes", {})

    def save(self) -> None:
        atomic_write_text(self.info_path, json.dumps({"total": self.total, "hashes": self.hashes}))

    def reset(self) -> None:
        for path in (self.path, self.info_path):
            if path.exists():
                path.unlink()
        self.total, self.hashes = None, {}


def _total_from(response: Any, start: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) + start if length and length.isdigit() else None


def download_file(
    url: str,
    destination: pathlib.Path,
    partial_path: pathlib.Path,
    expected: RemoteFile,
    *,
    progress: bool = True,
    attempts: int = DEFAULT_ATTEMPTS,
    timeout: float = TIMEOUT_S,
    opener: Opener = _open,
) -> dict[str, Any]:
    """Download `url` to `destination` through `partial_path`, resuming with Range requests
    after a cut connection, then check size and checksums; LaunchError when it cannot."""
    from tqdm import tqdm

    partial = _Partial(partial_path)
    partial_path.parent.mkdir(parents=True, exist_ok=True)
    partial.load()
    resumed = 0
    failures: list[str] = []
    bar = None
    try:
        for attempt in range(1, attempts + 1):
            start = partial.path.stat().st_size if partial.path.exists() else 0
            request = urllib.request.Request(url, headers={"User-Agent": "tf-od-launch"})
            if start:
                request.add_header("Range", f"bytes={start}-")
            try:
                response = opener(request, timeout)
            except urllib.error.HTTPError as error:
                if error.code == 416 and partial.total is not None and start == partial.total:
                    break  # already complete
                if error.code == 416:
                    partial.reset()
                    continue
                if error.code in (404, 403, 410):
                    raise LaunchError(
                        f"downloading {url} failed: HTTP {error.code} {error.reason}; the file "
                        "moved or is not public: check the catalogue entry or pretrained_mirror"
                    ) from error
                failures.append(f"HTTP {error.code}")
                time.sleep(min(2**attempt, 30) * 0.1)
                continue
            except (urllib.error.URLError, OSError) as error:
                failures.append(str(getattr(error, "reason", error)))
                time.sleep(min(2**attempt, 30) * 0.1)
                continue
            with response:
                status = getattr(response, "status", 200)
                if start and status == 206:
                    resumed += 1
                    log.info("%s: resuming at %d bytes", partial.path.name, start)
                elif start:  # the server ignored the Range header: start over
                    partial.reset()
                    start = 0
                hashes = parse_goog_hash(response.headers)
                if partial.hashes and hashes and hashes != partial.hashes:
                    log.warning("%s changed on the server; downloading it again", url)
                    partial.reset()
                    failures.append("object changed")
                    continue
                partial.hashes = partial.hashes or hashes
                partial.total = _total_from(response, start) or partial.total
                partial.save()
                if bar is not None:
                    bar.reset(total=partial.total)
                    bar.update(start)
                else:
                    bar = tqdm(
                        total=partial.total,
                        initial=start,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=f"fetch {expected.name}",
                        disable=not progress,
                    )
                try:
                    with partial.path.open("ab") as handle:
                        while chunk := response.read(CHUNK):
                            handle.write(chunk)
                            bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as error:  # cut mid-body
                    failures.append(f"connection cut ({error.__class__.__name__})")
                    log.warning(
                        "%s: connection cut at %d bytes; resuming (attempt %d of %d)",
                        url,
                        partial.path.stat().st_size,
                        attempt,
                        attempts,
                    )
                    continue
            size = partial.path.stat().st_size
            if partial.total is not None and size < partial.total:
                failures.append(f"connection cut at {size} of {partial.total} bytes")
                log.warning(
                    "%s: connection cut at %d of %d bytes; resuming (attempt %d of %d)",
                    url,
                    size,
                    partial.total,
                    attempt,
                    attempts,
                )
                continue
            break
        else:
            raise LaunchError(
                f"downloading {url} failed after {attempts} attempts "
                f"({'; '.join(failures[-3:])}); run the same command again to resume"
            )
    finally:
        if bar is not None:
            bar.close()
    return _check_and_move(url, partial, destination, expected, resumed)


def _check_and_move(
    url: str,
    partial: _Partial,
    destination: pathlib.Path,
    expected: RemoteFile,
    resumed: int,
) -> dict[str, Any]:
    size = partial.path.stat().st_size
    problems = []
    if partial.total is not None and size != partial.total:
        problems.append(f"{size} bytes, the server announced {partial.total}")
    if expected.size is not None and size != expected.size:
        problems.append(f"{size} bytes, the catalogue says {expected.size}")
    digests = file_digests(partial.path)
    ours = digests.goog()
    checked = ["size"] if partial.total is not None or expected.size is not None else []
    for kind, theirs in partial.hashes.items():
        if kind not in ours:
            continue
        checked.append(f"{kind} (x-goog-hash)")
        if ours[kind] != theirs:
            problems.append(f"{kind} {ours[kind]}, the server says {theirs}")
    if expected.sha256:
        checked.append("sha256 (catalogue)")
        if digests.sha256.hexdigest() != expected.sha256:
            problems.append(
                f"sha256 {digests.sha256.hexdigest()}, the catalogue says {expected.sha256}"
            )
    if problems:
        partial.reset()
        raise LaunchError(
            f"downloaded {url} is corrupt ({'; '.join(problems)}); it was deleted: run the same "
            "command again"
        )
    if not any(c != "size" for c in checked):
        log.warning(
            "%s: the server sent no checksum and the catalogue has none; only the size was "
            "checked (sha256 %s recorded)",
            url,
            digests.sha256.hexdigest(),
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(partial.path, destination)
    partial.reset()
    return {
        "size": size,
        "sha256": digests.sha256.hexdigest(),
        "checked": checked,
        "url": url,
        "resumed_requests": resumed,
    }


def fetch(
    entry: Pretrained,
    cache_dir: pathlib.Path,
    *,
    mirror: str | None = None,
    progress: bool = True,
    attempts: int = DEFAULT_ATTEMPTS,
    opener: Opener = _open,
) -> FetchReport:
    """Every file of `entry` in `cache_dir/NAME/`, downloaded unless already cached intact."""
    folder = cache_dir / entry.name
    if cached_folder(cache_dir, entry) is not None:
        manifest = read_manifest(cache_dir, entry.name) or {"files": {}}
        return FetchReport(entry.name, str(folder), manifest["files"], from_cache=True)
    report = FetchReport(entry.name, str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LaunchError(
            f"{folder}: cannot create the cache folder ({error}); set pretrained_cache"
        ) from error
    for remote in entry.files:
        url = download_url(remote.url, mirror)
        item = download_file(
            url,
            folder / remote.name,
            cache_dir / PARTIAL_DIR / entry.name / f"{remote.name}.part",
            remote,
            progress=progress,
            attempts=attempts,
            opener=opener,
        )
        report.files[remote.name] = item
        report.bytes_downloaded += item["size"]
        report.resumed += item["resumed_requests"]
    atomic_write_text(
        manifest_path(cache_dir, entry.name),
        json.dumps({"name": entry.name, "preset": entry.preset, "files": report.files}, indent=2),
    )
    shutil.rmtree(cache_dir / PARTIAL_DIR / entry.name, ignore_errors=True)
    return report
