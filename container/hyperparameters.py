"""SageMaker hyperparameters (all strings) -> one typed, validated `Hyperparameters`.

Each field's metadata holds its help text; `describe()` renders the table the README and
`--help` show, so the defaults are written in one place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sagemaker_tfod.container.errors import UserError

DEFAULT_MODEL = "retinanet_mobilenetv2_fpnlite_320"
INFERENCE_TYPES = ("FLOAT", "QUANTIZED_UINT8", "INT8")
# What the checkpoint channel can initialise (Model Garden's RetinaNetTask.initialize reads
# `all`, or any of backbone/decoder by substring: `head` or `['all']` would load nothing, silently).
INIT_CHECKPOINT_MODULES = ("backbone", "backbone,decoder", "all", "none")
LOG_LEVELS = ("info", "debug")
ANCHOR_CHOICES = ("auto", "default")
# Fields whose unset value comes from the preset (the others' `None` is derived, see help).
PRESET_FIELDS = ("batch_size", "image_size", "learning_rate")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _hp(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class Hyperparameters:
    """Training settings; `None` means "the preset's value"."""

    model: str = _hp(DEFAULT_MODEL, "named preset (see Presets)")
    num_steps: int = _hp(2000, "training steps in total (a resumed job continues to this)")
    batch_size: int | None = _hp(
        None, "global batch size, split over all devices and instances (preset's if unset)"
    )
    image_size: int | None = _hp(
        None, "square input size in pixels; a multiple of the preset's stride (preset's if unset)"
    )
    learning_rate: float | None = _hp(None, "peak learning rate of the cosine schedule")
    warmup_steps: int | None = _hp(None, "linear warm-up steps (min(500, num_steps/10) if unset)")
    log_interval_steps: int = _hp(50, "steps between `metric` lines and summaries")
    eval_interval_steps: int | None = _hp(
        None, "steps between COCO evaluations (once at the end if unset)"
    )
    checkpoint_interval_steps: int | None = _hp(
        None, "steps between checkpoints (= log_interval_steps*10 if unset)"
    )
    init_checkpoint_modules: str = _hp(
        "backbone",
        "what the `checkpoint` channel initialises: backbone, backbone,decoder, all or none",
    )
    freeze_backbone: bool = _hp(False, "train only the FPN and head")
    batchnorm_momentum: float = _hp(0.97, "BatchNorm moving-average momentum")
    random_flip: bool = _hp(True, "random horizontal flips while training")
    scale_min: float = _hp(0.8, "smallest random scale while training")
    scale_max: float = _hp(1.25, "largest random scale while training")
    mixed_precision: bool = _hp(False, "float16 compute (GPU only; ignored on CPU)")
    seed: int = _hp(0, "random seed for TensorFlow and the input pipeline")
    score_threshold: float = _hp(0.05, "lowest detection score kept by the exported model")
    max_detections: int = _hp(100, "most detections per image")
    anchors: str = _hp(
        "auto",
        "auto: fit anchor aspect ratios and size to the training boxes when the preset's "
        "anchors miss too many of them (see Anchors); default: the preset's anchors",
    )
    export_edge: bool = _hp(True, "also write the frozen graph and TFLite files")
    export_onnx: bool = _hp(
        True, "with export_edge: also write model.onnx, shipped if it matches the float TFLite"
    )
    quantize: bool = _hp(False, "TFLite with quantisation (see inference_type)")
    inference_type: str = _hp(
        "FLOAT",
        "TFLite kind when quantize=true: FLOAT (model_fp16.tflite), "
        "QUANTIZED_UINT8 or INT8 (model_int8.tflite, full integer)",
    )
    calibration_samples: int = _hp(100, "images used to calibrate full-integer TFLite")
    quantized_ap50_floor: float = _hp(
        0.97,
        "the quantised TFLite ships only if its eval AP50 is at least this fraction of the "
        "float TFLite's (0 ships it unchecked)",
    )
    log_level: str = _hp(
        "info",
        "info (configuration, progress, metrics, results, warnings) or debug (adds TensorFlow's "
        "and Model Garden's own messages); env TFOD_LOG_LEVEL when unset",
    )
    stop_grace_seconds: float = _hp(
        120.0, "seconds from SIGTERM to SIGKILL (SageMaker's stop: 120); exports after a stop fit"
    )
    stop_margin_seconds: float = _hp(
        15.0, "seconds before that SIGKILL by which the job must have ended (see Stops)"
    )
    cluster_timeout_seconds: int = _hp(
        600, "multi-instance: how long each instance waits for the others to resolve and join"
    )
    peer_timeout_seconds: int = _hp(
        60, "multi-instance: an instance silent this long is taken as failed; the job stops"
    )

    def __post_init__(self) -> None:
        _validate(self)

    def __str__(self) -> str:
        return self.render()

    def render(self, preset: Any = None) -> str:
        """`model=... num_steps=2000 batch_size=16 ...`: the settings as one log line; the
        preset's values (and the derived ones) fill in what was left unset."""
        resolved = {
            "warmup_steps": self.resolved_warmup_steps,
            "checkpoint_interval_steps": self.resolved_checkpoint_interval_steps,
        }
        if preset is not None:
            resolved.update({name: getattr(preset, name) for name in PRESET_FIELDS})
        values = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                value = resolved.get(f.name)
            if value is None:
                value = "preset" if f.name in PRESET_FIELDS else "auto"
            values.append(f"{f.name}={_format_default(value)}")
        return " ".join(values)

    @property
    def resolved_warmup_steps(self) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return min(500, self.num_steps // 10)

    @property
    def resolved_checkpoint_interval_steps(self) -> int:
        return self.checkpoint_interval_steps or self.log_interval_steps * 10


def known_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Hyperparameters)]


