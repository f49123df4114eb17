"""Fit an image into a detector's fixed input the way Model Garden does when it trains.

Model Garden (`preprocess_ops.resize_and_crop_image` with `keep_aspect_ratio`) scales the image
so it fits inside the input, keeps the aspect ratio, places it in the top-left corner and pads
the rest. It pads the *normalised* image with 0, which is the mean pixel in raw pixel terms, so
the raw-pixel letterbox here pads with the mean pixel to show the network what it saw in training.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

from sagemaker_tfod.data_prep.images import DEFAULT_MAX_MEGAPIXELS
from sagemaker_tfod.edge.errors import EdgeError

# Larger images are refused from their header, before any pixel is decoded: a 1 KB PNG can
# declare 50,000 x 50,000 pixels (7.5 GB decoded). The same limit as data_prep's.
DEFAULT_MAX_PIXELS = int(DEFAULT_MAX_MEGAPIXELS * 1_000_000)

# Model Garden's ImageNet mean (preprocess_ops.MEAN_RGB), rounded to whole pixel values.
PAD_RGB = (124, 116, 104)


@dataclass(frozen=True)
class Letterbox:
    """Where the original image sits inside the model input, to map boxes back."""

    image_height: int
    image_width: int
    input_height: int
    input_width: int
    scale_y: float  # resized height / original height
    scale_x: float

    def normalised_to_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] [ymin, xmin, ymax, xmax] normalised to the model input -> original pixels."""
        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        factors = np.array(
            [
                self.input_height / self.scale_y,
                self.input_width / self.scale_x,
                self.input_height / self.scale_y,
                self.input_width / self.scale_x,
            ],
            dtype=np.float32,
        )
        limits = np.array(
            [self.image_height, self.image_width, self.image_height, self.image_width],
            dtype=np.float32,
        )
        return np.clip(boxes * factors, 0.0, limits)


def fit_size(height: int, width: int, input_height: int, input_width: int) -> tuple[int, int]:
    """Size of the image once scaled to fit the input with its aspect ratio kept."""
    scale = min(input_height / height, input_width / width)
    return (
        max(1, min(input_height, round(height * scale))),
        max(1, min(input_width, round(width * scale))),
    )


def letterbox(
    image: np.ndarray, input_height: int, input_width: int
) -> tuple[np.ndarray, Letterbox]:
    """RGB uint8 [H, W, 3] -> uint8 [input_height, input_width, 3] and how it was placed."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3], got shape {image.shape}")
    height, width = image.shape[:2]
    new_height, new_width = fit_size(height, width, input_height, input_width)
    resized = Image.fromarray(image).resize((new_width, new_height), Image.Resampling.BILINEAR)
    canvas = np.empty((input_height, input_width, 3), dtype=np.uint8)
    canvas[...] = PAD_RGB
    canvas[:new_height, :new_width] = np.asarray(resized, dtype=np.uint8)
    placement = Letterbox(
        image_height=height,
        image_width=width,
        input_height=input_height,
        input_width=input_width,
        scale_y=new_height / height,
        scale_x=new_width / width,
    )
    return canvas, placement


def to_input_tensor(
    pixels: np.ndarray, dtype: np.dtype, quantization: tuple[float, int]
) -> np.ndarray:
    """Uint8 pixels [H, W, 3] -> the [1, H, W, 3] tensor a model input of `dtype` wants.

    Every model this project exports takes raw pixel values (0-255); normalisation happens
    inside the graph. A quantised input (uint8/int8 with a non-zero scale) gets the pixels
    quantised with the input's own scale and zero point; a float input gets them as floats.
    """
    batch = pixels[np.newaxis, ...]
    dtype = np.dtype(dtype)
    scale, zero_point = quantization
    if dtype.kind in "ui":
        if scale:
            info = np.iinfo(dtype)
            quantised = np.round(batch.astype(np.float32) / scale + zero_point)
            return np.clip(quantised, info.min, info.max).astype(dtype)
        return batch.astype(dtype)
    return batch.astype(dtype)


def _open_within(path: str, max_pixels: int) -> Image.Image:
    """The image at `path`, opened lazily (header only); EdgeError above `max_pixels`.
    Pillow's own decompression-bomb check (a warning at 89 and an error at 179 megapixels)
    is replaced by this limit, which the user can set."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise EdgeError(
            f"{path}: {width}x{height} pixels ({width * height / 1e6:,.0f} megapixels) is "
            f"above the {max_pixels / 1e6:g}-megapixel limit; resize the image, or raise "
            "--max-megapixels"
        )
    return image


def check_image_size(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    """EdgeError when the image at `path` has more than `max_pixels` (header only)."""
    _open_within(path, max_pixels).close()


def load_rgb(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any image file Pillow reads (greyscale, palette, RGBA) -> RGB uint8 [H, W, 3];
    EdgeError for an image above `max_pixels`."""
    with _open_within(path, max_pixels) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
