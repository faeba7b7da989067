"""Pictures in, model input out: decoding and validation of uploads, the preprocessing policy a model is
trained with, the preprocessing itself (the same function at training and serving time), thumbnails.

Every problem caused by the uploaded file is an `InvalidInput` that names the file and says what to do.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from PIL import ExifTags, Image, ImageOps

from pipelines.errors import InvalidInput

Color = Literal["gray", "rgb"]
Resize = Literal["stretch", "letterbox", "center_crop"]

IMAGE_SIZES = (28, 32, 48, 64, 96, 128, 160, 192, 224)
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_WIDE_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_EXIF_KEYS = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")
_SWAPPED_ORIENTATIONS = frozenset({5, 6, 7, 8})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_RESAMPLE = Image.Resampling.BILINEAR
_TINY_THUMBNAIL_SOURCE = 64  # sources this small are kept lossless: JPEG artefacts would dominate them
_FIX_IT = "Remove it or re-export it as PNG or JPEG."


@dataclass(frozen=True)
class ImageInfo:
    """What the importer needs to know about one accepted picture."""

    width: int  # after EXIF orientation
    height: int
    mode: str  # Pillow mode of the source
    format: str
    is_gray: bool


def inspect_image(data: bytes, name: str, *, max_pixels: int) -> ImageInfo:
    """Fully decode the first frame of `data` and describe it, or raise InvalidInput saying why not."""
    image = _decoded(_open(data, name, max_pixels=max_pixels), name)
    width, height = image.size
    if _orientation(image) in _SWAPPED_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(width, height, image.mode, image.format or "", image.mode in GRAY_MODES)


def decode_image(data: bytes, name: str, *, max_pixels: int, color: Color = "rgb") -> Image.Image:
    """Decode the first frame, upright (EXIF applied), as 8-bit "L" or "RGB" on a white background."""
    return to_color(_upright(_decoded(_open(data, name, max_pixels=max_pixels), name)), color)


def to_color(image: Image.Image, color: Color) -> Image.Image:
    """Turn any Pillow mode into 8-bit "L" or "RGB": 16-bit scaled, transparency composited on white."""
    if image.mode in _WIDE_MODES:
        image = _to_8bit(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, (255, 255, 255))
        image.paste(rgba, (0, 0), rgba)
    target = "L" if color == "gray" else "RGB"
    if image.mode == target:
        return image
    if image.mode not in ("L", "RGB", "1", "P"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV: Pillow converts those via RGB
    return image.convert(target)


@dataclass(frozen=True)
class PreprocessingPolicy:
    """How every picture of a model becomes its input: a square of `image_size` pixels."""

    image_size: int
    color: Color
    resize: Resize

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 1024:
            raise InvalidInput(
                f"The image size must be a whole number of pixels from 8 to 1024, not {self.image_size!r}."
            )
        if self.color not in get_args(Color):
            raise InvalidInput(f"The colour setting must be 'gray' or 'rgb', not {self.color!r}.")
        if self.resize not in get_args(Resize):
            raise InvalidInput(
                f"The resize setting must be 'stretch', 'letterbox' or 'center_crop', not {self.resize!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        return {"image_size": self.image_size, "color": self.color, "resize": self.resize}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PreprocessingPolicy:
        expected = {"image_size", "color", "resize"}
        if set(d) != expected:
            raise InvalidInput(f"A preprocessing policy needs exactly the keys {sorted(expected)}, got {sorted(d)}.")
        return cls(image_size=d["image_size"], color=d["color"], resize=d["resize"])


@dataclass(frozen=True)
class DatasetShape:
    """Summary of a dataset's accepted pictures: their upright sizes and how many have no colour."""

    widths: tuple[int, ...]
    heights: tuple[int, ...]
    gray_fraction: float

    @classmethod
    def from_infos(cls, infos: Iterable[tuple[int, int, bool]]) -> DatasetShape:
        rows = list(infos)
        gray = sum(1 for _, _, is_gray in rows if is_gray)
        return cls(
            widths=tuple(w for w, _, _ in rows),
            heights=tuple(h for _, h, _ in rows),
            gray_fraction=gray / len(rows) if rows else 0.0,
        )


