"""Anchor boxes of the presets, how well they fit a set of boxes, and anchors fitted to them.

Pure numpy (no TensorFlow): `data_prep` reports the fit of the default anchors when it builds a
channel, and the training container fits anchors with the same code (`anchors=auto`).

The anchors are Model Garden's (`official.vision.ops.anchor.Anchor`): on each level l of
min_level..max_level, one anchor per scale s < num_scales and aspect ratio a (width / height) at
the centre of every cell of the stride-2**l grid, of size anchor_size * 2**l * 2**(s/num_scales),
width size*sqrt(a), height size/sqrt(a); levels, then cells row by row, then scales, then
ratios. `tests/test_anchors.py` checks the boxes against Model Garden's generators.

Fit = how the matcher sees the training boxes: the *best possible recall* is the share of boxes
that have at least one anchor at IoU >= the matcher's threshold (Model Garden's RetinaNet parser:
`match_threshold` 0.5); the matcher still forces a match for every other box, but to an anchor
that overlaps it poorly, so that box trains the regression from a bad start and scores it
low. Boxes are measured where the training input puts them: the image scaled to fit the square
input with its aspect ratio kept (random scale augmentation aside).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Model Garden's RetinaNet matcher threshold (`parser.match_threshold`, the presets keep it).
MATCH_THRESHOLD = 0.5
# anchors=auto fits anchors only when the defaults' best possible recall is below this. The
# presets' defaults measured 0.99+ on the raccoon set and 0.98+ on the synthetic shapes, and
# 0.6 on boxes of aspect ratio 6:1 and 1:6 (benchmarks/bench_anchors.py).
AUTO_FIT_BELOW = 0.95
# A fit replaces the defaults only when it raises the best possible recall by at least this.
MIN_RECALL_GAIN = 0.01
# More boxes than this add time, not information, to the fit (a seeded sample is used).
MAX_FIT_BOXES = 20000
# Searched values: aspect ratios 2**(k/4) between 1/16 and 16; anchor_size * 2**(j/6), |j| <= 6.
_RATIO_STEPS = np.arange(-16, 17) / 4.0
_SIZE_STEPS = np.arange(-6, 7) / 6.0
_ROUNDS = 6


@dataclass(frozen=True)
class AnchorConfig:
    """Model Garden's `task.model.anchor` fields plus the levels they apply to."""

    min_level: int
    max_level: int
    num_scales: int
    aspect_ratios: tuple[float, ...]
    anchor_size: float

    @property
    def per_location(self) -> int:
        """Anchors per grid cell: the head predicts this many boxes per cell."""
        return self.num_scales * len(self.aspect_ratios)

    def model_garden_fields(self) -> dict:
        """The `task.model.anchor` override (what pipeline.yaml holds)."""
        return {
            "num_scales": self.num_scales,
            "aspect_ratios": [float(a) for a in self.aspect_ratios],
            "anchor_size": float(self.anchor_size),
        }

    def with_anchor_fields(
        self, aspect_ratios: Sequence[float], anchor_size: float
    ) -> AnchorConfig:
        return AnchorConfig(
            self.min_level,
            self.max_level,
            self.num_scales,
            tuple(float(a) for a in aspect_ratios),
            float(anchor_size),
        )


@dataclass(frozen=True)
class PresetAnchors:
    config: AnchorConfig
    image_size: int


_DEFAULT_RATIOS = (0.5, 1.0, 2.0)
# The container's presets (container/presets.py) as far as anchors go; data_prep cannot import
# them (they import TensorFlow). tests/test_anchors.py checks the two agree.
PRESET_ANCHORS: dict[str, PresetAnchors] = {
    "retinanet_mobilenetv2_fpnlite_320": PresetAnchors(
        AnchorConfig(3, 6, 3, _DEFAULT_RATIOS, 4.0), 320
    ),
    "retinanet_mobilenetv2_fpnlite_256": PresetAnchors(
        AnchorConfig(3, 7, 3, _DEFAULT_RATIOS, 3.0), 256
    ),
    "retinanet_spinenet49_mobile_384": PresetAnchors(
        AnchorConfig(3, 7, 3, _DEFAULT_RATIOS, 3.0), 384
    ),
    "retinanet_resnet50_fpn_640": PresetAnchors(AnchorConfig(3, 7, 3, _DEFAULT_RATIOS, 4.0), 640),
}
DEFAULT_PRESET = "retinanet_mobilenetv2_fpnlite_320"


