"""Class names: exact comparison, near-duplicate detection, the ordered class list."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sagemaker_tfod.data_prep.annotations import ImageAnnotation
from sagemaker_tfod.data_prep.errors import DataPrepError

_FILES_SHOWN = 3


def _spelling_key(name: str) -> str:
    return " ".join(name.split()).casefold()


def files_by_class(annotations: Iterable[ImageAnnotation]) -> dict[str, list[str]]:
    """Class name (exact) -> annotation sources that use it, in first-seen order."""
    found: dict[str, list[str]] = defaultdict(list)
    for item in annotations:
        for box in item.boxes:
            sources = found[box.class_name]
            if not sources or sources[-1] != item.source:
                sources.append(item.source)
    return dict(found)


def check_near_duplicates(files: dict[str, list[str]]) -> None:
    """Error if two spellings differ only by case or whitespace ('Cat', 'cat ')."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in files:
        groups[_spelling_key(name)].append(name)
    clashes = [sorted(names) for names in groups.values() if len(names) > 1]
    if not clashes:
        return
    described = []
    for names in sorted(clashes):
        parts = []
        for name in names:
            shown = ", ".join(files[name][:_FILES_SHOWN])
            more = len(files[name]) - _FILES_SHOWN
            parts.append(f"{name!r} in {shown}" + (f" and {more} more" if more > 0 else ""))
        described.append(" vs ".join(parts))
    raise DataPrepError(
        "class names that differ only by case or whitespace: "
        + "; ".join(described)
        + "; correct the spelling in those annotation files so each class has one name"
    )


def resolve_classes(
    files: dict[str, list[str]],
    given: Sequence[str] | None,
    given_source: str = "",
    skip_unknown: bool = False,
) -> tuple[list[str], dict[str, int]]:
    """Ordered class list (ids 1..N) and the count of boxes to drop per unknown class.

    Without `given`, classes are the annotation names sorted (stable across runs). With
    `given` (a label map or classes file), its order is kept; annotation classes missing
    from it are an error unless `skip_unknown`, in which case their boxes are dropped.
    """
    check_near_duplicates(files)
    if given is None:
        return sorted(files), {}
    unknown = [name for name in files if name not in set(given)]
    if unknown and not skip_unknown:
        hints = []
        by_key = {_spelling_key(name): name for name in given}
        for name in unknown:
            close = by_key.get(_spelling_key(name))
            hint = f" (did you mean {close!r}?)" if close else ""
            hints.append(f"{name!r} in {', '.join(files[name][:_FILES_SHOWN])}{hint}")
        raise DataPrepError(
            f"{given_source}: does not contain the annotation class(es) "
            + "; ".join(hints)
            + "; add them to it, fix the annotations, or pass --skip-unknown-classes"
        )
    return list(given), {name: 0 for name in unknown}