def choose_policy(shape: DatasetShape) -> PreprocessingPolicy:
    """Choose the input size, colour and resize mode from the data; never refuses a dataset for its sizes.

    - size: the median shorter side, snapped to the nearest of IMAGE_SIZES (ties go to the smaller, cheaper
      one), so 28 stays 28, 30 becomes 28, anything from 208 up becomes 224 (the cap);
    - colour: gray when at least 95% of the pictures have no colour, else rgb;
    - resize, from the aspect ratios (width / height, compared on a log scale):
      stretch when 90% of them lie within 10% of one another (MNIST, CIFAR, any same-camera set): nothing
      is cut and the consistent squeeze is learned; center_crop when 90% are at most 16:10 either way (4:3
      and 3:2 photos), because cutting a thin margin costs less than shrinking the subject; letterbox
      otherwise (panoramas mixed with portraits), so that no picture loses a part that may hold its subject.
    """
    if not shape.widths:
        raise InvalidInput("There are no accepted pictures yet, so the input size cannot be chosen. Add pictures.")
    widths = np.asarray(shape.widths, dtype=np.float64)
    heights = np.asarray(shape.heights, dtype=np.float64)
    shorter = float(np.median(np.minimum(widths, heights)))
    image_size = min(IMAGE_SIZES, key=lambda size: (abs(size - shorter), size))
    color: Color = "gray" if shape.gray_fraction >= 0.95 else "rgb"
    log_aspect = np.log(widths / heights)
    low, high = np.percentile(log_aspect, [5, 95])
    resize: Resize
    if high - low <= np.log(1.1):
        resize = "stretch"
    elif np.percentile(np.abs(log_aspect), 90) <= np.log(1.6):
        resize = "center_crop"
    else:
        resize = "letterbox"
    return PreprocessingPolicy(image_size=image_size, color=color, resize=resize)


