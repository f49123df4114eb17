"""Request bodies and options -> images and settings, refusing bad input with the right 4xx.

Every function here is pure (bytes and strings in, arrays and dataclasses out) and raises
`RequestError` with the status and one line saying what was wrong and what to send instead.
Images are decoded by Pillow from a short list of formats; the pixel count is checked from the
header, before any pixel is decoded, so a 50,000 x 50,000 PNG of a few kilobytes costs nothing.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image

from sagemaker_tfod.container.serving.media_types import IMAGE, JSON_BODY, JSONLINES_BODY

# Formats a request may carry; others (TIFF, PSD, ICO, ...) are refused before their parsers
# run. (Pillow's JPEG opener also returns MPO, the multi-picture JPEG some cameras write.)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF")
OPTION_NAMES = ("score_threshold", "max_detections")
JSON_IMAGE_KEYS = ("image", "images")
# An oversized body is read and dropped up to this size before the 413 (see read_body).
DRAIN_LIMIT = 64 * 1024 * 1024


class RequestError(Exception):
    """Bad input: answered with `status` and a one-line JSON error, never a 500."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Options:
    """Per-request settings (query string, CustomAttributes, JSON body, Accept)."""

    score_threshold: float
    max_detections: int | None


@dataclass(frozen=True)
class EncodedImage:
    """One image of a request, still encoded; `where` names it in error messages."""

    where: str
    data: bytes


@dataclass(frozen=True)
class DecodedImage:
    """RGB pixels to run, and the size of the image as sent (boxes are reported in it).

    A large JPEG is decoded at a reduced scale (1/2, 1/4 or 1/8, done inside the JPEG
    decoder) when that still leaves at least the model's input size: `scale_x`/`scale_y`
    map the decoded pixels back to the sent ones.
    """

    pixels: np.ndarray
    width: int
    height: int
    image_format: str

    @property
    def scale_x(self) -> float:
        return self.width / self.pixels.shape[1]

    @property
    def scale_y(self) -> float:
        return self.height / self.pixels.shape[0]


# ---- body ---------------------------------------------------------------------------------


def read_body(stream, content_length: str | None, limit: int) -> bytes:
    """At most `limit` bytes from a WSGI input; 413 when the body is larger, 400 when empty.

    A body over the limit is still read (and dropped) up to DRAIN_LIMIT bytes before the 413,
    so the client, still sending, reads the answer instead of a reset connection; a chunked
    body is read up to one byte past the limit to tell.
    """
    declared: int | None = None
    if content_length not in (None, ""):
        try:
            declared = int(content_length)
        except ValueError:
            raise RequestError(400, f"Content-Length {content_length!r} is not a number") from None
        if declared > limit:
            if declared <= DRAIN_LIMIT:
                _drain(stream, declared)
            raise RequestError(413, too_large_message(declared, limit))
    body = stream.read(limit + 1 if declared is None else declared)
    if len(body) > limit:
        _drain(stream, DRAIN_LIMIT)
        raise RequestError(413, too_large_message(None, limit))
    if not body:
        raise RequestError(
            400, "empty request body; send the image bytes (or JSON with base64 images)"
        )
    return body


def _drain(stream, most: int, chunk: int = 1 << 20) -> None:
    """Read and drop up to `most` bytes of what the client is still sending."""
    left = most
    while left > 0:
        data = stream.read(min(chunk, left))
        if not data:
            return
        left -= len(data)


def too_large_message(size: int | None, limit: int) -> str:
    sent = f"{size:,} bytes" if size is not None else "more"
    return (
        f"request body is {sent}, above this endpoint's limit of {limit:,} bytes "
        f"({limit / (1024 * 1024):g} MiB, TFOD_SERVE_MAX_PAYLOAD_MB); send a smaller or "
        "re-compressed image, or fewer images per request"
    )