@dataclass(frozen=True)
class AnchorFit:
    """How well one anchor configuration covers a set of boxes."""

    best_possible_recall: float  # share of boxes with an anchor at IoU >= iou_threshold
    mean_best_iou: float  # mean over boxes of the best anchor IoU
    boxes: int
    iou_threshold: float

    def as_dict(self) -> dict:
        return {
            "best_possible_recall": round(self.best_possible_recall, 4),
            "mean_best_iou": round(self.mean_best_iou, 4),
            "boxes": self.boxes,
            "iou_threshold": self.iou_threshold,
        }


def _grid(level: int, height: int, width: int):
    """Feature size and stride per axis, as Model Garden's `Anchor` computes them."""
    cells_y, cells_x = math.ceil(height / 2**level), math.ceil(width / 2**level)
    return cells_y, cells_x, height / cells_y, width / cells_x


def anchor_shapes(config: AnchorConfig, level: int) -> np.ndarray:
    """[per_location, 2] (height, width) of one level's anchors, in the head's order."""
    shapes = []
    for scale in range(config.num_scales):
        size = config.anchor_size * 2**level * 2 ** (scale / config.num_scales)
        for ratio in config.aspect_ratios:
            shapes.append((size / math.sqrt(ratio), size * math.sqrt(ratio)))
    return np.asarray(shapes, dtype=np.float64)


def anchor_boxes(config: AnchorConfig, height: int, width: int) -> np.ndarray:
    """[N, 4] anchors (ymin, xmin, ymax, xmax) in input pixels, in Model Garden's order."""
    levels = []
    for level in range(config.min_level, config.max_level + 1):
        cells_y, cells_x, stride_y, stride_x = _grid(level, height, width)
        ys = (np.arange(cells_y) + 0.5) * stride_y
        xs = (np.arange(cells_x) + 0.5) * stride_x
        yv, xv = np.meshgrid(ys, xs, indexing="ij")
        half = anchor_shapes(config, level) / 2.0  # [A, 2]
        boxes = np.stack(
            [
                yv[..., None] - half[:, 0],
                xv[..., None] - half[:, 1],
                yv[..., None] + half[:, 0],
                xv[..., None] + half[:, 1],
            ],
            axis=-1,
        )  # [cells_y, cells_x, A, 4]
        levels.append(boxes.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def boxes_in_input(
    normalised: np.ndarray, image_sizes: np.ndarray, input_height: int, input_width: int
) -> np.ndarray:
    """Boxes normalised to their image -> input pixels, the image fitted into the input.

    normalised: [M, 4] (ymin, xmin, ymax, xmax) in [0, 1]; image_sizes: [M, 2] (height,
    width) of each box's image. The training input scales each image so it fits inside the
    input with the aspect ratio kept (Model Garden's resize_and_crop_image).
    """
    normalised = np.asarray(normalised, dtype=np.float64).reshape(-1, 4)
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    scale = np.minimum(input_height / sizes[:, 0], input_width / sizes[:, 1])
    height, width = sizes[:, 0] * scale, sizes[:, 1] * scale
    return normalised * np.stack([height, width, height, width], axis=-1)


def best_anchor_iou(
    boxes: np.ndarray, config: AnchorConfig, input_height: int, input_width: int
) -> np.ndarray:
    """[M] best IoU of each box (input pixels, ymin, xmin, ymax, xmax) with any anchor.

    Exact without building the anchor-by-box matrix: for anchors of one shape, IoU only falls
    as the centres move apart along either axis, so the best anchor of each shape on each
    level is the one in the grid cell nearest the box's centre.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    box_h = boxes[:, 2] - boxes[:, 0]
    box_w = boxes[:, 3] - boxes[:, 1]
    centre_y = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_x = (boxes[:, 1] + boxes[:, 3]) / 2
    best = np.zeros(len(boxes))
    for level in range(config.min_level, config.max_level + 1):
        cells_y, cells_x, stride_y, stride_x = _grid(level, input_height, input_width)
        anchor_y = (np.clip(np.floor(centre_y / stride_y), 0, cells_y - 1) + 0.5) * stride_y
        anchor_x = (np.clip(np.floor(centre_x / stride_x), 0, cells_x - 1) + 0.5) * stride_x
        shapes = anchor_shapes(config, level)  # [A, 2]
        overlap_y = _overlap(boxes[:, 0], boxes[:, 2], anchor_y, shapes[:, 0])
        overlap_x = _overlap(boxes[:, 1], boxes[:, 3], anchor_x, shapes[:, 1])
        intersection = overlap_y * overlap_x
        union = (box_h * box_w)[:, None] + (shapes[:, 0] * shapes[:, 1])[None, :] - intersection
        iou = np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)
        best = np.maximum(best, iou.max(axis=1))
    return best


def _overlap(low, high, centre, extent):
    """[M, A] overlap of intervals [low, high] with anchors centre +- extent / 2."""
    top = np.minimum(high[:, None], centre[:, None] + extent[None, :] / 2)
    bottom = np.maximum(low[:, None], centre[:, None] - extent[None, :] / 2)
    return np.clip(top - bottom, 0.0, None)


def valid_boxes(boxes: np.ndarray) -> np.ndarray:
    """Only boxes with a positive width and height (the rest cannot match any anchor)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]


