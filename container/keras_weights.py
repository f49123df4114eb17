"""Keras Applications MobileNetV2 ImageNet weights (`.h5`) -> a Model Garden backbone checkpoint.

Model Garden has no such converter. Keras' MobileNetV2 and Model Garden's `MobileNet(model_id=
'MobileNetV2')` are the same network: the same convolutions and batch norms in the same order,
relu6, residual adds where stride is 1 and the width is kept. The weights therefore map layer by
layer, in order: Keras `Conv1`, `bn_Conv1`, then per inverted-residual block `block_N_expand`
(absent in block 0), `..._BN`, `..._depthwise`, `..._BN`, `..._project`, `..._BN`, then `Conv_1`,
`Conv_1_bn`; Model Garden's blocks hold `_conv0`, `_norm0`, `_conv1`, `_norm1`, `_conv2`,
`_norm2` (without `_conv0`/`_norm0` when a block does not expand).

Inputs differ: Keras feeds `pixel / 127.5 - 1`, Model Garden `(pixel - 255 * mean) / (255 * std)`
per channel (ImageNet mean and std). With `k = 2 * std` and `c = 2 * mean - 1`, the Keras input is
`k * x + c` of Model Garden's `x`; the first convolution absorbs it: its kernel is scaled by `k`
per input channel, and the constant `conv(c)` it adds is taken off the following batch norm's
moving mean. The result is exact wherever the first convolution's window lies inside the image.
On its padded bottom row and right column ('same' padding, stride 2, even sizes) Keras pads its
input with 0 while Model Garden pads with 0 of *its* input, which is the pixel value 255 * mean
(Keras' `c`), so those outputs differ by `conv(c)` over the padded taps; the difference reaches
a few border rows and columns of each feature map (tests/test_keras_weights.py measures it and
shows it vanishes when Keras is given the same padding).

The `.h5` files are Keras 2 (tf.keras / tf_keras) weight files, as Keras Applications publishes
them (`mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5`; `..._224.h5` with
the classifier, which is ignored) or as `model.save_weights("x.h5")` writes them.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras
from official.vision.modeling.backbones import factory as backbone_factory
from official.vision.ops import preprocess_ops

from sagemaker_tfod.container.errors import UserError

# Sub-layers of Model Garden's MobileNet blocks, in the order the block applies them.
_BLOCK_SUBLAYERS = ("_conv0", "_norm0", "_conv1", "_norm1", "_conv2", "_norm2")
# Keras' MobileNetV2 classifier (include_top=True); not part of the backbone.
_CLASSIFIER_LAYERS = ("Logits", "predictions")


@dataclass(frozen=True)
class KerasLayer:
    name: str
    weights: tuple[np.ndarray, ...]


def read_keras_h5(path: pathlib.Path) -> list[KerasLayer]:
    """The layers with weights of a Keras 2 `.h5` (weights-only or whole-model), in file
    order, which is the model's layer order; UserError naming the file otherwise."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            root = file.get("model_weights", file)
            if "layer_names" not in root.attrs:
                raise UserError(
                    f"{path}: not a Keras 2 weights file (no layer_names; Keras 3 "
                    "`.weights.h5` files are not read); use the Keras Applications file "
                    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 or "
                    "save with tf_keras `model.save_weights('x.h5')`"
                )
            layers = []
            for raw_name in root.attrs["layer_names"]:
                name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
                group = root[name]
                weight_names = [
                    w.decode() if isinstance(w, bytes) else str(w)
                    for w in group.attrs.get("weight_names", [])
                ]
                if weight_names:
                    weights = tuple(np.asarray(group[w]) for w in weight_names)
                    layers.append(KerasLayer(name, weights))
            return layers
    except OSError as error:
        message = f"{path}: not a readable HDF5 (.h5) file ({error}); upload it again"
        raise UserError(message) from error


