"""File I/O shared by every command: reading a user's text files with a clear error, and
writing outputs atomically (temporary name, then rename), so nothing is left half-written."""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sagemaker_tfod.data_prep.errors import DataPrepError

# Every temporary name these helpers make starts with "." and carries this tag, so a folder
# can be cleared of what a killed run left behind (`is_temporary_name`).
TEMPORARY_TAG = ".tmp-"


def read_user_text(path: Path | str) -> str:
    """Text of a user's file (CSV, COCO JSON, classes file, label map), UTF-8 with or
    without a byte-order mark; DataPrepError naming the file when it cannot be read."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DataPrepError(f"{path}: cannot read ({error.strerror}); check the path") from None
    except UnicodeDecodeError as error:
        raise DataPrepError(
            f"{path}: not UTF-8 text (byte {error.object[error.start]:#04x} at offset "
            f"{error.start}); save it as UTF-8"
        ) from None


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_directory(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target`."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise DataPrepError(f"{target}: exists and is not a folder; choose another output")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise DataPrepError(
            f"{target}: folder is not empty; choose a new folder or pass --overwrite"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{target.name}{TEMPORARY_TAG}", dir=target.parent))
    temporary.chmod(0o777 & ~_umask())  # mkdtemp makes it private; a channel is a normal folder
    try:
        try:
            yield temporary
        except OSError as error:
            if error.filename is None:  # a failed write() names no file: name the output
                raise OSError(error.errno, error.strerror, str(target)) from error
            raise
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            previous = old / "previous"
            target.rename(previous)
            try:
                temporary.rename(target)
            except BaseException:
                previous.rename(target)  # put the user's folder back where it was
                old.rmdir()
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            temporary.rename(target)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def is_temporary_name(name: str) -> bool:
    """True for the names `atomic_*` helpers give their temporaries (and old-folder parking)."""
    return name.startswith(".") and (TEMPORARY_TAG in name or ".old-" in name)


@contextlib.contextmanager
def atomic_output_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path in `path`'s folder, with the same extension (for writers that
    pick the format from it: savefig, Pillow, cv2.VideoWriter); on success it is renamed to
    `path` with a normal file mode (umask applied, not mkstemp's 0600); on error it is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{path.name}{TEMPORARY_TAG}", suffix=path.suffix, dir=path.parent
    )
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file under a temporary name in the same folder, then rename it."""
    with atomic_output_path(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a UTF-8 text file under a temporary name in the same folder, then rename it."""
    atomic_write_bytes(path, text.encode("utf-8"))


def unsafe_archive_member(member: tarfile.TarInfo) -> bool:
    """True for what must never be unpacked from a downloaded archive: absolute or `..` paths,
    drive letters, links and devices (pure). Model archives (model.tar.gz, Model Garden's
    checkpoints) hold only files and folders, so this is stricter than tarfile's 'data' filter,
    which still allows links that stay inside the folder."""
    name = member.name.replace("\\", "/")
    parts = posixpath.normpath(name).split("/")
    if name.startswith("/") or ".." in parts or (len(name) > 1 and name[1] == ":"):
        return True
    return not (member.isfile() or member.isdir())
