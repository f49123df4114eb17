"""Keras Applications MobileNetV2 weights -> Model Garden backbone: the converted backbone gives
Keras' feature maps on the same images.

Nothing can be downloaded, so the Keras model is built with `weights=None` (random kernels,
batch-norm statistics randomised too, so the folded moving mean is exercised) and saved as a
Keras 2 `.h5` under the published file's name, exactly as Keras Applications stores its weights.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from official.vision.ops import preprocess_ops
from PIL import Image

from sagemaker_tfod.container import checkpoint_source, keras_weights
from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.hyperparameters import parse_hyperparameters
from sagemaker_tfod.container.pipeline_config import DataPaths, build_experiment
from sagemaker_tfod.container.presets import get_preset

SIZE = 128
PUBLISHED_NAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
RACCOON = pathlib.Path(__file__).resolve().parents[2] / "shared" / "datasets" / "raccoon"
# Keras layers whose outputs are Model Garden's endpoints 2..6 (stride 4, 8, 16, 32, 32).
KERAS_ENDPOINTS = {
    "2": "block_2_add",
    "3": "block_5_add",
    "4": "block_12_add",
    "5": "block_16_project_BN",
    "6": "out_relu",
}


def keras_mobilenet_v2(alpha: float = 1.0, seed: int = 0) -> tf_keras.Model:
    tf_keras.utils.set_random_seed(seed)
    model = tf_keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), alpha=alpha
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf_keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape),
                    rng.normal(0.0, 0.2, beta.shape),
                    rng.normal(0.0, 0.3, mean.shape),
                    rng.uniform(0.5, 2.0, variance.shape),
                ]
            )
    return model


@pytest.fixture(scope="module")
def keras_model() -> tf_keras.Model:
    return keras_mobilenet_v2()


@pytest.fixture(scope="module")
def keras_h5(keras_model, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("keras") / PUBLISHED_NAME
    keras_model.save_weights(path)
    return path


def model_config():
    config = get_preset("retinanet_mobilenetv2_fpnlite_320").base_config().task.model
    config.input_size = [SIZE, SIZE, 3]
    return config


@pytest.fixture(scope="module")
def converted_backbone(keras_h5, tmp_path_factory) -> tf_keras.Model:
    """A fresh Model Garden backbone restored from the converted checkpoint, as Model Garden's
    `init_checkpoint_modules=backbone` restores it."""
    prefix = keras_weights.convert_mobilenet_v2(
        keras_h5, model_config(), str(tmp_path_factory.mktemp("converted") / "ckpt")
    )
    backbone = keras_weights.build_backbone(model_config())
    status = tf.train.Checkpoint(backbone=backbone).read(prefix)
    status.assert_existing_objects_matched()
    return backbone


def images() -> np.ndarray:
    """A raccoon photo and uniform noise, uint8 [2, SIZE, SIZE, 3]."""
    photo = next(iter(sorted((RACCOON / "images").glob("*.jpg"))))
    with Image.open(photo) as image:
        natural = np.asarray(image.convert("RGB").resize((SIZE, SIZE)))
    noise = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return np.stack([natural, noise])


def keras_features(model: tf_keras.Model, pixels: np.ndarray) -> dict[str, np.ndarray]:
    outputs = [model.get_layer(name).output for name in KERAS_ENDPOINTS.values()]
    features = tf_keras.Model(model.input, outputs)(pixels / 127.5 - 1.0, training=False)
    return {level: f.numpy() for level, f in zip(KERAS_ENDPOINTS, features, strict=True)}


def model_garden_features(backbone: tf_keras.Model, pixels: np.ndarray) -> dict[str, np.ndarray]:
    normalised = preprocess_ops.normalize_image(tf.constant(pixels, tf.uint8))
    return {level: f.numpy() for level, f in backbone(normalised, training=False).items()}


class ConstantPaddedConv(tf_keras.layers.Layer):
    """Keras' `Conv1` (3x3, stride 2, 'same') with its padding (one row below, one column to the
    right, for even sizes) filled with `value` per channel instead of 0."""

    def __init__(self, value: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.value = tf.constant(value, tf.float32)

    def build(self, input_shape):
        self.kernel = self.add_weight(name="kernel", shape=(3, 3, input_shape[-1], 32))

    def call(self, inputs):
        padded = tf.pad(inputs - self.value, [[0, 0], [0, 1], [0, 1], [0, 0]]) + self.value
        return tf.nn.conv2d(padded, self.kernel, strides=2, padding="VALID")


def keras_padded_like_model_garden(model: tf_keras.Model) -> tf_keras.Model:
    """The same Keras network, padding its input with Model Garden's zero (in Keras' input
    space: `c`, the pixel value 255 * mean) instead of Keras' own zero."""
    _, shift = keras_weights.model_garden_input_scaling()

    def clone(layer):
        if layer.name == "Conv1":
            return ConstantPaddedConv(shift, name="Conv1")
        return layer.__class__.from_config(layer.get_config())

    copy = tf_keras.models.clone_model(model, clone_function=clone)
    for layer in copy.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return copy


