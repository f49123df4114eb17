"""The `checkpoint` channel as a source of initial weights: find, unpack, convert, inspect, check.

The channel holds one of:
- a TensorFlow checkpoint (`ckpt-N.index` + `ckpt-N.data-*`) anywhere inside it: an earlier
  job's checkpoints, or Model Garden's ImageNet backbones;
- a `.tar.gz` (or `.tgz`, `.tar`) of one, as Model Garden publishes its COCO models: unpacked
  into a scratch folder; absolute paths, `..`, links and devices are refused;
- a Keras Applications MobileNetV2 `.h5` (ImageNet weights): converted into a Model Garden
  backbone checkpoint by `container.keras_weights`.

`prepare` runs before training: it reads the checkpoint's variable names and shapes, compares
them with the modules of the model this job builds, and fails with the preset the checkpoint
does fit when they differ. After Model Garden's `task.initialize`, `InitialCheckpoint.verify`
counts per module the model variables that now hold the checkpoint's values ("backbone:
restored 260 of 260 variables") and fails when a module restored nothing or only part of it,
instead of training silently from scratch (tensorflow/models#9284, #11060).
"""

from __future__ import annotations

import atexit
import logging
import pathlib
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.modeling import factory

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.data_prep.files import unsafe_archive_member

logger = logging.getLogger(__name__)

MODULES = ("backbone", "decoder", "head")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
KERAS_SUFFIX = ".h5"
# A model variable's key in an object-based checkpoint; optimizer slots and counters differ.
_VARIABLE_KEY = re.compile(
    r"^(backbone|decoder|head)/(?!.*\.OPTIMIZER_SLOT).*/\.ATTRIBUTES/VARIABLE_VALUE$"
)
_INDEX = re.compile(r"^(?P<prefix>.+)\.index$")

ModuleVariables = dict[str, dict[str, tuple[int, ...]]]


# ---- pure logic -------------------------------------------------------------------------


def module_variables(shapes: Mapping[str, Iterable[int]]) -> ModuleVariables:
    """{module: {key: shape}} of a checkpoint's model variables, from its variable-to-shape map;
    optimizer slots, step counters and the object graph are left out."""
    modules: ModuleVariables = {}
    for key, shape in shapes.items():
        match = _VARIABLE_KEY.match(key)
        if match:
            modules.setdefault(match.group(1), {})[key] = tuple(int(n) for n in shape)
    return modules


def requested_modules(init_checkpoint_modules: str) -> tuple[str, ...]:
    """`all` -> backbone, decoder, head; `backbone,decoder` -> both; `none` -> ()."""
    if init_checkpoint_modules == "none":
        return ()
    if init_checkpoint_modules == "all":
        return MODULES
    return tuple(init_checkpoint_modules.split(","))


def describe_variables(variables: ModuleVariables) -> str:
    """`backbone 260, decoder 37, head 44 variables` (pure)."""
    parts = [f"{module} {len(variables[module])}" for module in MODULES if variables.get(module)]
    return (", ".join(parts) + " variables") if parts else "no backbone, decoder or head variables"


@dataclass(frozen=True)
class ModuleFit:
    """How one module of a model matches a checkpoint's variables."""

    module: str
    model_count: int
    missing: tuple[str, ...] = ()  # in the model, not in the checkpoint
    extra: tuple[str, ...] = ()  # in the checkpoint, not in the model
    # key, checkpoint shape, model shape
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = ()

    @property
    def fits(self) -> bool:
        return self.model_count > 0 and not (self.missing or self.extra or self.mismatched)

    def summary(self) -> str:
        if self.fits:
            return f"{self.module}: all {self.model_count} variables match"
        problems = []
        if self.mismatched:
            key, theirs, ours = self.mismatched[0]
            problems.append(
                f"{len(self.mismatched)} differ in shape (e.g. {_short(key)} is "
                f"{list(theirs)} in the checkpoint, {list(ours)} in the model)"
            )
        if self.missing:
            problems.append(
                f"{len(self.missing)} are not in the checkpoint (e.g. {_short(self.missing[0])})"
            )
        if self.extra:
            problems.append(
                f"the checkpoint has {len(self.extra)} the model lacks "
                f"(e.g. {_short(self.extra[0])})"
            )
        return f"{self.module}: of {self.model_count} model variables, " + ", ".join(problems)