def preprocess(image: Image.Image, policy: PreprocessingPolicy) -> np.ndarray:
    """Turn a decoded picture into the model's uint8 input of shape (size, size, 1 or 3)."""
    image = to_color(image, policy.color)
    side = policy.image_size
    width, height = image.size
    if (width, height) == (side, side):
        square = image
    elif policy.resize == "stretch":
        square = image.resize((side, side), _RESAMPLE)
    elif policy.resize == "center_crop":
        crop = min(width, height)
        left, top = (width - crop) / 2, (height - crop) / 2
        square = image.resize((side, side), _RESAMPLE, box=(left, top, left + crop, top + crop))
    else:
        scale = side / max(width, height)
        inner_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        square = Image.new(image.mode, (side, side), 0)
        square.paste(image.resize(inner_size, _RESAMPLE), ((side - inner_size[0]) // 2, (side - inner_size[1]) // 2))
    array = np.array(square, dtype=np.uint8)  # a copy: callers may augment in place
    return array[:, :, None] if array.ndim == 2 else array


def load_for_model(data: bytes, name: str, policy: PreprocessingPolicy, *, max_pixels: int) -> np.ndarray:
    """Decode an upload and preprocess it by `policy`: the one path from bytes to model input."""
    return preprocess(decode_image(data, name, max_pixels=max_pixels, color=policy.color), policy)


def make_thumbnail(data: bytes, name: str, *, size: int, max_pixels: int) -> bytes:
    """A JPEG (PNG when the source is transparent or tiny) at most `size` x `size`, upright, aspect kept."""
    image = _open(data, name, max_pixels=max_pixels)
    lossless = max(image.size) <= _TINY_THUMBNAIL_SOURCE
    if image.format == "JPEG":
        image.draft(None, (size, size))  # decode at 1/2, 1/4 or 1/8 scale: a 12 MP photo in a few ms
    image = _upright(_decoded(image, name))
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        lossless = True  # JPEG has no transparency
        image = to_color(image, "rgb") if image.mode in _WIDE_MODES else image.convert("RGBA")
    else:
        image = to_color(image, "gray" if image.mode in GRAY_MODES else "rgb")
    image.thumbnail((size, size), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    if lossless:
        image.save(out, "PNG")
    else:
        image.save(out, "JPEG", quality=85)
    return out.getvalue()


def _open(data: bytes, name: str, *, max_pixels: int) -> Image.Image:
    """Read only the header; refuse what is empty, unreadable or too large before any pixel is allocated."""
    if not data:
        raise InvalidInput(f"'{name}' is empty (0 bytes). Remove it or copy the picture again.", field=name)
    if data.startswith(_PNG_SIGNATURE):
        _check_png(data, name, max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise _too_many_pixels(name, None, max_pixels) from None
    except Exception as error:  # noqa: BLE001 - Pillow's plugins raise many types on hostile bytes
        raise _unreadable(data, name) from error
    # Our max_pixels is the limit. Pillow's own check has already refused anything over twice
    # Image.MAX_IMAGE_PIXELS (above); between the two it only warns.
    width, height = image.size
    if width * height > max_pixels:
        raise _too_many_pixels(name, (width, height), max_pixels)
    if width == 0 or height == 0:
        raise InvalidInput(f"'{name}' has no pixels (it is {width}x{height}). {_FIX_IT}", field=name)
    return image


def _decoded(image: Image.Image, name: str) -> Image.Image:
    """Decode the first frame fully, so that truncated and corrupt files are caught here, not later."""
    try:
        image.load()
    except Exception as error:  # noqa: BLE001 - truncated or corrupt data surface as many types
        raise InvalidInput(
            f"'{name}' is a damaged or incomplete {image.format or 'picture'} file ({error}). "
            "Remove it or export it again.",
            field=name,
        ) from error
    return image


def _check_png(data: bytes, name: str, max_pixels: int) -> None:
    if len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack_from(">II", data, 16)
        if width * height > max_pixels:  # refused before Pillow sees it, with the size in the message
            raise _too_many_pixels(name, (width, height), max_pixels)
    # Pillow does not verify the checksums of pixel data (IDAT) while decoding; libpng and browsers refuse
    # a critical chunk with a bad CRC, so we do too. Ancillary chunks (lower-case first letter) are skipped.
    view = memoryview(data)
    position = len(_PNG_SIGNATURE)
    while position + 12 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > len(data):
            return  # truncated: decoding reports it with a better message
        if kind[0] < 0x61:  # upper-case first letter: a critical chunk
            (expected,) = struct.unpack_from(">I", data, end - 4)
            if zlib.crc32(view[position + 4 : end - 4]) != expected:
                chunk = kind.decode("ascii", "replace")
                raise InvalidInput(
                    f"'{name}' is a damaged PNG file (the checksum of its {chunk} block is wrong). "
                    "Remove it or export it again.",
                    field=name,
                )
        if kind == b"IEND":
            return
        position = end


def _orientation(image: Image.Image) -> int:
    if image.format != "TIFF" and not any(key in image.info for key in _EXIF_KEYS):
        return 1  # the fast path: most pictures carry no EXIF at all
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - broken EXIF is common; the pixels are still fine
        return 1


def _upright(image: Image.Image) -> Image.Image:
    if not 2 <= _orientation(image) <= 8:
        return image
    return ImageOps.exif_transpose(image)


def _to_8bit(image: Image.Image) -> Image.Image:
    # Pillow's own convert("L") clips 16-bit values at 255 (an all-white picture); scale the range instead.
    values = np.asarray(image)
    if image.mode == "F":
        values = values * 255.0 if values.size and float(values.max()) <= 1.0 else values
        scaled = np.clip(np.rint(values), 0, 255)
    elif image.mode == "I" and (values.size == 0 or int(values.max()) <= 255):
        scaled = np.clip(values, 0, 255)  # 32-bit mode holding 8-bit values
    else:
        scaled = (np.clip(values, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8))


def _too_many_pixels(name: str, size: tuple[int, int] | None, max_pixels: int) -> InvalidInput:
    if size is None:  # refused by Pillow's own guard, which does not say the size
        what = "declares more pixels than can be decoded safely (a decompression bomb?)"
    else:
        what = f"is {size[0]}x{size[1]} pixels, more than the limit of {max_pixels:,} pixels"
    return InvalidInput(
        f"'{name}' {what}. Shrink it (for example to 2000 pixels on its longest side) and add it again.",
        field=name,
    )


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF8", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _unreadable(data: bytes, name: str) -> InvalidInput:
    head = data[:512]
    lowered = head.lstrip().lower()
    image_kind = next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)
    if head.startswith(_PNG_SIGNATURE):
        image_kind = "PNG"
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        image_kind = "WebP"
    elif head.startswith(b"BM") and head[6:10] == bytes(4):  # reserved zeros: not just text starting "BM"
        image_kind = "BMP"
    if image_kind:
        return InvalidInput(
            f"'{name}' is a damaged or incomplete {image_kind} file. Remove it or export it again.",
            field=name,
        )
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"):
        return InvalidInput(
            f"'{name}' is a HEIC photo (the iPhone format), which cannot be read. "
            "Export it as JPEG (on an iPhone: Settings > Camera > Formats > Most Compatible).",
            field=name,
        )
    return InvalidInput(
        f"'{name}' is not a picture Pillow can read (it is {_what_it_is(head, lowered)}). {_FIX_IT}",
        field=name,
    )


def _what_it_is(head: bytes, lowered: bytes) -> str:
    if head.startswith(b"%PDF"):
        return "a PDF document"
    if b"<svg" in lowered:
        return "an SVG drawing, made of shapes rather than pixels"
    if lowered.startswith((b"<!doctype html", b"<html")):
        return "a web page"
    if lowered.startswith(b"<?xml"):
        return "an XML file"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive or an office document"
    text = head.decode("utf-8", "replace")  # "replace": the 512-byte cut may split a character
    printable = sum(1 for char in text if char.isprintable() or char in "\r\n\t")
    return "a text file" if printable >= 0.95 * len(text) else "a file in a format that is not a picture"