def anchor_fit(
    boxes: np.ndarray,
    config: AnchorConfig,
    input_height: int,
    input_width: int,
    iou_threshold: float = MATCH_THRESHOLD,
) -> AnchorFit:
    """Best possible recall and mean best IoU of `config` on `boxes` (input pixels)."""
    boxes = valid_boxes(boxes)
    if not len(boxes):
        return AnchorFit(0.0, 0.0, 0, iou_threshold)
    best = best_anchor_iou(boxes, config, input_height, input_width)
    return AnchorFit(
        float(np.mean(best >= iou_threshold)), float(best.mean()), len(boxes), iou_threshold
    )


def _kmeans_1d(values: np.ndarray, k: int, rounds: int = 50) -> np.ndarray:
    """k sorted cluster centres of 1-D values (deterministic: starts at the quantiles)."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(rounds):
        nearest = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        moved = np.array(
            [values[nearest == i].mean() if np.any(nearest == i) else centres[i] for i in range(k)]
        )
        if np.allclose(moved, centres):
            break
        centres = moved
    return np.sort(centres)


def _snap(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    return steps[np.abs(values[:, None] - steps[None, :]).argmin(axis=1)]


def fit_anchors(
    boxes: np.ndarray,
    config: AnchorConfig,
    input_height: int,
    input_width: int,
    iou_threshold: float = MATCH_THRESHOLD,
    seed: int = 0,
) -> tuple[AnchorConfig, AnchorFit]:
    """Aspect ratios and anchor size fitted to `boxes` (input pixels) by a recall search.

    The count stays that of `config` (same levels, num_scales and number of ratios), so the
    head keeps its size. Aspect ratios start at the k-means centres of the boxes' log aspect
    ratios; then each ratio (on a 2**(1/4) grid) and the anchor size (on a 2**(1/6) grid) are
    searched in turn, until no step improves, for the highest mean over the boxes of their
    best IoU counted only where it reaches the threshold: recall and match quality in one
    number (recall alone stops caring about quality once a box is over the threshold, and
    drifts the ratios towards 1). Deterministic for a given `seed` (used only to sample very
    large sets).
    """
    boxes = valid_boxes(boxes)
    if len(boxes) > MAX_FIT_BOXES:
        rng = np.random.default_rng(seed)
        boxes = boxes[rng.choice(len(boxes), MAX_FIT_BOXES, replace=False)]
    if not len(boxes):
        return config, anchor_fit(boxes, config, input_height, input_width, iou_threshold)

    def score(log2_ratios: np.ndarray, size_step: float) -> float:
        candidate = config.with_anchor_fields(2.0**log2_ratios, config.anchor_size * 2**size_step)
        best = best_anchor_iou(boxes, candidate, input_height, input_width)
        return float(np.mean(np.where(best >= iou_threshold, best, 0.0)))

    log2_aspect = np.log2((boxes[:, 3] - boxes[:, 1]) / (boxes[:, 2] - boxes[:, 0]))
    ratios = _snap(_kmeans_1d(log2_aspect, len(config.aspect_ratios)), _RATIO_STEPS)
    size_step = 0.0
    best = score(ratios, size_step)
    for _ in range(_ROUNDS):
        improved = False
        for index in range(len(ratios)):
            for step in _RATIO_STEPS:
                trial = ratios.copy()
                trial[index] = step
                trial_score = score(trial, size_step)
                if trial_score > best:
                    ratios, best, improved = trial, trial_score, True
        for step in _SIZE_STEPS:
            trial_score = score(ratios, step)
            if trial_score > best:
                size_step, best, improved = step, trial_score, True
        if not improved:
            break
    fitted = config.with_anchor_fields(
        sorted(round(float(2.0**r), 4) for r in ratios),
        round(float(config.anchor_size * 2**size_step), 4),
    )
    return fitted, anchor_fit(boxes, fitted, input_height, input_width, iou_threshold)


@dataclass(frozen=True)
class AnchorDecision:
    """What anchors=auto chose, and the fits behind the choice."""

    config: AnchorConfig  # the anchors to train with
    fitted: bool  # whether `config` is the fit (else the preset's)
    reason: str
    default_fit: AnchorFit
    candidate: AnchorConfig | None = None  # the fit, adopted or not (None: not searched)
    candidate_fit: AnchorFit | None = None

    def as_dict(self) -> dict:
        return {
            "anchors": self.config.model_garden_fields(),
            "fitted": self.fitted,
            "reason": self.reason,
            "default_fit": self.default_fit.as_dict(),
            "candidate": self.candidate.model_garden_fields() if self.candidate else None,
            "candidate_fit": self.candidate_fit.as_dict() if self.candidate_fit else None,
        }


def choose_anchors(
    boxes: np.ndarray,
    config: AnchorConfig,
    input_height: int,
    input_width: int,
    iou_threshold: float = MATCH_THRESHOLD,
    fit_below: float = AUTO_FIT_BELOW,
) -> AnchorDecision:
    """anchors=auto: keep `config` unless its recall is below `fit_below` and a fit beats it."""
    default = anchor_fit(boxes, config, input_height, input_width, iou_threshold)
    if default.boxes == 0:
        return AnchorDecision(config, False, "no training boxes: the preset's anchors", default)
    if default.best_possible_recall >= fit_below:
        return AnchorDecision(
            config,
            False,
            f"default anchors reach best possible recall {default.best_possible_recall:.3f} "
            f">= {fit_below}: kept",
            default,
        )
    fitted, fit = fit_anchors(boxes, config, input_height, input_width, iou_threshold)
    gain = fit.best_possible_recall - default.best_possible_recall
    if gain < MIN_RECALL_GAIN:
        return AnchorDecision(
            config,
            False,
            f"default anchors reach best possible recall {default.best_possible_recall:.3f}; "
            f"the best fit reaches {fit.best_possible_recall:.3f}, not enough gain: kept",
            default,
            fitted,
            fit,
        )
    return AnchorDecision(
        fitted,
        True,
        f"default anchors reach best possible recall {default.best_possible_recall:.3f} "
        f"< {fit_below}; fitted anchors reach {fit.best_possible_recall:.3f}",
        default,
        fitted,
        fit,
    )


def preset_fits(
    normalised: np.ndarray, image_sizes: np.ndarray, image_size: int | None = None
) -> dict[str, dict]:
    """The fit of every preset's default anchors (at its input size, or `image_size`)."""
    report = {}
    for name, preset in PRESET_ANCHORS.items():
        size = image_size or preset.image_size
        boxes = boxes_in_input(normalised, image_sizes, size, size)
        fit = anchor_fit(boxes, preset.config, size, size)
        report[name] = {"input_size": size, **fit.as_dict()}
    return report