def test_converted_backbone_gives_keras_feature_maps(keras_model, converted_backbone):
    """Same feature maps at every level: away from the bottom/right border to 1e-5 (float
    rounding); on the border, the difference is the first convolution's padding value, which
    vanishes (borders included, to 1e-5) once Keras pads its input the way Model Garden does."""
    pixels = images()
    ours = model_garden_features(converted_backbone, pixels)
    theirs = keras_features(keras_model, pixels)
    same_padding = keras_features(keras_padded_like_model_garden(keras_model), pixels)
    for level in KERAS_ENDPOINTS:
        assert ours[level].shape == theirs[level].shape, level
        scale = float(np.abs(theirs[level]).max())
        assert scale > 0.1, f"level {level}: features too small to compare ({scale})"
        difference = np.abs(ours[level] - theirs[level])
        # Differences above rounding come only from the bottom/right padding of Keras' first
        # convolution: the interior matches, and with Model Garden's padding value Keras
        # matches everywhere. (Measured with these random weights: 6e-4 to 1.1e-3 on the last
        # two rows and columns of level 2, 3e-5 at level 3, rounding (5e-7) at levels 4-6.)
        size = ours[level].shape[1]
        assert difference[:, : size - 3, : size - 3].max() <= 1e-5, level
        assert np.abs(ours[level] - same_padding[level]).max() <= 1e-5, level


def test_the_first_convolution_absorbs_the_input_scaling():
    """fold_input_scaling is exact for a valid convolution (no padding involved)."""
    rng = np.random.default_rng(2)
    kernel = rng.normal(size=(3, 3, 3, 4)).astype(np.float32)
    mean = rng.normal(size=4).astype(np.float32)
    scale, shift = keras_weights.model_garden_input_scaling()
    x = rng.normal(size=(1, 9, 9, 3)).astype(np.float32)
    keras_input = (x * scale + shift).astype(np.float32)
    expected = tf.nn.conv2d(keras_input, kernel, 1, "VALID").numpy() - mean
    new_kernel, new_mean = keras_weights.fold_input_scaling(kernel, mean, scale, shift)
    got = tf.nn.conv2d(x, new_kernel, 1, "VALID").numpy() - new_mean
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # Keras' [-1, 1] scaling: pixel 0 is -1, 255 is 1, in Model Garden's normalisation.
    for pixel in (0.0, 255.0):
        mg = (pixel - 255 * np.asarray(preprocess_ops.MEAN_NORM)) / (
            255 * np.asarray(preprocess_ops.STDDEV_NORM)
        )
        np.testing.assert_allclose(scale * mg + shift, pixel / 127.5 - 1, atol=1e-12)


def test_another_width_is_named_with_the_fix(tmp_path):
    narrow = tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
    keras_mobilenet_v2(alpha=0.35).save_weights(narrow)
    with pytest.raises(UserError) as error:
        keras_weights.convert_mobilenet_v2(narrow, model_config(), str(tmp_path / "ckpt"))
    message = str(error.value)
    assert "Keras layer Conv1" in message
    assert "16 filters, the model's 32" in message
    assert "filter_size_scale" in message


def test_files_that_are_not_keras_2_mobilenet_weights(tmp_path):
    import h5py

    keras3 = tmp_path / "model.weights.h5"
    with h5py.File(keras3, "w") as file:
        file.create_group("layers")
    with pytest.raises(UserError, match="not a Keras 2 weights file"):
        keras_weights.read_keras_h5(keras3)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(UserError, match="not a readable HDF5"):
        keras_weights.read_keras_h5(garbage)
    resnet_config = get_preset("retinanet_resnet50_fpn_640").base_config().task.model
    with pytest.raises(UserError, match="fit a MobileNetV2 backbone"):
        keras_weights.convert_mobilenet_v2(garbage, resnet_config, str(tmp_path / "ckpt"))


def test_h5_in_the_checkpoint_channel_initialises_the_backbone(keras_h5, tmp_path, caplog):
    """The container's path: the channel holds the .h5; prepare converts and checks it, Model
    Garden's own task.initialize restores it, and every backbone variable is counted."""
    from official.core import task_factory

    channel = tmp_path / "checkpoint"
    channel.mkdir()
    (channel / keras_h5.name).write_bytes(keras_h5.read_bytes())
    hp = parse_hyperparameters({"image_size": str(SIZE), "init_checkpoint_modules": "backbone"})
    params = build_experiment(get_preset(hp.model), hp, 2, DataPaths("x-*", None, 0))
    initial = checkpoint_source.prepare(
        channel, params, hp.model, hp.init_checkpoint_modules, tmp_path / "checkpoints"
    )
    assert initial is not None and params.task.init_checkpoint == initial.prefix
    task = task_factory.get_task(params.task)
    # What Model Garden's silent failures look like: a model that restored nothing is refused.
    initial_copy = dataclasses.replace(initial, scratch=tmp_path / "scratch_copy")
    with pytest.raises(
        UserError, match=r"did not initialise the model \(restored: backbone 0 of 260"
    ):
        initial_copy.verify(task.build_model())
    model = task.build_model()
    task.initialize(model)
    with caplog.at_level("INFO"):
        counts = initial.verify(model)
    restored, total = counts["backbone"]
    assert restored == total == 260
    assert f"backbone: restored {total} of {total} variables" in caplog.text
    assert not initial.scratch.exists()  # the converted copy is removed once restored

    # backbone,decoder from an .h5 is refused: it holds no decoder.
    with pytest.raises(UserError, match="initialise the backbone only"):
        checkpoint_source.prepare(
            channel, params, hp.model, "backbone,decoder", tmp_path / "checkpoints"
        )