def _short(key: str) -> str:
    return key.removesuffix("/.ATTRIBUTES/VARIABLE_VALUE")


def compare(
    checkpoint: ModuleVariables, model: ModuleVariables, modules: Iterable[str]
) -> dict[str, ModuleFit]:
    """Each requested module of `model` against `checkpoint` by key and shape (pure)."""
    fits = {}
    for module in modules:
        ours = model.get(module, {})
        theirs = checkpoint.get(module, {})
        fits[module] = ModuleFit(
            module=module,
            model_count=len(ours),
            missing=tuple(sorted(set(ours) - set(theirs))),
            extra=tuple(sorted(set(theirs) - set(ours))),
            mismatched=tuple(
                (key, theirs[key], ours[key])
                for key in sorted(set(ours) & set(theirs))
                if theirs[key] != ours[key]
            ),
        )
    return fits


@dataclass(frozen=True)
class PresetFit:
    preset: str
    modules: tuple[str, ...]  # the checkpoint modules that carry over into this preset


def fitting_presets(
    checkpoint: ModuleVariables, presets: Mapping[str, ModuleVariables]
) -> list[PresetFit]:
    """The presets whose backbone (and decoder, when both have one) match the checkpoint's;
    the head is left out: it depends on the class count (pure)."""
    found = []
    for name, model in presets.items():
        if (
            "backbone" not in checkpoint
            or not compare(checkpoint, model, ["backbone"])["backbone"].fits
        ):
            continue
        modules = ["backbone"]
        if checkpoint.get("decoder") and model.get("decoder"):
            if not compare(checkpoint, model, ["decoder"])["decoder"].fits:
                continue
            modules.append("decoder")
        found.append(PresetFit(name, tuple(modules)))
    return found


def restored_counts(
    model_values: Mapping[str, np.ndarray], checkpoint_values: Mapping[str, np.ndarray]
) -> dict[str, tuple[int, int]]:
    """{module: (restored, total)}: a model variable counts as restored when the checkpoint has
    the same key with the same value (pure)."""
    counts: dict[str, list[int]] = {}
    for key, value in model_values.items():
        module = key.split("/", 1)[0]
        tally = counts.setdefault(module, [0, 0])
        tally[1] += 1
        theirs = checkpoint_values.get(key)
        if theirs is not None and theirs.shape == value.shape and np.array_equal(theirs, value):
            tally[0] += 1
    return {module: (restored, total) for module, (restored, total) in counts.items()}


# ---- finding and unpacking --------------------------------------------------------------


@dataclass(frozen=True)
class ChannelContent:
    """What the checkpoint channel holds: `kind` is checkpoint, archive or keras_h5; `path` is a
    checkpoint prefix, an archive or an .h5 file."""

    kind: str
    path: pathlib.Path


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def checkpoint_prefixes(directory: pathlib.Path) -> list[str]:
    """Prefixes with an index and at least one data shard anywhere under `directory`."""
    prefixes = []
    for index in sorted(directory.rglob("*.index")):
        prefix = _INDEX.match(str(index))
        if prefix and any(index.parent.glob(f"{index.name[: -len('.index')]}.data-*")):
            prefixes.append(prefix.group("prefix"))
    return prefixes


def latest_prefix(prefixes: list[str]) -> str:
    """The checkpoint a folder's `checkpoint` state file names, else the highest `-N`."""
    for folder in sorted({str(pathlib.Path(p).parent) for p in prefixes}):
        latest = tf.train.latest_checkpoint(folder)
        if latest in prefixes:
            return latest

    def step(prefix: str) -> tuple[int, str]:
        number = re.search(r"-(\d+)$", prefix)
        return (int(number.group(1)) if number else -1, prefix)

    return max(prefixes, key=step)


