"""Write the model folder: SavedModel (uint8 image of any size in, normalised boxes out) and
the label files the Raspberry Pi side reads."""

from __future__ import annotations

import contextlib
import logging
import pathlib
import shutil
import tempfile
from collections.abc import Callable

from official.core import config_definitions as cfg
from official.vision.serving import export_saved_model_lib

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.files import TEMPORARY_TAG, atomic_write_text, is_temporary_name
from sagemaker_tfod.data_prep.label_map import format_label_map, format_labels_txt

logger = logging.getLogger(__name__)

SAVED_MODEL_DIR = "saved_model"
SERVING_INPUT = "inputs"


# Prefix of the SavedModel export's staging folder (older images used ".export-").
EXPORT_STAGING_PREFIX = f".{SAVED_MODEL_DIR}{TEMPORARY_TAG}"
_LEGACY_STAGING_PREFIX = ".export-"


def is_stale_temporary(name: str) -> bool:
    """Names in model/ that only a killed job leaves: staging folders and temporary files
    (ours, and the `.tmp`/`.tmp.png`/`.trial-*` names of the edge exports)."""
    return (
        is_temporary_name(name)
        or name.startswith(_LEGACY_STAGING_PREFIX)
        or name.startswith(".trial-")
        or name.endswith(".tmp")
        or ".tmp." in name
    )


def remove_stale_temporaries(model_dir: pathlib.Path) -> list[str]:
    """Delete what a killed earlier run left in `model_dir` (SageMaker would tar it into
    model.tar.gz); returns the names removed."""
    removed = []
    if not model_dir.is_dir():
        return removed
    for entry in sorted(model_dir.iterdir()):
        if not is_stale_temporary(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    if removed:
        logger.warning("removed temporaries of an interrupted run from %s: %s", model_dir, removed)
    return removed


def write_label_files(label_map: dict[int, str], model_dir: pathlib.Path) -> None:
    names = [label_map[i] for i in sorted(label_map)]
    atomic_write_text(model_dir / schema.LABEL_MAP_FILE, format_label_map(names))
    atomic_write_text(model_dir / schema.LABELS_FILE, format_labels_txt(label_map))


def export_saved_model(
    params: cfg.ExperimentConfig,
    checkpoint_path: str,
    model_dir: pathlib.Path,
    commit: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> pathlib.Path:
    """`model_dir/saved_model`: signature `serving_default`, input `inputs` uint8 [1,H,W,3] of
    any size; outputs `detection_boxes` (normalised [ymin,xmin,ymax,xmax]), `detection_scores`,
    `detection_classes` (label-map ids), `num_detections`. `commit` is held while it is put
    in place (a stop's watchdog waits for it)."""
    params.task.export_config.output_normalized_coordinates = True
    target = model_dir / SAVED_MODEL_DIR
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=EXPORT_STAGING_PREFIX) as tmp:
        export_saved_model_lib.export_inference_graph(
            input_type="image_tensor",
            batch_size=1,
            input_image_size=list(params.task.model.input_size[:2]),
            params=params,
            checkpoint_path=checkpoint_path,
            export_dir=tmp,
            export_saved_model_subdir=SAVED_MODEL_DIR,
            input_name=SERVING_INPUT,
        )
        with commit():
            if target.exists():
                shutil.rmtree(target)
            (pathlib.Path(tmp) / SAVED_MODEL_DIR).replace(target)
    logger.info("exported the SavedModel to %s", target)
    return target
