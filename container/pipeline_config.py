"""Build, validate and save the Model Garden experiment; read TF OD API `pipeline.config` files.

Precedence, lowest first: preset -> OD API `pipeline.config` values (as hyperparameter
defaults) -> hyperparameters -> `pipeline.yaml` override in the channel (any Model Garden field).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import yaml
from official.core import config_definitions as cfg
from official.modeling import optimization
from official.modeling.hyperparams import params_dict

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.hyperparameters import Hyperparameters
from sagemaker_tfod.container.presets import Preset
from sagemaker_tfod.data_prep.files import atomic_output_path

logger = logging.getLogger(__name__)

PIPELINE_YAML = "pipeline.yaml"
PIPELINE_CONFIG = "pipeline.config"
EVAL_BATCH_SIZE_MAX = 8


@dataclasses.dataclass(frozen=True)
class DataPaths:
    """What the experiment reads: shard patterns and the eval set size (0 = no evaluation)."""

    train_pattern: str
    eval_pattern: str | None
    num_eval_examples: int


def eval_batch_size(num_eval_examples: int) -> int:
    """Largest batch <= 8 dividing the eval set, so `drop_remainder` drops no image."""
    return max(b for b in range(1, EVAL_BATCH_SIZE_MAX + 1) if num_eval_examples % b == 0)


def build_experiment(
    preset: Preset,
    hp: Hyperparameters,
    num_classes: int,
    data: DataPaths,
    *,
    init_checkpoint: str | None = None,
    override_yaml: pathlib.Path | None = None,
    use_gpu: bool = False,
) -> cfg.ExperimentConfig:
    """The resolved experiment; `num_classes` counts label-map classes (background is added)."""
    config = preset.base_config()
    image_size = hp.image_size or preset.image_size
    if image_size % preset.stride:
        lower = max(preset.stride, image_size - image_size % preset.stride)
        raise UserError(
            f"hyperparameter image_size={image_size} must be a multiple of {preset.stride} for "
            f"model={preset.name} (its largest feature stride); use e.g. {lower} or "
            f"{lower + preset.stride}"
        )
    batch_size = hp.batch_size or preset.batch_size
    task = config.task
    model = task.model
    model.num_classes = num_classes + 1  # Model Garden's class 0 is background.
    model.input_size = [image_size, image_size, 3]
    model.norm_activation.norm_momentum = hp.batchnorm_momentum
    model.detection_generator.max_num_detections = hp.max_detections
    model.detection_generator.pre_nms_score_threshold = hp.score_threshold
    task.freeze_backbone = hp.freeze_backbone
    task.max_num_eval_detections = hp.max_detections
    task.export_config.output_normalized_coordinates = True
    task.annotation_file = ""
    if init_checkpoint:
        task.init_checkpoint = init_checkpoint
        task.init_checkpoint_modules = hp.init_checkpoint_modules
    else:
        task.init_checkpoint = None

    train = task.train_data
    train.input_path = data.train_pattern
    train.global_batch_size = batch_size
    train.is_training = True
    train.seed = hp.seed
    train.shuffle_buffer_size = 1000
    train.parser.aug_rand_hflip = hp.random_flip
    train.parser.aug_scale_min = hp.scale_min
    train.parser.aug_scale_max = hp.scale_max
    val = task.validation_data
    val.input_path = data.eval_pattern or ""
    val.is_training = False
    val.global_batch_size = eval_batch_size(data.num_eval_examples) if data.eval_pattern else 1
    for data_config in (train, val):
        # Numeric source ids are required by the COCO evaluator; regenerate them from the image.
        data_config.decoder.simple_decoder.regenerate_source_id = True

    trainer = config.trainer
    trainer.train_steps = hp.num_steps
    trainer.steps_per_loop = hp.log_interval_steps
    trainer.summary_interval = hp.log_interval_steps
    trainer.checkpoint_interval = hp.resolved_checkpoint_interval_steps
    trainer.validation_interval = hp.eval_interval_steps or hp.num_steps
    trainer.validation_steps = (
        data.num_eval_examples // val.global_batch_size if data.eval_pattern else 0
    )
    trainer.max_to_keep = 3
    trainer.best_checkpoint_export_subdir = ""
    # The container's own check names the step and the cause; Model Garden's would raise first.
    trainer.recovery_max_trials = -1
    learning_rate = hp.learning_rate or preset.learning_rate
    warmup = hp.resolved_warmup_steps
    trainer.optimizer_config = optimization.OptimizationConfig(
        {
            "optimizer": {"type": "sgd", "sgd": {"momentum": 0.9, "global_clipnorm": 10.0}},
            "learning_rate": {
                "type": "cosine",
                "cosine": {"initial_learning_rate": learning_rate, "decay_steps": hp.num_steps},
            },
            "warmup": (
                {
                    "type": "linear",
                    "linear": {
                        "warmup_steps": warmup,
                        "warmup_learning_rate": learning_rate / 10,
                    },
                }
                if warmup
                else {}
            ),
        }
    )
    config.runtime.mixed_precision_dtype = (
        "float16" if hp.mixed_precision and use_gpu else "float32"
    )
    if override_yaml is not None:
        apply_yaml_override(config, override_yaml)
    validate_experiment(config, preset)
    return config


def apply_yaml_override(config: cfg.ExperimentConfig, path: pathlib.Path) -> None:
    try:
        override = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UserError(f"{path}: not valid YAML ({error}); fix the file or remove it") from error
    if not isinstance(override, dict):
        raise UserError(f"{path}: expected a mapping such as 'task: {{model: ...}}'")
    try:
        config.override(override, is_strict=True)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise UserError(
            f"{path}: {error}; use the field names of the resolved model/pipeline.yaml "
            "from an earlier run"
        ) from error
    logger.info("applied the overrides in %s", path)


def validate_experiment(config: cfg.ExperimentConfig, preset: Preset) -> None:
    try:
        config.validate()
    except (KeyError, ValueError) as error:
        raise UserError(f"the resolved training config is invalid: {error}") from error
    model = config.task.model
    stride = 2**model.max_level
    for size in model.input_size[:2]:
        if size % stride:
            raise UserError(
                f"input size {size} is not a multiple of {stride} (2**max_level, "
                f"max_level={model.max_level}); change image_size or max_level"
            )


def recorded_experiment(config: cfg.ExperimentConfig) -> cfg.ExperimentConfig:
    """`config` as model/pipeline.yaml records it, reusable as a channel's pipeline.yaml: without
    `task.init_checkpoint`, the job's scratch copy of its checkpoint channel, which is gone once
    the model is initialised. A job's initial weights always come from its own checkpoint
    channel (the log and `init_checkpoint_modules` say which modules were loaded)."""
    recorded = copy.deepcopy(config)
    recorded.task.init_checkpoint = None
    return recorded


def save_experiment_yaml(config: cfg.ExperimentConfig, path: pathlib.Path) -> None:
    """The resolved config (as `recorded_experiment` keeps it) as YAML, written to a temporary
    name and renamed."""
    with atomic_output_path(path) as temporary:
        params_dict.save_params_dict_to_yaml(recorded_experiment(config), str(temporary))


# --- TF Object Detection API pipeline.config ---------------------------------------------

_TOKEN_RE = re.compile(
    r"\s*(?:(#[^\n]*)|([A-Za-z_][\w.]*)\s*(:)?\s*|(\{)|(\})|(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|([^\s{}#:\"']+))"
)


def parse_text_proto(text: str, source: str = PIPELINE_CONFIG) -> dict[str, list[Any]]:
    """Protobuf text format -> {field: [values]} (messages are dicts), without the protos."""
    root: dict[str, list[Any]] = {}
    stack = [root]
    pending: str | None = None
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if not match or match.end() == pos:
            if text[pos:].strip():
                raise UserError(f"{source}: cannot parse near {text[pos : pos + 30]!r}")
            break
        pos = match.end()
        comment, name, _colon, opening, closing, string, scalar = match.groups()
        if comment:
            continue
        if opening:
            if pending is None:
                raise UserError(f"{source}: '{{' without a field name")
            child: dict[str, list[Any]] = {}
            stack[-1].setdefault(pending, []).append(child)
            stack.append(child)
            pending = None
        elif closing:
            if len(stack) == 1:
                raise UserError(f"{source}: unbalanced '}}'")
            stack.pop()
        elif name is not None and pending is None:
            pending = name
        elif pending is not None and (string is not None or scalar is not None or name):
            value = string[1:-1] if string is not None else (scalar or name)
            stack[-1].setdefault(pending, []).append(value)
            pending = None
        else:
            raise UserError(f"{source}: unexpected {match.group(0).strip()!r}")
    if len(stack) != 1:
        raise UserError(f"{source}: missing '}}' at the end")
    return root


def _leaf_paths(node: dict[str, list[Any]], prefix: str = "") -> list[str]:
    paths = []
    for key, values in node.items():
        for value in values:
            path = f"{prefix}{key}"
            paths.extend(_leaf_paths(value, path + ".") if isinstance(value, dict) else [path])
    return paths


def _get(node: dict[str, list[Any]], path: Sequence[str]) -> Any:
    for key in path:
        values = node.get(key) if isinstance(node, dict) else None
        if not values:
            return None
        node = values[0]
    return node


# (hyperparameter, OD API field path); `*` matches the one meta-architecture/optimizer present.
_MAPPED_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("num_classes", ("model", "*", "num_classes")),
    ("image_size", ("model", "*", "image_resizer", "fixed_shape_resizer", "height")),
    ("image_width", ("model", "*", "image_resizer", "fixed_shape_resizer", "width")),
    ("image_size", ("model", "*", "image_resizer", "keep_aspect_ratio_resizer", "max_dimension")),
    ("batch_size", ("train_config", "batch_size")),
    ("num_steps", ("train_config", "num_steps")),
    (
        "learning_rate",
        ("train_config", "optimizer", "*", "learning_rate", "cosine_decay_learning_rate",
         "learning_rate_base"),
    ),
    (
        "warmup_steps",
        ("train_config", "optimizer", "*", "learning_rate", "cosine_decay_learning_rate",
         "warmup_steps"),
    ),
    (
        "learning_rate",
        ("train_config", "optimizer", "*", "learning_rate", "constant_learning_rate",
         "learning_rate"),
    ),
    (
        "learning_rate",
        ("train_config", "optimizer", "*", "learning_rate", "exponential_decay_learning_rate",
         "initial_learning_rate"),
    ),
    (
        "learning_rate",
        ("train_config", "optimizer", "*", "learning_rate", "manual_step_learning_rate",
         "initial_learning_rate"),
    ),
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class OdApiSettings:
    """What a TF OD API pipeline.config contributes: hyperparameter strings and the rest."""

    hyperparameters: dict[str, str]
    num_classes: int | None
    ignored_fields: list[str]


def read_od_api_pipeline_config(text: str, source: str = PIPELINE_CONFIG) -> OdApiSettings:
    tree = parse_text_proto(text, source)
    found: dict[str, str] = {}
    used_paths: set[str] = set()
    for name, pattern in _MAPPED_FIELDS:
        for path in _expand(tree, pattern):
            value = _get(tree, path)
            if value is not None and not isinstance(value, dict) and name not in found:
                found[name] = str(value)
                used_paths.add(".".join(path))
    width = found.pop("image_width", None)
    if width is not None and "image_size" in found and width != found["image_size"]:
        logger.warning(
            "%s: fixed_shape_resizer is %sx%s; the container trains square inputs, using %s",
            source,
            found["image_size"],
            width,
            found["image_size"],
        )
    num_classes = found.pop("num_classes", None)
    ignored = sorted({p for p in _leaf_paths(tree) if p not in used_paths})
    return OdApiSettings(
        hyperparameters=found,
        num_classes=int(num_classes) if num_classes is not None else None,
        ignored_fields=ignored,
    )


def _expand(tree: dict[str, list[Any]], pattern: Sequence[str]) -> list[tuple[str, ...]]:
    paths: list[tuple[str, ...]] = [()]
    for part in pattern:
        next_paths = []
        for path in paths:
            node = _get(tree, path) if path else tree
            if not isinstance(node, dict):
                continue
            keys = list(node) if part == "*" else [part]
            next_paths.extend((*path, key) for key in keys if key in node)
        paths = next_paths
    return paths
