"""Plain factory functions for tests: pictures made with Pillow, dataset zips, hostile zip entries."""

from __future__ import annotations

import io
import itertools
import stat
import struct
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp", "TIFF": "tif"}


def make_image(
    color: tuple[int, ...] = (200, 30, 30),
    size: tuple[int, int] = (32, 32),
    fmt: str = "PNG",
    mode: str = "RGB",
    *,
    mark: int | None = None,
    **save_kwargs,
) -> bytes:
    """A solid picture encoded by Pillow. `mark` writes a number into the top-left pixels, so that pictures
    made with different marks differ (in pixels and sha256) while looking the same.

    `mode` may be any Pillow mode, including "I;16", "I" and "F" (scaled from 8-bit, so 16-bit values span
    the full range). A 4-tuple `color` with mode="RGBA" (or "LA") keeps its alpha. `save_kwargs` go to
    `Image.save` (exif=..., quality=...).
    """
    image = Image.new("RGBA" if len(color) == 4 else "RGB", size, color)
    if mark is not None:
        pixels = [(mark >> shift) & 0xFF for shift in (0, 8, 16)]
        image.putpixel((0, 0), (*pixels, 255)[: len(image.mode)])
        image.putpixel((min(1, size[0] - 1), 0), (255 - pixels[0], 255 - pixels[1], 0, 255)[: len(image.mode)])
    buffer = io.BytesIO()
    _convert(image, mode).save(buffer, fmt, **save_kwargs)
    return buffer.getvalue()


