"""Image bytes -> bytes TensorFlow decodes as the annotator saw them, plus the true size.

JPEG and PNG bytes are kept as they are (TensorFlow decodes greyscale JPEG and any PNG to
RGB). They are decoded and re-encoded only when they must change:
  - JPEG with an EXIF orientation other than 1, when the boxes are in the rotated (displayed)
    frame: TensorFlow ignores EXIF, so the pixels are rotated here (JPEG quality 95);
  - CMYK/YCCK JPEG (TensorFlow cannot decode it): converted to RGB JPEG;
  - any other format (BMP, GIF, TIFF, WebP): converted to lossless PNG;
  - JPEG coded in a way TensorFlow's decoder lacks (lossless, hierarchical, 12-bit):
    converted to baseline JPEG.
Headers are parsed directly (no decode) on the fast path, and what is kept is checked
cheaply to be decodable by TensorFlow: the JPEG coding and precision from the frame header,
and every critical PNG chunk's checksum (TensorFlow refuses a PNG whose IDAT checksum is
wrong, while Pillow loads it). Images above a pixel limit are refused from the header
alone (`probe_image_file`), before anything is decoded or written: a 1 KB PNG can declare
50,000 x 50,000 pixels, which would need 7.5 GB to decode.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from sagemaker_tfod.data_prep.errors import SKIP_HINT, DataPrepError

JPEG_QUALITY = 95
# Images with more pixels than this are refused (`--max-megapixels`). Generous for real
# photos (the largest phone sensors give 200 megapixels; 24-bit RGB of that is 600 MB,
# which TensorFlow holds per image while it decodes and resizes); far below a
# decompression bomb's gigapixels.
DEFAULT_MAX_MEGAPIXELS = 200.0
# Bytes read from the start of a file to find its size (a JPEG's frame header normally
# follows EXIF and colour profiles within this; otherwise the whole file is read).
_HEADER_PREFIX_BYTES = 64 << 10
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Frame types TensorFlow's libjpeg-turbo decodes: baseline, extended and progressive, with
# Huffman or arithmetic coding (measured: TF 2.20 decodes an arithmetic-coded file). Not
# lossless (0xC3, 0xC7, 0xCB, 0xCF) or hierarchical (0xC5-0xC7, 0xCD-0xCF) JPEG.
_TF_JPEG_FRAMES = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}
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
    frame_marker: int = 0xC0  # JPEG: the SOFn marker (coding); 0 for other formats
    precision: int = 8  # JPEG: bits per sample

    @property
    def pixels(self) -> int:
        return self.width * self.height

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
            return ImageHeader(
                "jpeg", width, height, segment[5], orientation, marker, precision=segment[0]
            )
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
        return ImageHeader("png", width, height, 3, 1, frame_marker=0)
    return None


@dataclass(frozen=True)
class ImageProbe:
    """What a file's header says, read without decoding: its size on disk and in pixels."""

    file_bytes: int
    width: int
    height: int


def max_pixels_of(megapixels: float) -> int:
    return int(megapixels * 1_000_000)


def _too_many_pixels(name: str, width: int, height: int, max_pixels: int) -> DataPrepError:
    return DataPrepError(
        f"{name}: {width}x{height} pixels ({width * height / 1e6:,.0f} megapixels) is above "
        f"the {max_pixels / 1e6:g}-megapixel limit (a decompression bomb, or a photo too large "
        f"to train on); resize it, or raise --max-megapixels{SKIP_HINT}"
    )


