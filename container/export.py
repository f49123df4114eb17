"""Write the model folder: SavedModel (uint8 image of any size in, normalised boxes out) and
the label files the Raspberry Pi side reads."""

from __future__ import annotations

import logging
import pathlib
import shutil
import tempfile

from official.core import config_definitions as cfg
from official.vision.serving import export_saved_model_lib

from data_prep import schema
from data_prep.label_map import format_label_map, format_labels_txt

logger = logging.getLogger(__name__)

SAVED_MODEL_DIR = "saved_model"
SERVING_INPUT = "inputs"


def write_text_atomically(path: pathlib.Path, text: str) -> None:
    """Write to a temporary name, then rename: SageMaker never tars a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_label_files(label_map: dict[int, str], model_dir: pathlib.Path) -> None:
    names = [label_map[i] for i in sorted(label_map)]
    write_text_atomically(model_dir / schema.LABEL_MAP_FILE, format_label_map(names))
    write_text_atomically(model_dir / schema.LABELS_FILE, format_labels_txt(label_map))


def export_saved_model(
    params: cfg.ExperimentConfig, checkpoint_path: str, model_dir: pathlib.Path
) -> pathlib.Path:
    """`model_dir/saved_model`: signature `serving_default`, input `inputs` uint8 [1,H,W,3] of
    any size; outputs `detection_boxes` (normalised [ymin,xmin,ymax,xmax]), `detection_scores`,
    `detection_classes` (label-map ids), `num_detections`."""
    params.task.export_config.output_normalized_coordinates = True
    target = model_dir / SAVED_MODEL_DIR
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".export-") as tmp:
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
        if target.exists():
            shutil.rmtree(target)
        (pathlib.Path(tmp) / SAVED_MODEL_DIR).replace(target)
    logger.info("exported the SavedModel to %s", target)
    return target