def _convert(image: Image.Image, mode: str) -> Image.Image:
    if mode == image.mode:
        return image
    gray = np.asarray(image.convert("L"))
    if mode.startswith("I;16"):
        return Image.fromarray(gray.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(gray.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(gray.astype(np.float32) / 255.0)
    if mode == "P":
        return image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    return image.convert(mode)


def make_gradient(size: tuple[int, int] = (32, 32), fmt: str = "PNG", mode: str = "RGB", **save_kwargs) -> bytes:
    """A picture whose pixels all differ: red grows left to right, green top to bottom."""
    width, height = size
    red = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    green = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    rgb = np.stack([red, green, np.full_like(red, 60)], axis=-1).round().astype(np.uint8)
    buffer = io.BytesIO()
    _convert(Image.fromarray(rgb), mode).save(buffer, fmt, **save_kwargs)
    return buffer.getvalue()


def make_noise(size: tuple[int, int] = (64, 64), fmt: str = "PNG", *, seed: int = 0, **save_kwargs) -> bytes:
    """Random RGB pixels: they barely compress, so cutting the bytes short truncates pixel data."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **save_kwargs)
    return buffer.getvalue()


def make_animation(
    colors: tuple[tuple[int, int, int], ...] = ((255, 0, 0), (0, 255, 0)),
    size: tuple[int, int] = (20, 10),
    fmt: str = "GIF",
) -> bytes:
    """An animated GIF or WebP with one solid frame per colour."""
    frames = [Image.new("RGB", size, color) for color in colors]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def exif_orientation(orientation: int) -> bytes:
    """EXIF bytes holding only an orientation tag, for `make_image(..., fmt="JPEG", exif=...)`."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def make_declared_png(width: int, height: int, *, mode_byte: int = 0) -> bytes:
    """A valid-looking PNG header declaring `width` x `height` with almost no pixel data: a decompression bomb
    shape that costs nothing to build. `mode_byte` is the PNG colour type (0 gray, 2 RGB)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, mode_byte, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


class _RawNameInfo(zipfile.ZipInfo):
    """A ZipInfo written with exactly these name bytes and no UTF-8 flag (old Windows and DOS tools)."""

    __slots__ = ("raw_name",)

    def _encodeFilenameFlags(self):  # overrides zipfile's private hook
        return self.raw_name, self.flag_bits & ~0x800


def zip_info(
    name: str = "",
    *,
    raw_name: bytes | None = None,
    symlink: bool = False,
    directory: bool = False,
    compress_type: int = zipfile.ZIP_DEFLATED,
) -> zipfile.ZipInfo:
    """A ZipInfo for hostile or unusual entries: raw (non-UTF-8) name bytes, a symlink, a directory."""
    if raw_name is not None:
        info: zipfile.ZipInfo = _RawNameInfo(raw_name.decode("cp437"))
        info.raw_name = raw_name
    else:
        info = zipfile.ZipInfo(name)
    info.compress_type = compress_type
    info.create_system = 3  # unix, so that the mode bits below mean what they say
    if symlink:
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
    elif directory:
        info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
    else:
        info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


Layout = Mapping[str, "int | Layout"]


def make_zip(
    path: Path,
    layout: Layout,
    *,
    extra: Mapping[str | zipfile.ZipInfo, bytes] | None = None,
    fmt: str = "PNG",
    size: tuple[int, int] = (8, 8),
    compression: int = zipfile.ZIP_DEFLATED,
    directories: bool = False,
) -> Path:
    """Write a dataset zip and return its path (`path` itself, or `path/dataset.zip` when it is a folder).

    `layout` maps folder names to a number of pictures or to a nested layout:
    `{"cat": 3, "dog": 3}` gives class folders, `{"train": {"cat": 3}, "test": {"cat": 1}}` the split layout,
    `{"flowers": {"daisy": 2}}` a wrapping folder. Every picture is distinct (its sha256 differs).
    `extra` adds arbitrary entries (name or ZipInfo -> bytes) after the pictures, for hostile cases;
    `directories` also writes the folder entries ("cat/") that many zip tools add.
    """
    target = path / "dataset.zip" if path.is_dir() else path
    counter = itertools.count()
    with zipfile.ZipFile(target, "w", compression=compression) as archive:
        _write_layout(archive, "", layout, counter, fmt, size, directories)
        for name, data in (extra or {}).items():
            archive.writestr(name, data)
    return target


def _write_layout(
    archive: zipfile.ZipFile,
    prefix: str,
    layout: Layout,
    counter: itertools.count,
    fmt: str,
    size: tuple[int, int],
    directories: bool,
) -> None:
    for folder, content in layout.items():
        if directories:
            archive.writestr(zip_info(f"{prefix}{folder}/", directory=True), b"")
        if isinstance(content, int):
            for _ in range(content):
                number = next(counter)
                color = (number * 37 % 256, number * 91 % 256, number * 53 % 256)
                data = make_image(color, size, fmt, mark=number)
                archive.writestr(f"{prefix}{folder}/{number}.{EXTENSIONS.get(fmt, fmt.lower())}", data)
        else:
            _write_layout(archive, f"{prefix}{folder}/", content, counter, fmt, size, directories)


def stripes_zip(per_class: int = 20, size: int = 16) -> bytes:
    """Two classes a small CNN separates in a couple of epochs: horizontal vs vertical stripes, noisy."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for label, axis in (("horizontal", 0), ("vertical", 1)):
            for i in range(per_class):
                stripes = (np.indices((size, size))[axis] // 2 % 2) * 200
                noisy = np.clip(stripes + rng.integers(0, 55, (size, size)), 0, 255).astype(np.uint8)
                data = io.BytesIO()
                Image.fromarray(noisy).convert("RGB").save(data, "PNG")
                archive.writestr(f"{label}/{i}.png", data.getvalue())
    return buffer.getvalue()


def catalog_with_pictures(*users_names: str, classes: tuple[str, ...] = ("cat", "dog"), per_class: int = 10):
    """An in-process catalog (`LocalCatalog`) with the users named (default "alice") and a model of the first one
    holding `per_class` catalogued pictures per class (their bytes are nowhere: for catalog-only tests).
    Returns (catalog, [user ids], model id)."""
    from cluster.blobs import BlobRef
    from cluster.catalog import images, models, users
    from cluster.catalog.client import LocalCatalog
    from cluster.catalog.images import NewImage

    catalog = LocalCatalog()
    ids = [catalog.call_sync(users.create_user, name, "hash").id for name in users_names or ("alice",)]
    model_id = catalog.call_sync(models.create_model, ids[0], models.ModelSpec("pets")).id
    offered = [
        NewImage(label, f"{label}/{i}.png", 10, sha256=f"{label}-{i}".ljust(64, "0"), ref=BlobRef("packs/p", i, 10))
        for label in classes
        for i in range(per_class)
    ]
    catalog.call_sync(images.add_images, ids[0], model_id, offered, quota_bytes=10**9)
    return catalog, ids, model_id