def locate(channel_dir: pathlib.Path) -> ChannelContent | None:
    """What the channel holds; None when it is absent. UserError when it is empty or holds
    nothing usable, naming what it found."""
    if not channel_dir.is_dir():
        return None
    files = _files(channel_dir)
    if not files:
        raise UserError(
            f"checkpoint channel {channel_dir} is empty; upload a checkpoint (ckpt-N.index and "
            "ckpt-N.data-* files, a Model Garden .tar.gz or a Keras .h5), e.g. with "
            "`python -m launch train --pretrained NAME`, or remove the channel"
        )
    prefixes = checkpoint_prefixes(channel_dir)
    if prefixes:
        return ChannelContent("checkpoint", pathlib.Path(latest_prefix(prefixes)))
    orphans = [p for p in files if p.name.endswith(".index")]
    if orphans:
        raise UserError(
            f"checkpoint channel {channel_dir}: {orphans[0].relative_to(channel_dir)} has no "
            f"{orphans[0].name.removesuffix('.index')}.data-* file beside it; upload the "
            "complete ckpt-N.index and ckpt-N.data-* files"
        )
    archives = [p for p in files if p.name.endswith(ARCHIVE_SUFFIXES)]
    if len(archives) == 1:
        return ChannelContent("archive", archives[0])
    keras_files = [p for p in files if p.name.endswith(KERAS_SUFFIX)]
    if not archives and len(keras_files) == 1:
        return ChannelContent("keras_h5", keras_files[0])
    found = ", ".join(str(p.relative_to(channel_dir)) for p in files[:8])
    if len(archives) > 1 or len(keras_files) > 1:
        raise UserError(
            f"checkpoint channel {channel_dir} holds several candidates ({found}); "
            "upload exactly one checkpoint, archive or .h5 file"
        )
    raise UserError(
        f"checkpoint channel {channel_dir} holds no TensorFlow checkpoint (no ckpt-N.index with "
        f"its ckpt-N.data-* files, no .tar.gz, no Keras .h5; it holds: {found}); point it at an "
        "earlier job's checkpoints or remove the channel"
    )


def unpack_archive(archive: pathlib.Path, destination: pathlib.Path) -> list[str]:
    """Unpack into `destination` (created); UserError for an unreadable archive or a member
    that is not a plain file or folder inside it. Returns the member names."""
    destination.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            unsafe = [m.name for m in members if unsafe_archive_member(m)]
            if unsafe:
                raise UserError(
                    f"{archive}: refusing to unpack member {unsafe[0]!r} (absolute path, '..', "
                    "link or device); a checkpoint archive holds only files and folders"
                )
            needed = sum(m.size for m in members if m.isfile())
            free = shutil.disk_usage(destination).free
            if needed > free:
                raise UserError(
                    f"{archive}: unpacking needs {needed / 2**20:.0f} MiB, {destination} has "
                    f"{free / 2**20:.0f} MiB free; raise the instance's volume size"
                )
            if hasattr(tarfile, "data_filter"):
                tar.extractall(destination, members=members, filter="data")
            else:  # every member was checked above
                tar.extractall(destination, members=members)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise UserError(
            f"{archive}: not a readable .tar.gz ({error}); upload the archive again "
            "(python -m launch pretrained fetch checks it)"
        ) from error
    return [m.name for m in members]


# ---- models -----------------------------------------------------------------------------


def build_model(model_config: Any) -> tf_keras.Model:
    """Model Garden's RetinaNet for `model_config`, as the task builds it (no regulariser)."""
    size = list(model_config.input_size)
    spec = tf_keras.layers.InputSpec(shape=[None, *size])
    return factory.build_retinanet(spec, model_config)


def write_modules(model: tf_keras.Model, modules: Iterable[str], prefix: str) -> str | None:
    """Write the model's `modules` (those it has) as a checkpoint, keyed as a Model Garden
    trainer's checkpoint keys them (`backbone/...`); None when it has none of them."""
    items = {name: item for name, item in model.checkpoint_items.items() if name in modules}
    if not items:
        return None
    return tf.train.Checkpoint(**items).write(prefix)


def model_variables(
    model: tf_keras.Model, modules: Iterable[str], scratch: pathlib.Path
) -> ModuleVariables:
    """{module: {key: shape}} of the model's modules, read back from a checkpoint of them."""
    path = write_modules(model, modules, str(scratch / "model"))
    if path is None:
        return {}
    return module_variables(dict(tf.train.list_variables(path)))


_PRESET_VARIABLES: dict[str, ModuleVariables] = {}