def describe() -> list[tuple[str, str, str, str]]:
    """(name, type, default, meaning) for every hyperparameter, in declaration order."""
    rows = []
    for f in dataclasses.fields(Hyperparameters):
        type_name = _base_type(f.type)
        if f.default is None:
            default = "preset" if f.name in PRESET_FIELDS else "auto"
        else:
            default = _format_default(f.default)
        rows.append((f.name, type_name, default, f.metadata["help"]))
    return rows


def parse_hyperparameters(raw: Mapping[str, str]) -> Hyperparameters:
    """Strings (as SageMaker sends them) -> Hyperparameters; UserError names the bad key."""
    fields = {f.name: f for f in dataclasses.fields(Hyperparameters)}
    # The SageMaker SDK adds its own `sagemaker_*` keys in some modes; they are not ours.
    user_keys = {k: v for k, v in raw.items() if not k.startswith("sagemaker_")}
    unknown = sorted(set(user_keys) - set(fields))
    if unknown:
        raise UserError(
            f"unknown hyperparameter(s) {', '.join(unknown)}; known ones are: {', '.join(fields)}"
        )
    values: dict[str, Any] = {}
    for name, text in user_keys.items():
        text = unquote_json_string(str(text).strip())
        values[name] = _convert(name, _base_type(fields[name].type), text)
    # Choices are matched case-insensitively: `int8`, `Backbone`, `AUTO`.
    if isinstance(values.get("inference_type"), str):
        values["inference_type"] = values["inference_type"].upper()
    if isinstance(values.get("log_level"), str):
        values["log_level"] = values["log_level"].lower()
    if isinstance(values.get("init_checkpoint_modules"), str):
        values["init_checkpoint_modules"] = normalize_init_checkpoint_modules(
            values["init_checkpoint_modules"]
        )
    if isinstance(values.get("anchors"), str):
        values["anchors"] = values["anchors"].lower()
    try:
        return Hyperparameters(**values)
    except ValueError as error:
        raise UserError(str(error)) from error


def normalize_init_checkpoint_modules(text: str) -> str:
    """`Backbone, Decoder` -> `backbone,decoder`. A value from which Model Garden would silently
    load nothing or less than asked (`head`, `['all']`, `backbone,decoder,head`) is an error
    saying what to use instead."""
    names = [part.strip() for part in text.lower().split(",")]
    if not all(re.fullmatch(r"[a-z]+", name) for name in names):
        raise UserError(
            f"hyperparameter init_checkpoint_modules={text!r} must be a plain comma-separated "
            f"value, not a list or quoted names: one of {', '.join(INIT_CHECKPOINT_MODULES)}"
        )
    order = {"backbone": 0, "decoder": 1, "head": 2}
    value = ",".join(sorted(set(names), key=lambda name: (order.get(name, 3), name)))
    if value in INIT_CHECKPOINT_MODULES:
        return value
    if "head" in names:
        fix = (
            "Model Garden restores the head only with all (same preset and class count; "
            "`head` alone loads nothing); use all, or backbone,decoder for a new head"
        )
    elif names == ["decoder"]:
        fix = "the decoder (FPN) is trained on its backbone: use backbone,decoder"
    else:
        fix = f"use one of {', '.join(INIT_CHECKPOINT_MODULES)}"
    raise UserError(f"hyperparameter init_checkpoint_modules={text!r} is not accepted; {fix}")


