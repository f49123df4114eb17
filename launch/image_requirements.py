"""Make the image's installed metadata say what the image really installs (a Dockerfile step).

tf-models-official declares the dependencies of all of Model Garden, and tensorflow-datasets
those of every storage format it reads; the image leaves out the ones its code never imports
(requirements-image-excludes.txt, which also keeps them out of requirements-image.lock). After
`pip install --no-deps`, this removes the same names from the `Requires-Dist` lines of every
installed distribution, as Model Garden's own `tf-models-no-deps` package did up to 2.19, so
that `pip check` in the image checks what is there instead of reporting the omissions.

    python3 image_requirements.py requirements-image-excludes.txt

Standard library only: it runs in the image before the project is installed.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import pathlib
import re
import sys
from collections.abc import Iterable

log = logging.getLogger("image_requirements")

REQUIRES_DIST = "Requires-Dist:"


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_excludes(text: str) -> set[str]:
    """Package names of a requirements file (`name ; marker  # comment` lines)."""
    names = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(canonical_name(re.split(r"[\s<>=!~;\[(]", line, maxsplit=1)[0]))
    return names


def required_name(line: str) -> str:
    """The distribution name of a `Requires-Dist:` line."""
    requirement = line[len(REQUIRES_DIST) :].strip()
    return canonical_name(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0])


def prune_requires_dist(metadata: str, excluded: set[str]) -> tuple[str, set[str]]:
    """`metadata` without the Requires-Dist lines naming `excluded`, and the names removed.

    Only the headers are read: they end at the first empty line, where the description starts.
    """
    kept, removed = [], set()
    in_headers = True
    for line in metadata.splitlines(keepends=True):
        in_headers = in_headers and line.strip() != ""
        if in_headers and line.startswith(REQUIRES_DIST) and required_name(line) in excluded:
            removed.add(required_name(line))
        else:
            kept.append(line)
    return "".join(kept), removed


def metadata_files(distributions: Iterable[importlib.metadata.Distribution]) -> set[pathlib.Path]:
    files = set()
    for distribution in distributions:
        for file in distribution.files or ():
            if file.name == "METADATA" and file.parent.name.endswith(".dist-info"):
                files.add(pathlib.Path(str(file.locate())))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("excludes", type=pathlib.Path, help="requirements-image-excludes.txt")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    excluded = read_excludes(args.excludes.read_text())
    removed_anywhere: set[str] = set()
    for path in sorted(metadata_files(importlib.metadata.distributions())):
        pruned, removed = prune_requires_dist(path.read_text(), excluded)
        if removed:
            path.write_text(pruned)
            log.info("%s: no longer requires %s", path.parent.name, ", ".join(sorted(removed)))
            removed_anywhere |= removed
    stale = excluded - removed_anywhere
    if stale:
        log.error(
            "error: %s names %s, which no installed package requires; remove the line(s)",
            args.excludes,
            ", ".join(sorted(stale)),
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
