"""Fetch a job's model.tar.gz and unpack it into a folder `edge` can use."""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from launch.errors import LaunchError, aws_action
from launch.s3_sync import parse_s3_uri

log = logging.getLogger(__name__)

# What the container exports (issue 3) and edge reads; missing ones are reported, not fatal,
# because a stopped job may export only part of it.
EXPECTED_FILES = ("labels.txt", "label_map.pbtxt", "pipeline.yaml")


def model_artifact_uri(description: dict[str, Any]) -> str:
    uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not uri:
        status = description.get("TrainingJobStatus", "unknown")
        raise LaunchError(
            f"job '{description.get('TrainingJobName')}' has no model artifact yet "
            f"(status {status}); wait for it to finish (python -m launch status)"
        )
    return str(uri)


def unpack_model(archive: Path, destination: Path, force: bool = False) -> list[str]:
    """Unpack into `destination` atomically (temp folder, then rename); returns member names."""
    if destination.exists() and any(destination.iterdir()) and not force:
        raise LaunchError(f"{destination}: folder exists and is not empty; pass --force or another")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                names = tar.getnames()
                # The 'data' filter refuses absolute paths, '..', devices and unsafe links.
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError) as error:
            raise LaunchError(f"{archive}: not a readable model.tar.gz ({error})") from error
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return names


def missing_for_edge(folder: Path) -> list[str]:
    missing = [name for name in EXPECTED_FILES if not (folder / name).exists()]
    if not any(folder.rglob("*.tflite")) and not (folder / "saved_model").is_dir():
        missing.append("*.tflite or saved_model/")
    return missing


def download_model(s3: Any, source_uri: str, destination: Path, force: bool = False) -> Path:
    bucket, key = parse_s3_uri(source_uri)
    if not key:
        raise LaunchError(f"'{source_uri}' names a bucket, not a model.tar.gz object")
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".download-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        with aws_action(f"downloading {source_uri}"):
            s3.download_file(bucket, key, str(archive))
        names = unpack_model(archive, destination, force=force)
    log.info("unpacked %d entries from %s into %s", len(names), source_uri, destination)
    for name in missing_for_edge(destination):
        log.warning("%s: no %s in the model archive; edge needs it", destination, name)
    return destination