@contextlib.contextmanager
def _own_pixel_limit() -> Iterator[None]:
    """Pillow's decompression-bomb check off: the caller applies its own (documented) limit,
    which must not be cut to Pillow's 89-megapixel warning or 179-megapixel error."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def probe_image_file(path: str, max_pixels: int) -> ImageProbe:
    """Size on disk and in pixels of the image at `path`, from its header only;
    DataPrepError naming the file when it cannot be read or has more than `max_pixels`."""
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(_HEADER_PREFIX_BYTES)
            file_bytes = os.fstat(handle.fileno()).st_size
            header = read_header(prefix) if prefix else None
            if header is None and prefix[:2] == b"\xff\xd8" and file_bytes > len(prefix):
                handle.seek(0)
                header = read_header(handle.read())  # frame header beyond the prefix
    except OSError as error:
        raise DataPrepError(
            f"{path}: cannot read the image ({error.strerror}); add it or remove its "
            f"annotation{SKIP_HINT}"
        ) from None
    if not prefix:
        raise DataPrepError(f"{path}: empty file; re-export it or remove it{SKIP_HINT}")
    if header is not None and header.pixels > 0:
        width, height = header.width, header.height
    else:
        width, height = _pillow_size(path)
    if width * height > max_pixels:
        raise _too_many_pixels(path, width, height, max_pixels)
    return ImageProbe(file_bytes, width, height)


def _pillow_size(path: str) -> tuple[int, int]:
    """(width, height) of a BMP, GIF, TIFF, WebP... from Pillow's header parser (no decode)."""
    from PIL import Image

    try:
        with _own_pixel_limit(), Image.open(path) as image:
            return image.size
    except Exception as error:  # Pillow raises many types for broken files
        raise DataPrepError(
            f"{path}: unreadable or truncated image ({error}); re-export the image or "
            f"remove it and its annotation{SKIP_HINT}"
        ) from None


def png_damage(data: bytes) -> str:
    """Why TensorFlow would refuse these PNG bytes ("" if it would not): a critical chunk
    (IHDR, PLTE, IDAT, IEND) whose CRC does not match, a cut-off chunk, or no image data.
    Costs one CRC pass over the file (no inflate, no pixels). Ancillary chunks with a bad CRC
    are ignored, as libpng ignores them."""
    position, seen_idat = len(_PNG_SIGNATURE), False
    while position + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, position)
        kind = data[position + 4 : position + 8]
        end = position + 12 + length
        if end > len(data):
            return f"chunk {kind.decode('latin-1')!r} at byte {position} is cut off"
        critical = kind[:1].isupper()
        if critical:
            (stored,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(data[position + 4 : end - 4]) != stored:
                return (
                    f"the checksum of chunk {kind.decode('latin-1')!r} at byte {position} "
                    "does not match (the file is damaged)"
                )
        seen_idat = seen_idat or kind == b"IDAT"
        if kind == b"IEND":
            return "" if seen_idat else "no image data (IDAT chunk)"
        position = end
    return "no IEND chunk (the file is cut off)"


def _looks_complete(data: bytes, image_format: str) -> bool:
    tail = data[-64:].rstrip(b"\x00")
    if image_format == "jpeg":
        return tail.endswith(b"\xff\xd9")
    return b"IEND" in tail


def _decode(data: bytes, name: str):
    from PIL import Image

    try:
        with _own_pixel_limit():  # the size was checked against our limit before
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
    if data[:8] == _PNG_SIGNATURE:
        damage = png_damage(data)
        if damage:
            raise DataPrepError(
                f"{name}: unreadable PNG: {damage}; re-export the image or remove it and its "
                f"annotation{SKIP_HINT}"
            )
    tf_coding = header is not None and (
        header.image_format == "png"
        or (header.frame_marker in _TF_JPEG_FRAMES and header.precision == 8)
    )
    if header is not None and tf_coding and _looks_complete(data, header.image_format):
        needs_rotation = rotate_exif and header.orientation != 1
        if header.image_format == "png" or (header.components in (1, 3) and not needs_rotation):
            return PreparedImage(data, header.image_format, header.width, header.height, "")
    image = _decode(data, name)
    changes = []
    if image.format == "JPEG":
        target = "jpeg"
        if header is not None and not tf_coding:
            changes.append(
                f"JPEG frame type {header.frame_marker:#04x} ({header.precision}-bit), which "
                "TensorFlow cannot decode, converted to baseline JPEG"
            )
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
