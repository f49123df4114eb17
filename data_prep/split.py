"""Train/eval split by image: seeded, stratified so every class with two or more images
appears in eval, and never one image on both sides."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

from sagemaker_tfod.data_prep.annotations import ImageAnnotation
from sagemaker_tfod.data_prep.errors import DataPrepError


def split_images(
    annotations: Sequence[ImageAnnotation], eval_fraction: float, seed: int
) -> tuple[list[ImageAnnotation], list[ImageAnnotation]]:
    """(train, eval), each in input order. Eval gets round(fraction * images) images, or
    more when that is needed to give each class (with >= 2 images) one eval image; no
    class loses its last train image."""
    if not 0.0 <= eval_fraction < 1.0:
        raise DataPrepError(f"--eval-fraction {eval_fraction}: use a value in [0, 1)")
    count = len(annotations)
    if eval_fraction == 0.0 or count < 2:
        return list(annotations), []
    wanted = min(count - 1, max(1, round(eval_fraction * count)))
    rng = random.Random(seed)
    order = list(range(count))
    rng.shuffle(order)
    classes_of = [frozenset(box.class_name for box in item.boxes) for item in annotations]
    train_count: Counter[str] = Counter()
    for classes in classes_of:
        train_count.update(classes)
    chosen: set[int] = set()

    def can_move(index: int) -> bool:
        return index not in chosen and all(train_count[name] > 1 for name in classes_of[index])

    def move(index: int) -> None:
        chosen.add(index)
        train_count.subtract(classes_of[index])

    # Rarest classes first, so common classes do not use up the eval budget.
    for name in sorted(train_count, key=lambda n: (train_count[n], n)):
        if train_count[name] < 2 or any(name in classes_of[i] for i in chosen):
            continue
        for index in order:
            if name in classes_of[index] and can_move(index):
                move(index)
                break
    for index in order:
        if len(chosen) >= wanted:
            break
        if can_move(index):
            move(index)
    train = [item for i, item in enumerate(annotations) if i not in chosen]
    evaluation = [item for i, item in enumerate(annotations) if i in chosen]
    return train, evaluation


def classes_missing_from_eval(
    train: Sequence[ImageAnnotation], evaluation: Sequence[ImageAnnotation]
) -> list[str]:
    """Classes with two or more images that got no eval image: every image holding them
    also holds a class with a single image, which must stay in train."""
    if not evaluation:
        return []
    images_of: Counter[str] = Counter()
    for item in (*train, *evaluation):
        images_of.update({box.class_name for box in item.boxes})
    in_eval = {box.class_name for item in evaluation for box in item.boxes}
    return sorted(name for name, count in images_of.items() if count >= 2 and name not in in_eval)
