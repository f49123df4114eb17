"""Hyperparameter `anchors`: the preset's anchors, or anchors fitted to the training boxes.

`anchors=auto` measures how well the preset's anchors cover the training boxes at the
training input size (data_prep.anchors: best possible recall at the matcher's IoU threshold,
mean best IoU); below `AUTO_FIT_BELOW` it fits the aspect ratios and anchor size (same count
per location, so the head keeps its size) and writes them into the experiment. The resolved
pipeline.yaml then carries them to every export: the SavedModel and frozen graph generate
anchors from the config, the TFLite and ONNX files hold an anchor table built from it.
Anchors set in the channel's own pipeline.yaml always win.
"""

from __future__ import annotations

import logging
import pathlib

import numpy as np
import yaml

from sagemaker_tfod.data_prep import anchors as anchor_math

logger = logging.getLogger(__name__)


def model_anchor_config(params) -> anchor_math.AnchorConfig:
    model = params.task.model
    return anchor_math.AnchorConfig(
        min_level=int(model.min_level),
        max_level=int(model.max_level),
        num_scales=int(model.anchor.num_scales),
        aspect_ratios=tuple(float(a) for a in model.anchor.aspect_ratios),
        anchor_size=float(model.anchor.anchor_size),
    )


def _yaml_sets_anchors(path: pathlib.Path | None) -> bool:
    if path is None:
        return False
    content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    model = (content.get("task") or {}).get("model") or {}
    return isinstance(model, dict) and "anchor" in model


def resolve_anchors(
    params,
    choice: str,
    boxes: np.ndarray,
    image_sizes: np.ndarray,
    override_yaml: pathlib.Path | None = None,
) -> dict:
    """Apply `anchors=auto|default` to `params` in place; returns the decision for metrics.json.

    `boxes` are the training boxes normalised to their images ([M, 4] ymin, xmin, ymax, xmax),
    `image_sizes` their images' (height, width).
    """
    height, width = (int(v) for v in params.task.model.input_size[:2])
    threshold = float(params.task.train_data.parser.match_threshold)
    config = model_anchor_config(params)
    pixels = anchor_math.boxes_in_input(boxes, image_sizes, height, width)
    if _yaml_sets_anchors(override_yaml):
        decision = anchor_math.AnchorDecision(
            config,
            False,
            f"{override_yaml} sets task.model.anchor: used as given",
            anchor_math.anchor_fit(pixels, config, height, width, threshold),
        )
    elif choice == "default":
        decision = anchor_math.AnchorDecision(
            config,
            False,
            "anchors=default: the preset's anchors",
            anchor_math.anchor_fit(pixels, config, height, width, threshold),
        )
    else:
        decision = anchor_math.choose_anchors(pixels, config, height, width, threshold)
    _log(decision, config, height)
    if decision.fitted:
        params.task.model.anchor.aspect_ratios = list(decision.config.aspect_ratios)
        params.task.model.anchor.anchor_size = decision.config.anchor_size
    return {"choice": choice, "input_size": [height, width], **decision.as_dict()}


def _describe(config: anchor_math.AnchorConfig) -> str:
    ratios = ", ".join(f"{a:g}" for a in config.aspect_ratios)
    return f"aspect ratios [{ratios}], anchor_size {config.anchor_size:g}"


def _log(decision: anchor_math.AnchorDecision, preset: anchor_math.AnchorConfig, size: int) -> None:
    fit = decision.default_fit
    logger.info(
        "anchors: preset's (%s) on %d training boxes at %d px: best possible recall %.3f "
        "(IoU >= %.2f), mean best IoU %.3f",
        _describe(preset),
        fit.boxes,
        size,
        fit.best_possible_recall,
        fit.iou_threshold,
        fit.mean_best_iou,
    )
    if decision.candidate is not None and decision.candidate_fit is not None:
        logger.info(
            "anchors: fitted (%s): best possible recall %.3f, mean best IoU %.3f",
            _describe(decision.candidate),
            decision.candidate_fit.best_possible_recall,
            decision.candidate_fit.mean_best_iou,
        )
    logger.info("anchors: %s", decision.reason)