def preset_variables(scratch: pathlib.Path) -> dict[str, ModuleVariables]:
    """Backbone and decoder variables of every preset (built once per process: only needed to
    name the preset a mismatching checkpoint fits)."""
    from sagemaker_tfod.container.presets import PRESETS

    for name, preset in PRESETS.items():
        if name not in _PRESET_VARIABLES:
            config = preset.base_config().task.model
            config.num_classes = 2
            model = build_model(config)
            _PRESET_VARIABLES[name] = model_variables(model, ("backbone", "decoder"), scratch)
            del model
    return dict(_PRESET_VARIABLES)


# ---- the channel, end to end ------------------------------------------------------------


@dataclass
class InitialCheckpoint:
    """A checkpoint ready for Model Garden's `init_checkpoint`, checked against the model."""

    prefix: str
    source: str  # what the user gave, for messages
    modules: tuple[str, ...]  # requested and present in the model
    preset: str
    scratch: pathlib.Path
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def verify(self, model: tf_keras.Model) -> dict[str, tuple[int, int]]:
        """After Model Garden's `task.initialize`: count per module the variables holding the
        checkpoint's values, log them, and fail unless every one was restored."""
        try:
            path = write_modules(model, self.modules, str(self.scratch / "initialised"))
            reader = tf.train.load_checkpoint(self.prefix)
            ours = tf.train.load_checkpoint(path) if path else None
            model_values = {}
            checkpoint_values = {}
            names = ours.get_variable_to_shape_map() if ours else {}
            available = reader.get_variable_to_shape_map()
            for key in names:
                if _VARIABLE_KEY.match(key):
                    model_values[key] = ours.get_tensor(key)
                    if key in available:
                        checkpoint_values[key] = reader.get_tensor(key)
            self.counts = restored_counts(model_values, checkpoint_values)
        finally:
            shutil.rmtree(self.scratch, ignore_errors=True)
        for module in self.modules:
            restored, total = self.counts.get(module, (0, 0))
            logger.info(
                "%s: restored %d of %d variables from %s", module, restored, total, self.source
            )
        incomplete = {
            module: self.counts.get(module, (0, 0))
            for module in self.modules
            if self.counts.get(module, (0, 0))[0] < max(self.counts.get(module, (0, 0))[1], 1)
        }
        if incomplete:
            restored = ", ".join(f"{m} {n} of {total}" for m, (n, total) in incomplete.items())
            raise UserError(
                f"the checkpoint channel ({self.source}) did not initialise the model (restored: "
                f"{restored} variables); it was written by another architecture: use a "
                f"checkpoint of model={self.preset}, or init_checkpoint_modules=none to train "
                "from scratch"
            )
        return self.counts


def prepare(
    channel_dir: pathlib.Path,
    params: Any,
    preset_name: str,
    init_checkpoint_modules: str,
    checkpoints_dir: pathlib.Path,
) -> InitialCheckpoint | None:
    """Find what the channel holds, unpack or convert it, check it against the model `params`
    builds, and point `params.task.init_checkpoint` at it. None when there is nothing to
    initialise from (no channel, `none`, or a job resuming from its own checkpoints)."""
    if init_checkpoint_modules == "none":
        if channel_dir.is_dir():
            logger.info("init_checkpoint_modules=none: ignoring %s", channel_dir)
        return None
    content = locate(channel_dir)
    if content is None:
        return None
    resuming = tf.train.latest_checkpoint(str(checkpoints_dir))
    if resuming:
        logger.info("resuming from %s: the checkpoint channel is not used", resuming)
        return None
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="tfod-checkpoint-"))
    # `verify` removes it once the model is initialised; this covers a job failing before.
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    try:
        initial = _prepare(
            content, channel_dir, params, preset_name, init_checkpoint_modules, scratch
        )
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    params.task.init_checkpoint = initial.prefix
    params.task.init_checkpoint_modules = init_checkpoint_modules
    return initial


