"""Pairing annotations with image files: by relative path, then file name, then stem.

Names are compared after Unicode NFC normalisation (macOS stores file names decomposed,
annotation tools usually write them composed) and both as written and URL-decoded (VoTT
writes `folder%2Fimage.jpg`, and its Pascal VOC export may keep that name on disk).
"""

from __future__ import annotations

import os
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote

from sagemaker_tfod.data_prep.annotations import IMAGE_SUFFIXES, ImageAnnotation, find_files
from sagemaker_tfod.data_prep.errors import DataPrepError


def name_spellings(name: str) -> list[str]:
    """`name` with forward slashes and NFC-normalised, then URL-decoded if that differs."""
    if not name:
        return []
    written = unicodedata.normalize("NFC", name.replace("\\", "/"))
    decoded = unicodedata.normalize("NFC", unquote(written))
    return [written] if decoded == written else [written, decoded]


class ImageIndex:
    """Every image file under a folder, found by relative path, file name or stem."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        prefix = len(os.path.join(os.fspath(self.root), ""))
        self.by_relative: dict[str, str] = {}
        self.by_name: dict[str, list[str]] = defaultdict(list)
        self.by_stem: dict[str, list[str]] = defaultdict(list)
        for path in find_files(self.root, IMAGE_SUFFIXES):
            relative = unicodedata.normalize("NFC", path[prefix:].replace(os.sep, "/"))
            self.by_relative[relative] = path
            name = relative.rsplit("/", 1)[-1]
            self.by_name[name].append(path)
            self.by_stem[name.rsplit(".", 1)[0]].append(path)
        self.relative_of = {path: relative for relative, path in self.by_relative.items()}

    def relative(self, path: str) -> str:
        """Image path relative to the root, with forward slashes."""
        return self.relative_of[path]

    def find(self, annotation: ImageAnnotation) -> str | None:
        """The image an annotation names; DataPrepError when the name is ambiguous."""
        names = name_spellings(annotation.filename)
        for name in names:
            if name in self.by_relative:
                return self.by_relative[name]
            if os.path.isabs(name):  # e.g. keras-retinanet CSVs often hold absolute paths
                inside = os.path.relpath(name, self.root).replace(os.sep, "/")
                if inside in self.by_relative:
                    return self.by_relative[inside]
        for candidate in names + name_spellings(annotation.path_hint):
            base = PurePosixPath(candidate).name
            matches = self.by_name.get(base) or (
                self.by_stem.get(base, []) if not PurePosixPath(base).suffix else []
            )
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                shown = ", ".join(self.relative(path) for path in matches[:3])
                raise DataPrepError(
                    f"{annotation.source}: image name '{candidate}' matches several files "
                    f"({shown}); write the path relative to {self.root} in the annotation"
                )
        return None


@dataclass
class MatchResult:
    matched: list[tuple[ImageAnnotation, str]]  # (annotation, image path)
    skipped: list[dict[str, str]]
    unannotated: list[str]


def match_images(
    annotations: Sequence[ImageAnnotation], index: ImageIndex, skip_missing: bool
) -> MatchResult:
    """Pair each annotation with its image; two annotations for one image is an error."""
    matched, skipped = [], []
    owner: dict[str, str] = {}
    for annotation in annotations:
        path = index.find(annotation)
        if path is None:
            message = (
                f"{annotation.source}: image '{annotation.filename}' not found under {index.root}"
            )
            if not skip_missing:
                raise DataPrepError(
                    f"{message}; add the image, fix the file name, or pass --skip-bad-images"
                )
            skipped.append({"file": annotation.filename, "reason": message})
            continue
        if path in owner:
            raise DataPrepError(
                f"two annotations for {path}: {owner[path]} and {annotation.source}; delete "
                "one or merge them into one file"
            )
        owner[path] = annotation.source
        matched.append((annotation, path))
    used = set(owner)
    unannotated = [rel for rel, path in index.by_relative.items() if path not in used]
    return MatchResult(matched, skipped, sorted(unannotated))
