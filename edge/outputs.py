"""Where `edge detect` (and `launch invoke --draw`) write each input's annotated image or video."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence


def output_paths(sources: Sequence, output: pathlib.Path) -> list[pathlib.Path]:
    """Where each source's annotated image or video goes: its path relative to the folder
    all file inputs share (so `a/x.jpg` and `b/x.jpg` stay apart), `.jpg`/`.png` kept, other
    images as `.jpg`, videos and cameras as `.mp4`; a name still taken gets `-2`, `-3`, ..."""
    files = [pathlib.Path(s.location).resolve() for s in sources if not s.is_camera]
    common = pathlib.Path(os.path.commonpath([str(f.parent) for f in files])) if files else None
    taken: set[pathlib.Path] = set()
    paths = []
    for source in sources:
        if source.is_camera:
            relative, suffix = pathlib.Path(source.name), ".mp4"
        else:
            location = pathlib.Path(source.location).resolve()
            relative = location.relative_to(common).with_suffix("")
            kept = location.suffix.lower()
            suffix = (
                ".mp4" if source.kind == "video" else (kept if kept in (".png", ".jpg") else ".jpg")
            )
        candidate, number = output / relative.with_name(relative.name + suffix), 1
        while candidate in taken:
            number += 1
            candidate = output / relative.with_name(f"{relative.name}-{number}{suffix}")
        taken.add(candidate)
        paths.append(candidate)
    return paths
