"""Fetch a job's model.tar.gz and unpack it into a folder `edge` can use."""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from sagemaker_tfod.data_prep.files import unsafe_archive_member
from sagemaker_tfod.launch.errors import LaunchError, aws_action
from sagemaker_tfod.launch.s3_uri import parse_s3_uri

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


class UnsafeMemberError(LaunchError):
    """An archive member that would land outside the folder, or is not a file or folder."""

    def __init__(self, member: str) -> None:
        super().__init__(f"model.tar.gz has unsafe member {member}; refused")
        self.member = member


def unsafe_member(member: tarfile.TarInfo) -> bool:
    """The fallback for Pythons without tarfile's 'data' filter (before 3.11.4); see
    `unsafe_archive_member`: a model archive holds only files and folders."""
    return unsafe_archive_member(member)


def check_destination(destination: Path, force: bool) -> None:
    """A folder that is missing, empty, or replaced with --force; never an existing file."""
    if destination.exists() and not destination.is_dir():
        raise LaunchError(f"{destination}: is a file, not a folder; pass a folder to unpack into")
    if destination.is_dir() and any(destination.iterdir()) and not force:
        raise LaunchError(f"{destination}: folder exists and is not empty; pass --force or another")
    if destination.parent.exists() and not destination.parent.is_dir():
        raise LaunchError(f"{destination.parent}: is a file, not a folder; pick another place")


def _extract(tar: tarfile.TarFile, folder: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        # The 'data' filter refuses absolute paths, '..', devices and links leaving the folder.
        try:
            tar.extractall(folder, filter="data")
        except tarfile.FilterError as error:
            member = error.tarinfo.name if error.tarinfo is not None else "?"
            raise UnsafeMemberError(member) from error
        return
    members = tar.getmembers()
    for member in members:
        if unsafe_member(member):
            raise UnsafeMemberError(member.name)
    tar.extractall(folder, members=members)  # every member was checked above


def unpack_model(archive: Path, destination: Path, force: bool = False) -> list[str]:
    """Unpack into `destination` atomically (temp folder, then rename); returns member names."""
    check_destination(destination, force)
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                names = tar.getnames()
                _extract(tar, staging)
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
    check_destination(destination, force)  # before spending time on the download
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LaunchError(f"{destination.parent}: cannot create the folder ({error})") from error
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".download-") as tmp:
        archive = Path(tmp) / "model.tar.gz"
        with aws_action(f"downloading {source_uri}"):
            s3.download_file(bucket, key, str(archive))
        names = unpack_model(archive, destination, force=force)
    log.info("unpacked %d entries from %s into %s", len(names), source_uri, destination)
    for name in missing_for_edge(destination):
        log.warning("%s: no %s in the model archive; edge needs it", destination, name)
    return destination