def fold_input_scaling(
    kernel: np.ndarray, moving_mean: np.ndarray, scale: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A first convolution (no bias) followed by batch norm, fed `scale * x + shift` per input
    channel, rewritten for input `x`: (new kernel, new moving mean). Pure."""
    kernel = np.asarray(kernel, dtype=np.float64)
    new_kernel = kernel * scale[None, None, :, None]
    constant = np.einsum("hwio,i->o", kernel, shift)  # what the shift adds to every output
    return new_kernel.astype(np.float32), (np.asarray(moving_mean) - constant).astype(np.float32)


def model_garden_input_scaling() -> tuple[np.ndarray, np.ndarray]:
    """(k, c) with Keras' input `pixel / 127.5 - 1` = `k * x + c` of Model Garden's `x`."""
    mean = np.asarray(preprocess_ops.MEAN_NORM, dtype=np.float64)
    std = np.asarray(preprocess_ops.STDDEV_NORM, dtype=np.float64)
    return 255.0 * std / 127.5, 255.0 * mean / 127.5 - 1.0


def backbone_layers(backbone: tf_keras.Model) -> list[tf_keras.layers.Layer]:
    """Model Garden MobileNet's convolutions and batch norms that hold weights, in order."""
    found = []
    for block in backbone.layers:
        for attribute in _BLOCK_SUBLAYERS:
            layer = getattr(block, attribute, None)
            if layer is not None and layer.weights:
                found.append(layer)
    return found


def _kind(weights: Sequence[np.ndarray]) -> str:
    return "batch norm" if len(weights) == 4 and weights[0].ndim == 1 else "convolution"


def load_mobilenet_v2(
    backbone: tf_keras.Model, keras_layers: Sequence[KerasLayer], source: str
) -> int:
    """Set a Model Garden MobileNetV2 backbone from Keras' layers, folding the input scaling
    into the first convolution and batch norm. Returns the number of layers set."""
    keras_layers = [layer for layer in keras_layers if layer.name not in _CLASSIFIER_LAYERS]
    targets = backbone_layers(backbone)
    if len(keras_layers) != len(targets):
        raise UserError(
            f"{source}: holds {len(keras_layers)} convolution/batch-norm layers, a Model Garden "
            f"MobileNetV2 has {len(targets)}; it is not a Keras MobileNetV2 weights file"
        )
    scale, shift = model_garden_input_scaling()
    values: list[list[np.ndarray]] = [list(layer.weights) for layer in keras_layers]
    # The first convolution and its batch norm absorb the input scaling.
    values[0][0], values[1][2] = fold_input_scaling(values[0][0], values[1][2], scale, shift)
    for keras_layer, weights, target in zip(keras_layers, values, targets, strict=True):
        ours = [tuple(w.shape) for w in target.get_weights()]
        theirs = [tuple(w.shape) for w in weights]
        if ours != theirs:
            width = ""
            if keras_layer is keras_layers[0]:
                width = (
                    f" (the file's first convolution has {theirs[0][-1]} filters, the model's "
                    f"{ours[0][-1]}: the file is another width (alpha); set "
                    "task.model.backbone.mobilenet.filter_size_scale to it in pipeline.yaml)"
                )
            raise UserError(
                f"{source}: Keras layer {keras_layer.name} ({_kind(weights)}) has shapes "
                f"{theirs}, the model's layer {ours}{width}"
            )
        target.set_weights(weights)
    return len(targets)


def build_backbone(model_config: Any) -> tf_keras.Model:
    """Model Garden's backbone for a RetinaNet model config."""
    spec = tf_keras.layers.InputSpec(shape=[None, *list(model_config.input_size)])
    return backbone_factory.build_backbone(
        input_specs=spec,
        backbone_config=model_config.backbone,
        norm_activation_config=model_config.norm_activation,
    )


def convert_mobilenet_v2(h5_path: pathlib.Path, model_config: Any, prefix: str) -> str:
    """Write a checkpoint `{backbone: ...}` that `init_checkpoint_modules=backbone` restores;
    returns its path. UserError unless the model's backbone is MobileNetV2."""
    backbone_config = model_config.backbone
    if backbone_config.type != "mobilenet" or backbone_config.mobilenet.model_id != "MobileNetV2":
        raise UserError(
            f"{h5_path} is Keras MobileNetV2 weights; they fit a MobileNetV2 backbone: set "
            "model=retinanet_mobilenetv2_fpnlite_320 (or _256)"
        )
    keras_layers = read_keras_h5(h5_path)
    backbone = build_backbone(model_config)
    load_mobilenet_v2(backbone, keras_layers, str(h5_path))
    pathlib.Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    return tf.train.Checkpoint(backbone=backbone).write(prefix)
