"""Hostile and unusual inputs, made by the tests (no binaries in the repository): broken and exotic pictures,
and zips that try to escape, explode or confuse. Each factory is cheap; the 100,000-entry zip is written as
raw bytes in a fraction of a second.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Mapping

from tests.factories import exif_orientation, make_animation, make_declared_png, make_image, make_noise, zip_info

SVG = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="30000" height="30000">'
    b'<circle cx="50" cy="50" r="40" fill="red"/></svg>\n'
)
TEXT = b"shopping list\n- milk\n- bread\n"


def truncated_jpeg() -> bytes:
    """A photo cut off after 2,000 bytes, as an interrupted download leaves it."""
    return make_noise(fmt="JPEG")[:2000]


def png_with_bad_crc(chunk: bytes = b"IDAT") -> bytes:
    """A PNG whose `chunk` checksum is wrong (one flipped bit on a disk or in a transfer)."""
    data = bytearray(make_noise(fmt="PNG"))
    position = data.index(chunk) - 4
    (length,) = struct.unpack_from(">I", data, position)
    crc_at = position + 8 + length
    data[crc_at] ^= 0xFF
    return bytes(data)


def declared_jpeg(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header claims `width` x `height`: a bomb that costs nothing to send."""
    data = bytearray(make_image(size=(8, 8), fmt="JPEG"))
    for marker in (b"\xff\xc0", b"\xff\xc2"):  # baseline or progressive frame header
        position = data.find(marker)
        if position >= 0:
            struct.pack_into(">HH", data, position + 5, height, width)
            return bytes(data)
    raise AssertionError("Pillow wrote a JPEG without a frame header")


def exif_rotated_jpeg() -> bytes:
    """A 40x20 photo whose EXIF says 'rotate 90°': upright it is 20x40."""
    return make_image((30, 160, 30), (40, 20), "JPEG", exif=exif_orientation(6))


# Pictures a user may upload: name -> (bytes, accepted?, words the reject reason must contain).
PICTURES: dict[str, tuple[bytes, bool, str]] = {
    "truncated.jpg": (truncated_jpeg(), False, "damaged or incomplete JPEG"),
    "bad-crc.png": (png_with_bad_crc(), False, "checksum of its IDAT"),
    "empty.jpg": (b"", False, "is empty (0 bytes)"),
    "notes.jpg": (TEXT, False, "it is a text file"),
    "drawing.svg": (SVG, False, "an SVG drawing"),
    "bomb.png": (make_declared_png(30_000, 30_000), False, "30000x30000 pixels, more than the limit"),
    # Over twice Pillow's own limit: refused by its guard before our size check, without the size.
    "bomb.jpg": (declared_jpeg(30_000, 30_000), False, "declares more pixels than can be decoded safely"),
    "animated.gif": (make_animation(size=(20, 10)), True, ""),
    "deep.tif": (make_image((200, 30, 30), (12, 10), "TIFF", mode="I;16", mark=41), True, ""),
    "cmyk.jpg": (make_image((200, 30, 30), (14, 10), "JPEG", mode="CMYK"), True, ""),
    "rotated.jpg": (exif_rotated_jpeg(), True, ""),
}
# What an accepted exotic picture is recorded as: (format, width, height) upright.
ACCEPTED_AS = {
    "animated.gif": ("GIF", 20, 10),
    "deep.tif": ("TIFF", 12, 10),
    "cmyk.jpg": ("JPEG", 14, 10),
    "rotated.jpg": ("JPEG", 20, 40),
}


def nested_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("cat/inner.png", make_image(mark=77))
    return buffer.getvalue()


def zip_of(entries: Mapping[str | zipfile.ZipInfo, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip holding exactly these entries, in order (names or ZipInfo for symlinks, raw names, folders)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_bomb(size: int = 64 * 2**20, files: int = 1) -> bytes:
    """`files` entries of `size` zero bytes each, deflated: over 1000 times smaller than it unpacks."""
    chunk = bytes(size)
    return zip_of({f"cat/{n}.bmp": chunk for n in range(files)})


def many_entries_zip(count: int, *, classes: int = 10) -> bytes:
    """A zip of `count` one-byte stored entries in `classes` folders, written as raw bytes (zipfile needs
    seconds for 100,000 entries on a busy machine; this takes a fraction of one)."""
    data, crc = b"x", zlib.crc32(b"x")
    local, central = bytearray(), bytearray()
    for number in range(count):
        name = f"c{number % classes}/{number}.png".encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, crc, 1, 1, len(name), 0) + name + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0, crc, 1, 1, len(name), 0, 0, 0, 0, 0, offset
        )
        central += name
    if count > 0xFFFF:
        return bytes(local + central + _zip64_end(count, len(central), len(local)))
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), len(local), 0)
    return bytes(local + central + end)


def _zip64_end(count: int, central_size: int, central_offset: int) -> bytes:
    record_offset = central_offset + central_size
    record = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, central_size, central_offset)
    locator = struct.pack("<IIQI", 0x07064B50, 0, record_offset, 1)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    return record + locator + end


def raw_name(name: bytes) -> zipfile.ZipInfo:
    """An entry whose name is these bytes, without the UTF-8 flag (old Windows and DOS tools)."""
    return zip_info(raw_name=name)


def symlink(name: str) -> zipfile.ZipInfo:
    return zip_info(name, symlink=True)


def folder(name: str) -> zipfile.ZipInfo:
    return zip_info(name, directory=True)