def _prepare(
    content: ChannelContent,
    channel_dir: pathlib.Path,
    params: Any,
    preset_name: str,
    init_checkpoint_modules: str,
    scratch: pathlib.Path,
) -> InitialCheckpoint:
    modules = requested_modules(init_checkpoint_modules)
    source = str(content.path)
    if content.kind == "archive":
        names = unpack_archive(content.path, scratch / "unpacked")
        prefixes = checkpoint_prefixes(scratch / "unpacked")
        if not prefixes:
            raise UserError(
                f"{content.path}: the archive holds no TensorFlow checkpoint (no ckpt-N.index "
                f"with its data files; it holds: {', '.join(names[:8]) or 'nothing'})"
            )
        prefix = latest_prefix(prefixes)
        logger.info("unpacked %s: %s", content.path, pathlib.Path(prefix).name)
    elif content.kind == "keras_h5":
        from sagemaker_tfod.container import keras_weights

        if modules != ("backbone",):
            raise UserError(
                f"{content.path} is Keras ImageNet weights: they initialise the backbone only; "
                f"set init_checkpoint_modules=backbone (not {init_checkpoint_modules})"
            )
        prefix = keras_weights.convert_mobilenet_v2(
            content.path, params.task.model, str(scratch / "keras" / "ckpt")
        )
        logger.info("converted %s into a Model Garden backbone checkpoint", content.path)
    else:
        prefix = str(content.path)
    try:
        shapes = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(
            f"checkpoint channel {channel_dir}: {prefix} cannot be read "
            f"({str(error).splitlines()[0]}); upload the complete ckpt-N.index and "
            "ckpt-N.data-* files"
        ) from error
    checkpoint = module_variables(shapes)
    logger.info("checkpoint %s: %s", prefix, describe_variables(checkpoint))

    model = build_model(params.task.model)
    ours = model_variables(model, modules, scratch)
    del model
    present = tuple(m for m in modules if ours.get(m))  # SpineNet's identity decoder has none
    for module in modules:
        if module not in present:
            logger.info("%s: model=%s has none; nothing to restore", module, preset_name)
    fits = compare(checkpoint, ours, present)
    if not all(fit.fits for fit in fits.values()):
        raise UserError(
            mismatch_message(
                source, preset_name, init_checkpoint_modules, fits, checkpoint, scratch
            )
        )
    return InitialCheckpoint(prefix, source, present, preset_name, scratch)


def mismatch_message(
    source: str,
    preset_name: str,
    init_checkpoint_modules: str,
    fits: Mapping[str, ModuleFit],
    checkpoint: ModuleVariables,
    scratch: pathlib.Path,
) -> str:
    """One line: which modules do not fit and why, and the preset the checkpoint does fit."""
    problems = "; ".join(fit.summary() for fit in fits.values() if not fit.fits)
    failing = [m for m, fit in fits.items() if not fit.fits]
    absent = [m for m in failing if not checkpoint.get(m)]
    held = [m for m in ("backbone", "decoder") if m in fits and fits[m].fits]
    if absent and held and set(failing) == set(absent):
        fix = (
            f"it holds no {' or '.join(absent)} variables; set "
            f"init_checkpoint_modules={','.join(held)}"
        )
    elif failing == ["head"]:
        fix = (
            "the head depends on the class count and the preset; use "
            "init_checkpoint_modules=backbone,decoder to start a new head"
        )
    elif not checkpoint:
        fix = (
            "it holds no backbone/decoder/head variables: it is not a Model Garden detection "
            "or backbone checkpoint"
        )
    else:
        candidates = fitting_presets(checkpoint, preset_variables(scratch))
        others = [c for c in candidates if c.preset != preset_name]
        if others:
            names = ", ".join(f"model={c.preset} ({', '.join(c.modules)})" for c in others)
            fix = (
                f"the checkpoint fits {names}: set that preset, or use a checkpoint of "
                f"model={preset_name}"
            )
        elif candidates:
            fix = (
                f"the checkpoint fits the stock model={preset_name}, not this job's version "
                "of it: remove the pipeline.yaml overrides that change the architecture"
            )
        else:
            fix = (
                "it fits none of the presets; use a checkpoint written by this preset "
                "(an earlier job of it), or init_checkpoint_modules=none"
            )
    return (
        f"the checkpoint channel ({source}) does not fit model={preset_name} with "
        f"init_checkpoint_modules={init_checkpoint_modules}: {problems}; {fix}"
    )
