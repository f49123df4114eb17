"""Image bytes -> bytes TensorFlow decodes as the annotator saw them, plus the true size.

JPEG and PNG bytes are kept as they are (TensorFlow decodes greyscale JPEG and any PNG to
RGB). They are decoded and re-encoded only when they must change:
  - JPEG with an EXIF orientation other than 1, when the boxes are in the rotated (displayed)
    frame: TensorFlow ignores EXIF, so the pixels are rotated here (JPEG quality 95);
  - CMYK/YCCK JPEG (TensorFlow cannot decode it): converted to RGB JPEG;
  - any other format (BMP, GIF, TIFF, WebP): converted to lossless PNG.
Headers are parsed directly (no decode) on the fast path.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from sagemaker_tfod.data_prep.errors import SKIP_HINT, DataPrepError

JPEG_QUALITY = 95
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Orientations 5-8 swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: format, stored pixel size, colour components, EXIF orientation."""

    image_format: str  # "jpeg", "png" or "other"
    width: int
    height: int
    components: int
    orientation: int

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(width, height) as a viewer shows it, i.e. after the EXIF orientation."""
        if self.orientation in _SWAPS_AXES:
            return self.height, self.width
        return self.width, self.height


@dataclass(frozen=True)
class PreparedImage:
    encoded: bytes
    image_format: str
    width: int
    height: int
    change: str  # "" when the original bytes are kept, else what was done and why


def _exif_orientation(segment: bytes) -> int:
    """Orientation tag (0x0112) from an APP1 Exif payload; 1 when absent or unreadable."""
    if not segment.startswith(b"Exif\x00\x00"):
        return 1
    tiff = segment[6:]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "<" if tiff[:2] == b"II" else ">"
    (ifd_offset,) = struct.unpack_from(order + "I", tiff, 4)
    if ifd_offset + 2 > len(tiff):
        return 1
    (count,) = struct.unpack_from(order + "H", tiff, ifd_offset)
    for entry in range(count):
        start = ifd_offset + 2 + entry * 12
        if start + 12 > len(tiff):
            break
        tag, _kind, _n = struct.unpack_from(order + "HHI", tiff, start)
        if tag == 0x0112:
            (value,) = struct.unpack_from(order + "H", tiff, start + 8)
            return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_header(data: bytes) -> ImageHeader | None:
    position, orientation = 2, 1
    size = len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01,) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        segment = data[position + 4 : position + 2 + length]
        if marker == 0xE1 and orientation == 1:
            orientation = _exif_orientation(segment)
        elif marker in _SOF_MARKERS and len(segment) >= 6:
            height, width = struct.unpack_from(">HH", segment, 1)
            return ImageHeader("jpeg", width, height, segment[5], orientation)
        elif marker == 0xDA:
            return None
        position += 2 + length
    return None


def read_header(data: bytes) -> ImageHeader | None:
    """Header of JPEG or PNG bytes without decoding; None for other or broken headers."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_header(data)
    if data[:8] == _PNG_SIGNATURE and len(data) >= 26 and data[12:16] == b"IHDR":
        width, height = struct.unpack_from(">II", data, 16)
        return ImageHeader("png", width, height, 3, 1)
    return None


def _looks_complete(data: bytes, image_format: str) -> bool:
    tail = data[-64:].rstrip(b"\x00")
    if image_format == "jpeg":
        return tail.endswith(b"\xff\xd9")
    return b"IEND" in tail


def _decode(data: bytes, name: str):
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # Pillow raises many types for broken files
        raise DataPrepError(
            f"{name}: unreadable or truncated image ({error}); re-export the image or "
            f"remove it and its annotation{SKIP_HINT}"
        ) from None
    return image


def _encode(image, image_format: str) -> bytes:
    out = io.BytesIO()
    if image_format == "jpeg":
        image.save(out, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(out, format="PNG")
    return out.getvalue()


def _apply_orientation(image, rotate_exif: bool, changes: list[str]):
    """`image` turned to its EXIF orientation when asked (noted in `changes`)."""
    from PIL import ImageOps

    orientation = image.getexif().get(0x0112, 1)
    if not rotate_exif or orientation == 1:
        return image
    changes.append(f"EXIF orientation {orientation} applied to the pixels")
    return ImageOps.exif_transpose(image)


def prepare_image(
    data: bytes, name: str, rotate_exif: bool = True, header: ImageHeader | None = None
) -> PreparedImage:
    """Bytes to store for image `name` (used in messages); see the module doc for when
    pixels change. `rotate_exif=False` keeps the stored frame (boxes drawn on raw pixels);
    `header` is the result of `read_header(data)` when the caller has it already."""
    header = header or read_header(data)
    if header is not None and _looks_complete(data, header.image_format):
        needs_rotation = rotate_exif and header.orientation != 1
        if header.image_format == "png" or (header.components in (1, 3) and not needs_rotation):
            return PreparedImage(data, header.image_format, header.width, header.height, "")
    image = _decode(data, name)
    changes = []
    if image.format == "JPEG":
        target = "jpeg"
        image = _apply_orientation(image, rotate_exif, changes)
        if image.mode not in ("RGB", "L"):
            changes.append(f"{image.mode} converted to RGB")
            image = image.convert("RGB")
        if not changes:  # complete enough for Pillow although the tail looked odd
            return PreparedImage(data, "jpeg", image.width, image.height, "")
    elif image.format == "PNG":
        return PreparedImage(data, "png", image.width, image.height, "")
    else:
        target = "png"
        source_format = image.format
        image = _apply_orientation(image, rotate_exif, changes)  # TIFF and WebP carry EXIF too
        changes.append(f"{source_format} converted to PNG")
        if image.mode not in ("RGB", "L", "RGBA", "LA"):
            image = image.convert("RGB")
    return PreparedImage(
        _encode(image, target), target, image.width, image.height, "; ".join(changes)
    )