def split_images(body: bytes, kind: str, max_batch: int) -> tuple[list[EncodedImage], dict, bool]:
    """The encoded images of a body, the options it carries, and whether it was a batch.

    kind IMAGE: the body is one image. JSON_BODY: {"image": B64} or {"images": [B64, ...]},
    optionally with "score_threshold" and "max_detections". JSONLINES_BODY: one
    {"image": B64} object per line (blank lines skipped), always a batch.
    """
    if kind == IMAGE:
        return [EncodedImage("body", body)], {}, False
    if kind == JSON_BODY:
        return _json_images(body, max_batch)
    if kind == JSONLINES_BODY:
        return _jsonlines_images(body, max_batch), {}, True
    raise ValueError(f"unknown request kind {kind!r}")


def _parse_json(text: bytes, where: str):
    try:
        return json.loads(text.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise RequestError(400, f"{where}: not UTF-8 text; send JSON encoded as UTF-8") from None
    except json.JSONDecodeError as error:
        raise RequestError(
            400,
            f"{where}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno})",
        ) from None


def _json_images(body: bytes, max_batch: int) -> tuple[list[EncodedImage], dict, bool]:
    document = _parse_json(body, "JSON body")
    if not isinstance(document, dict):
        raise RequestError(
            400,
            'JSON body must be an object: {"image": "<base64>"} or {"images": ["<base64>", ...]}',
        )
    unknown = sorted(set(document) - set(JSON_IMAGE_KEYS) - set(OPTION_NAMES))
    if unknown:
        raise RequestError(
            400,
            f"JSON body: unknown key(s) {', '.join(unknown)}; known keys: "
            f"{', '.join(JSON_IMAGE_KEYS + OPTION_NAMES)}",
        )
    has_one, has_many = "image" in document, "images" in document
    if has_one == has_many:
        raise RequestError(
            400, 'JSON body needs exactly one of "image" (one base64 string) or "images" (a list)'
        )
    options = {key: document[key] for key in OPTION_NAMES if key in document}
    if has_one:
        return [EncodedImage("image", decode_base64(document["image"], "image"))], options, False
    items = document["images"]
    if not isinstance(items, list) or not items:
        raise RequestError(400, '"images" must be a non-empty list of base64 strings')
    check_batch_size(len(items), max_batch)
    images = [
        EncodedImage(f"images[{index}]", decode_base64(item, f"images[{index}]"))
        for index, item in enumerate(items)
    ]
    return images, options, True


def _jsonlines_images(body: bytes, max_batch: int) -> list[EncodedImage]:
    images: list[EncodedImage] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {number}"
        record = _parse_json(line, where)
        if not isinstance(record, dict) or "image" not in record:
            raise RequestError(400, f'{where}: each line must be a JSON object {{"image": B64}}')
        images.append(EncodedImage(where, decode_base64(record["image"], where)))
        check_batch_size(len(images), max_batch)
    if not images:
        raise RequestError(400, 'JSON Lines body has no lines; send one {"image": B64} a line')
    return images


def check_batch_size(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise RequestError(
            413,
            f"more than {max_batch} images in one request (TFOD_SERVE_MAX_BATCH); split them "
            "over several requests",
        )


def decode_base64(value, where: str) -> bytes:
    """Standard base64 (line breaks and a `data:image/...;base64,` prefix allowed) -> bytes."""
    if not isinstance(value, str):
        raise RequestError(400, f"{where}: expected a base64 string, got {type(value).__name__}")
    text = value.strip()
    if text.startswith("data:"):
        _, comma, text = text.partition(",")
        if not comma:
            raise RequestError(400, f"{where}: a data: URL without a comma before the data")
    text = text.replace("\n", "").replace("\r", "")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise RequestError(400, f"{where}: not valid base64 ({error})") from None
    if not data:
        raise RequestError(400, f"{where}: empty image")
    return data


# ---- options ------------------------------------------------------------------------------


def parse_options(
    query_string: str,
    custom_attributes: str | None,
    body_options: Mapping,
    n_predictions: int | None,
    defaults: Options,
) -> Options:
    """Defaults, then Accept's n_predictions, then SageMaker's CustomAttributes
    (`score_threshold=0.5,max_detections=10`), then the query string, then the JSON body.

    CustomAttributes is shared with other tools, so keys it has that are not ours are ignored;
    an unknown query parameter is refused (it is most likely a typo).
    """
    values: dict[str, object] = {}
    if n_predictions is not None:
        values["max_detections"] = n_predictions
    for item in (custom_attributes or "").replace(";", ",").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() in OPTION_NAMES:
            values[key.strip()] = value.strip()
    query = parse_qsl(query_string or "", keep_blank_values=True)
    unknown = sorted({key for key, _ in query} - set(OPTION_NAMES))
    if unknown:
        raise RequestError(
            400,
            f"unknown query parameter(s) {', '.join(unknown)}; known: {', '.join(OPTION_NAMES)}",
        )
    values.update(dict(query))
    values.update(body_options)
    score = defaults.score_threshold
    if "score_threshold" in values:
        score = _number(values["score_threshold"], "score_threshold")
        if not 0 <= score <= 1:
            raise RequestError(400, f"score_threshold={score:g} must be between 0 and 1")
    max_detections = defaults.max_detections
    if "max_detections" in values:
        number = _number(values["max_detections"], "max_detections")
        if number != int(number) or number < 1:
            raise RequestError(400, f"max_detections={number:g} must be a whole number >= 1")
        max_detections = int(number)
    return Options(score, max_detections)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool):
        raise RequestError(400, f"{name}={value} is not a number")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise RequestError(400, f"{name}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise RequestError(400, f"{name}={value!r} is not a finite number")
    return number


# ---- images -------------------------------------------------------------------------------


def use_own_pixel_limit() -> None:
    """Turn off Pillow's process-wide decompression-bomb check (a warning past 89 MP, an error
    without the size past twice that): `decode_image` checks `max_pixels` itself, from the
    header, and says how large the image was. Called once per worker."""
    Image.MAX_IMAGE_PIXELS = None


def decode_image(
    image: EncodedImage, max_pixels: int, min_size: tuple[int, int] | None = None
) -> DecodedImage:
    """Encoded bytes -> RGB uint8 pixels; 400 for what is not a whole image, 413 above
    `max_pixels`. `min_size` (height, width): a JPEG may be decoded at a reduced scale down to
    this size (the model's input), never below it.

    EXIF orientation is not applied: boxes are in the stored pixel frame, as Pillow's
    `Image.open` and the Raspberry Pi side (`edge`) give them.
    """
    where = image.where
    try:
        opened = Image.open(io.BytesIO(image.data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise RequestError(413, f"{where}: {_too_many_pixels(None, None, max_pixels)}") from None
    except Exception as error:  # any failure to parse untrusted bytes is bad input
        raise RequestError(400, f"{where}: {_not_an_image(image.data, error)}") from None
    with opened:
        width, height = opened.size
        if width * height > max_pixels:
            raise RequestError(413, f"{where}: {_too_many_pixels(width, height, max_pixels)}")
        image_format = opened.format or "unknown"
        try:
            if min_size is not None and image_format in ("JPEG", "MPO"):
                opened.draft("RGB", (min_size[1], min_size[0]))
            pixels = np.asarray(opened.convert("RGB"), dtype=np.uint8)
        except Exception as error:  # truncated or corrupt data inside a valid header
            raise RequestError(
                400,
                f"{where}: the {image_format} image is truncated or corrupt "
                f"({type(error).__name__}: {_one_line(error)}); send the whole file",
            ) from None
    return DecodedImage(pixels, width, height, image_format)


def _not_an_image(data: bytes, error: Exception) -> str:
    head = data[:8].hex(" ")
    return (
        f"not an image this server reads ({', '.join(IMAGE_FORMATS)}; first bytes {head}; "
        f"{type(error).__name__}); send the image file's bytes, or base64 in JSON"
    )


def _too_many_pixels(width: int | None, height: int | None, max_pixels: int) -> str:
    size = f"{width:,} x {height:,} pixels" if width is not None else "more pixels"
    return (
        f"image is {size}, above this endpoint's limit of {max_pixels:,} pixels "
        "(TFOD_SERVE_MAX_PIXELS); send a smaller image"
    )


def _one_line(error: Exception, limit: int = 160) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