def unquote_json_string(text: str) -> str:
    """`"value"` -> `value`: the SageMaker SDK's framework estimators JSON-encode every value
    (a string arrives with its quotes), and sagemaker-training-toolkit json-decodes each value
    when it can, so a quoted value means the same as a bare one here too."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(decoded, str):
            return decoded.strip()
    return text


def _base_type(annotation: Any) -> str:
    text = str(annotation)
    return text.replace(" | None", "").replace("typing.Optional[", "").rstrip("]")


def _format_default(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _convert(name: str, type_name: str, text: str) -> Any:
    if text.lower() in ("", "none", "null") and type_name != "str":
        return None
    try:
        if type_name == "int":
            number = float(text)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if type_name == "float":
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if type_name == "bool":
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError
    except ValueError:
        example = {"int": "2000", "float": "0.01", "bool": "true or false"}[type_name]
        raise UserError(
            f"hyperparameter {name}={text!r} is not a valid {type_name}; give e.g. {example}"
        ) from None
    return text


def _validate(hp: Hyperparameters) -> None:
    def require(condition: bool, message: str) -> None:
        if not condition:
            raise ValueError(f"hyperparameter {message}")

    require(hp.num_steps >= 1, f"num_steps={hp.num_steps} must be at least 1")
    for name in ("batch_size", "image_size", "eval_interval_steps", "checkpoint_interval_steps"):
        value = getattr(hp, name)
        require(value is None or value >= 1, f"{name}={value} must be at least 1")
    require(hp.log_interval_steps >= 1, "log_interval_steps must be at least 1")
    require(
        hp.warmup_steps is None or 0 <= hp.warmup_steps < hp.num_steps,
        f"warmup_steps={hp.warmup_steps} must be in [0, num_steps={hp.num_steps})",
    )
    require(
        hp.learning_rate is None or hp.learning_rate > 0,
        f"learning_rate={hp.learning_rate} must be positive",
    )
    require(
        0 < hp.batchnorm_momentum < 1,
        f"batchnorm_momentum={hp.batchnorm_momentum} must be between 0 and 1",
    )
    require(
        0 < hp.scale_min <= hp.scale_max,
        f"scale_min={hp.scale_min}, scale_max={hp.scale_max}: need 0 < scale_min <= scale_max",
    )
    require(0 <= hp.score_threshold < 1, f"score_threshold={hp.score_threshold} must be in [0, 1)")
    require(hp.max_detections >= 1, "max_detections must be at least 1")
    require(hp.calibration_samples >= 1, "calibration_samples must be at least 1")
    for name in ("cluster_timeout_seconds", "peer_timeout_seconds"):
        require(getattr(hp, name) >= 1, f"{name}={getattr(hp, name)} must be at least 1")
    require(
        0 <= hp.quantized_ap50_floor <= 1,
        f"quantized_ap50_floor={hp.quantized_ap50_floor} must be between 0 and 1",
    )
    require(
        hp.init_checkpoint_modules in INIT_CHECKPOINT_MODULES,
        f"init_checkpoint_modules={hp.init_checkpoint_modules!r} must be one of "
        f"{', '.join(INIT_CHECKPOINT_MODULES)}",
    )
    require(
        hp.log_level in LOG_LEVELS,
        f"log_level={hp.log_level!r} must be one of {', '.join(LOG_LEVELS)}",
    )
    require(
        hp.stop_grace_seconds > 0 and 0 <= hp.stop_margin_seconds < hp.stop_grace_seconds,
        f"stop_grace_seconds={hp.stop_grace_seconds}, stop_margin_seconds="
        f"{hp.stop_margin_seconds}: need 0 <= margin < grace",
    )
    require(
        hp.anchors in ANCHOR_CHOICES,
        f"anchors={hp.anchors!r} must be one of {', '.join(ANCHOR_CHOICES)}",
    )
    require(
        hp.inference_type in INFERENCE_TYPES,
        f"inference_type={hp.inference_type!r} must be one of {', '.join(INFERENCE_TYPES)}",
    )
