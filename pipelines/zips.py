"""Safe reading of uploaded dataset zips: which files are which class, which are refused and why.

Nothing is extracted to disk. Planning reads only the central directory; `read_entry` streams one entry
with a hard cap. Pictures are not decoded here (the importer does that, in parallel).
"""

from __future__ import annotations

import os
import random
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO, Literal

from pipelines.errors import InvalidInput

Split = Literal["train", "test"]

TRAIN_FOLDERS = frozenset({"train", "training"})
TEST_FOLDERS = frozenset({"test", "testing", "val", "valid", "validation"})
JUNK_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})  # plus every name starting with "."
JUNK_FOLDERS = frozenset({"__macosx", "@eadir"})  # plus every name starting with "."
_JUNK_FILE_ENDINGS = tuple(JUNK_FILES)
ARCHIVE_SUFFIXES = (".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar", ".zst")
MAX_CLASS_NAME = 100
MAX_WRAPPERS = 2  # "flowers/daisy/1.jpg", and the doubled "flowers/flowers/daisy/1.jpg" of some zip tools
_READABLE_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_UTF8_FLAG = 0x800
_FILE_TYPE_BITS = 0o170000
_ENCRYPTED_FLAG = 0x1
_CHUNK = 2**20
_LAYOUTS_HELP = (
    "Put the pictures in one folder per class (cat/1.jpg, dog/2.jpg, ...), or in train/ and test/ folders "
    "that each hold one folder per class (train/cat/1.jpg, test/cat/9.jpg, ...), then zip that."
)


@dataclass(frozen=True)
class ZipLimits:
    """What an upload may declare before it is refused; sizes in bytes of unpacked data."""

    max_entries: int = 200_000
    max_total_uncompressed: int = 20 * 2**30
    max_entry_uncompressed: int = 100 * 2**20
    max_ratio: float = 200.0  # per entry and overall: uncompressed / compressed
    # Below this unpacked size a high ratio is harmless (a blank BMP compresses 1000:1), so it is not checked.
    ratio_floor: int = 2**20


@dataclass(frozen=True, slots=True)  # slots: 70,000 of them are made per MNIST-sized plan
class ZipEntry:
    name: str  # path as stored in the zip (re-decoded as UTF-8 when a tool forgot to say it was)
    index: int  # position in ZipFile.infolist()
    label: str  # the cleaned class folder name
    split: Split | None
    size: int  # declared unpacked size in bytes
    # Where the entry lies, so a worker can read it without parsing the whole directory again
    # (ZipFile() over 70,000 entries costs ~0.6 s; a batch of 2,500 entries decodes in about as long).
    offset: int = -1  # of the local file header
    compressed_size: int = 0
    method: int = zipfile.ZIP_STORED
    crc: int = 0


@dataclass(frozen=True, slots=True)  # slots: 70,000 of them are made per MNIST-sized plan
class ZipReject:
    name: str
    reason: str  # a plain-language sentence


@dataclass(frozen=True)
class ZipPlan:
    layout: Literal["train_test", "class_folders"]
    entries: tuple[ZipEntry, ...]
    rejects: tuple[ZipReject, ...]
    empty_classes: tuple[str, ...]  # class folders without any candidate picture
    ignored: int  # operating-system junk skipped silently


@dataclass
class _Scan:
    candidates: list[tuple[int, str, list[str], int]]  # index, name, path parts, size
    rejects: list[ZipReject]
    folders: set[tuple[str, ...]]  # every folder seen (as path parts), to find empty classes
    ignored: int


def plan_zip(path: str | os.PathLike[str], limits: ZipLimits = ZipLimits()) -> ZipPlan:
    """Read the zip's directory and decide, for every file, its class and split or why it is refused.

    Layouts: `train/` and `test/` folders (also training/testing, val/validation count as test, any case)
    that each hold class folders; otherwise the top-level folders are the classes. Up to MAX_WRAPPERS
    single wrapping folders are looked through. Only files directly inside a class folder are used: a file
    in a sub-folder of a class (`cat/kittens/1.jpg`) is refused with a reason, because guessing whether
    `kittens` is a class of its own would silently mislabel pictures.
    """
    archive = os.path.basename(os.fspath(path))
    with open(path, "rb") as file:
        declared = _declared_entry_count(file)
        if declared is not None and declared > limits.max_entries:
            raise _too_many_entries(archive, declared, limits)
        try:
            with zipfile.ZipFile(file) as archive_file:
                infos = archive_file.infolist()
        except Exception as error:  # noqa: BLE001 - a hostile directory raises many exception types
            raise InvalidInput(
                f"'{archive}' is not a zip file, or it is damaged ({error}). Zip the folder again and upload "
                "the new file.",
                field=archive,
            ) from error
    _check_archive(archive, infos, limits)
    scan = _scan(infos, limits)
    layout, prefix = _detect_layout([parts for _, _, parts, _ in scan.candidates])
    entries, rejects, invalid = _assign(scan, layout, prefix, infos)
    classes = _folder_classes(scan.folders, layout, prefix)
    if not classes:
        raise InvalidInput(f"'{archive}' has no class folders. {_LAYOUTS_HELP}", field=archive)
    labelled = {entry.label for entry in entries}
    valid = {_clean(raw) for raw in classes if raw not in invalid and _class_name_problem(raw) is None}
    empty = sorted(valid - labelled)
    return ZipPlan(layout, tuple(entries), tuple(scan.rejects + rejects), tuple(empty), scan.ignored)


def list_pictures(path: str | os.PathLike[str], limits: ZipLimits = ZipLimits()) -> ZipPlan:
    """Every file of a zip to classify, in any folder (no classes): the same archive and per-entry checks as
    `plan_zip` (entry count, sizes, ratios, zip-slip, links, nested archives, encryption), each refusal with
    its reason; entries come in the zip's order with an empty label."""
    archive = os.path.basename(os.fspath(path))
    with open(path, "rb") as file:
        declared = _declared_entry_count(file)
        if declared is not None and declared > limits.max_entries:
            raise _too_many_entries(archive, declared, limits)
        try:
            with zipfile.ZipFile(file) as archive_file:
                infos = archive_file.infolist()
        except Exception as error:  # noqa: BLE001 - a hostile directory raises many exception types
            raise InvalidInput(f"'{archive}' is not a zip file, or it is damaged ({error}).", field=archive) from error
    _check_archive(archive, infos, limits)
    scan = _scan(infos, limits)
    entries = [
        ZipEntry(name, index, "", None, size, infos[index].header_offset, infos[index].compress_size,
                 infos[index].compress_type, infos[index].CRC)
        for index, name, _, size in scan.candidates
    ]  # fmt: skip
    return ZipPlan("class_folders", tuple(entries), tuple(scan.rejects), (), scan.ignored)


def read_entry(zf: zipfile.ZipFile, entry: ZipEntry, limits: ZipLimits) -> bytes:
    """Unpack one planned entry into memory, never more than `limits.max_entry_uncompressed` bytes."""
    infos = zf.infolist()
    if not 0 <= entry.index < len(infos) or _display_name(infos[entry.index]) != entry.name:
        raise ValueError(f"{entry.name!r} is not entry {entry.index} of this zip; plan and zip do not match")
    cap = limits.max_entry_uncompressed
    chunks: list[bytes] = []
    total = 0
    try:
        with zf.open(infos[entry.index]) as stream:
            # zipfile stops at the declared size and then checks the CRC, so a lying header fails loudly.
            while chunk := stream.read(min(_CHUNK, cap + 1 - total)):
                total += len(chunk)
                if total > cap:
                    raise InvalidInput(
                        f"'{entry.name}' unpacks to more than {_mb(cap)}, the limit for one file. "
                        "Shrink the picture or leave it out.",
                        field=entry.name,
                    )
                chunks.append(chunk)
    except InvalidInput:
        raise
    except Exception as error:  # noqa: BLE001 - zlib, bz2, lzma and zipfile each have their own errors
        raise InvalidInput(
            f"'{entry.name}' could not be unpacked: the zip is damaged ({error}). Zip the folder again.",
            field=entry.name,
        ) from error
    return b"".join(chunks)


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_LOCAL_MAGIC = b"PK\x03\x04"


class EntryReader:
    """Reads planned entries straight from their offsets: no directory parse, one open file per worker.

    Stored and deflated entries (what zip tools write) are read directly and their CRC checked; any
    other method falls back to zipfile.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = path
        self.file = open(path, "rb")  # noqa: SIM115 - closed by close() / the context manager
        self._zipfile: zipfile.ZipFile | None = None

    def __enter__(self) -> EntryReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zipfile is not None:
            self._zipfile.close()
        self.file.close()

    def read(self, entry: ZipEntry, limits: ZipLimits) -> bytes:
        """The unpacked bytes of `entry`, or InvalidInput with a reason (too big, damaged)."""
        cap = limits.max_entry_uncompressed
        if entry.size > cap:
            raise InvalidInput(
                f"'{entry.name}' unpacks to more than {_mb(cap)}, the limit for one file. Shrink the picture or "
                "leave it out.",
                field=entry.name,
            )
        if entry.offset < 0 or entry.method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            if self._zipfile is None:
                self._zipfile = zipfile.ZipFile(self.path)
            return read_entry(self._zipfile, entry, limits)
        try:
            data = self._read_direct(entry, cap)
        except InvalidInput:
            raise
        except Exception as error:  # noqa: BLE001 - zlib and struct each have their own errors
            raise InvalidInput(
                f"'{entry.name}' could not be unpacked: the zip is damaged ({error}). Zip the folder again.",
                field=entry.name,
            ) from error
        if len(data) != entry.size or zlib.crc32(data) != entry.crc:
            raise InvalidInput(
                f"'{entry.name}' is damaged inside the zip (its checksum does not match). Zip the folder again.",
                field=entry.name,
            )
        return data

    def _read_direct(self, entry: ZipEntry, cap: int) -> bytes:
        self.file.seek(entry.offset)
        header = self.file.read(_LOCAL_HEADER.size)
        fields = _LOCAL_HEADER.unpack(header)
        if fields[0] != _LOCAL_MAGIC:
            raise ValueError("bad local header")
        self.file.seek(fields[-2] + fields[-1], os.SEEK_CUR)  # name and extra field
        raw = self.file.read(entry.compressed_size)
        if entry.method == zipfile.ZIP_STORED:
            return raw
        inflater = zlib.decompressobj(-15)
        data = inflater.decompress(raw, cap + 1)
        if len(data) > cap:
            raise InvalidInput(
                f"'{entry.name}' unpacks to more than {_mb(cap)}, the limit for one file.", field=entry.name
            )
        return data


def stratified_split(labels: Sequence[str], *, test_fraction: float = 0.2, seed: int = 0) -> list[Split]:
    """Assign each item to train or test, stratified by class and deterministic for a seed.

    Per class of n items: round(n * test_fraction) test items (a half rounds up), at least one when n >= 5,
    none when n < 2, and never the whole class. Each class is shuffled by its own generator, seeded by seed
    and label, so adding a class does not reshuffle the others and PYTHONHASHSEED does not matter.
    """
    if not 0.0 <= test_fraction < 1.0:
        raise InvalidInput(f"The test fraction must be at least 0 and below 1, not {test_fraction}.")
    positions: dict[str, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        positions[label].append(position)
    splits: list[Split] = ["train"] * len(labels)
    for label, members in positions.items():
        count = len(members)
        tests = int(count * test_fraction + 0.5)
        if count >= 5:
            tests = max(tests, 1)
        tests = 0 if count < 2 else min(tests, count - 1)
        shuffled = list(members)
        random.Random(f"{seed}\x00{label}").shuffle(shuffled)
        for position in shuffled[:tests]:
            splits[position] = "test"
    return splits


def validate_class_name(name: str) -> str:
    """Return the class name cleaned (Unicode NFC, outer spaces removed) or raise InvalidInput."""
    problem = _class_name_problem(name)
    if problem:
        raise InvalidInput(f"{name!r} cannot be used as a class name: {problem}.", field="name")
    return _clean(name)


def _clean(name: str) -> str:
    return unicodedata.normalize("NFC", name).strip()


def _class_name_problem(name: str) -> str | None:
    cleaned = _clean(name)
    if not cleaned:
        return "it is empty"
    if cleaned in (".", ".."):
        return "'.' and '..' are reserved for folders"
    if "/" in cleaned or "\\" in cleaned:
        return "it contains a slash"
    if any(unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") for char in cleaned):
        return "it contains invisible control characters"
    if len(cleaned) > MAX_CLASS_NAME:
        return f"it is longer than {MAX_CLASS_NAME} characters"
    return None


def _declared_entry_count(file: BinaryIO) -> int | None:
    # zipfile builds an object per central-directory record before we could count them; read the count
    # from the end-of-central-directory record first, so a zip declaring 50 million entries costs nothing.
    file.seek(0, os.SEEK_END)
    size = file.tell()
    tail_size = min(size, 22 + 0xFFFF)
    file.seek(size - tail_size)
    tail = file.read(tail_size)
    position = tail.rfind(b"PK\x05\x06")
    if position < 0 or position + 22 > len(tail):
        return None
    (count,) = struct.unpack_from("<H", tail, position + 10)
    if count != 0xFFFF or position < 20 or tail[position - 20 : position - 16] != b"PK\x06\x07":
        return count
    (zip64_end,) = struct.unpack_from("<Q", tail, position - 12)
    file.seek(zip64_end)
    record = file.read(56)
    if len(record) < 56 or record[:4] != b"PK\x06\x06":
        return None
    return struct.unpack_from("<Q", record, 32)[0]


def _check_archive(archive: str, infos: list[zipfile.ZipInfo], limits: ZipLimits) -> None:
    if len(infos) > limits.max_entries:
        raise _too_many_entries(archive, len(infos), limits)
    if not infos:
        raise InvalidInput(f"'{archive}' is an empty zip. {_LAYOUTS_HELP}", field=archive)
    unpacked = sum(info.file_size for info in infos)
    packed = sum(info.compress_size for info in infos)
    if unpacked > limits.max_total_uncompressed:
        raise InvalidInput(
            f"'{archive}' would unpack to {_mb(unpacked)}, more than the "
            f"{_mb(limits.max_total_uncompressed)} allowed for one upload. Split it into several zips.",
            field=archive,
        )
    if unpacked > limits.ratio_floor and unpacked > limits.max_ratio * max(packed, 1):
        raise InvalidInput(
            f"'{archive}' would unpack to {_mb(unpacked)} from {_mb(packed)}, over {limits.max_ratio:g} "
            "times its size. Pictures do not compress like that, so this looks like a zip bomb and was not "
            "opened. Zip the picture folders themselves.",
            field=archive,
        )


def _scan(infos: list[zipfile.ZipInfo], limits: ZipLimits) -> _Scan:
    """Drop directories and junk, refuse unsafe or unreadable entries; keep the rest as candidates."""
    # The hot loop of planning (MNIST has 70,000 entries): cheap string tests first, the careful ones only
    # for the few names they flag, and no per-entry tuples.
    candidates: list[tuple[int, str, list[str], int]] = []
    rejects: list[ZipReject] = []
    folders: set[str] = set()  # raw parent paths, split once each at the end
    ignored = 0
    for index, info in enumerate(infos):
        name = info.filename
        if not (info.flag_bits & _UTF8_FLAG or name.isascii()):
            name = _display_name(info)
        path = name.replace("\\", "/") if "\\" in name else name  # some Windows tools store backslashes
        parts = path.split("/")
        if "" in parts or "." in parts:
            parts = [part for part in parts if part not in ("", ".")]
        if path[:1] == "/" or path[1:2] == ":" or ".." in parts:
            rejects.append(ZipReject(name, "Its path points outside the zip, so it was not read."))
            continue
        lowered = path.lower()
        maybe_junk = lowered[:1] == "." or "/." in lowered or "__macosx" in lowered or "@eadir" in lowered
        unix_mode = info.external_attr >> 16
        if path.endswith("/") or unix_mode & _FILE_TYPE_BITS == stat.S_IFDIR:
            if not (maybe_junk and any(_is_junk(part) for part in parts)):
                folders.add(path)
            continue
        if not parts or (maybe_junk and any(_is_junk(part) for part in parts[:-1])):
            ignored += 1
            continue
        folders.add(path.rpartition("/")[0])
        if (maybe_junk and _is_junk(parts[-1])) or (
            lowered.endswith(_JUNK_FILE_ENDINGS) and parts[-1].lower() in JUNK_FILES
        ):
            ignored += 1
            continue
        reason = _entry_problem(info, lowered, unix_mode, limits)
        if reason:
            rejects.append(ZipReject(name, reason))
        else:
            candidates.append((index, name, parts, info.file_size))
    split_folders = {tuple(part for part in folder.split("/") if part not in ("", ".")) for folder in folders}
    return _Scan(candidates, rejects, split_folders, ignored)


def _is_junk(part: str) -> bool:
    return part.startswith(".") or part.lower() in JUNK_FOLDERS


def _entry_problem(info: zipfile.ZipInfo, lowered: str, unix_mode: int, limits: ZipLimits) -> str | None:
    if stat.S_ISLNK(unix_mode):
        return "It is a link to another file, not a file; links are not followed. Replace it with the picture."
    if info.flag_bits & _ENCRYPTED_FLAG:
        return "It is password-protected. Zip the pictures again without a password."
    if info.compress_type not in _READABLE_METHODS:
        return (
            f"It is compressed with a method that cannot be read (method {info.compress_type}). "
            "Zip the folder again with ordinary (Deflate) compression."
        )
    if lowered.endswith(ARCHIVE_SUFFIXES):
        return "A zip inside a zip is not read; unzip it first and put its pictures in the class folders."
    if info.file_size > limits.max_entry_uncompressed:
        return (
            f"It unpacks to {_mb(info.file_size)}, more than the {_mb(limits.max_entry_uncompressed)} "
            "allowed for one picture. Shrink it or leave it out."
        )
    if info.file_size > limits.ratio_floor and info.file_size > limits.max_ratio * max(info.compress_size, 1):
        return (
            f"It unpacks to over {limits.max_ratio:g} times its packed size, which no picture does; "
            "it looks like a zip bomb and was not read."
        )
    return None


def _detect_layout(paths: list[list[str]]) -> tuple[Literal["train_test", "class_folders"], list[str]]:
    """Return the layout and the wrapping folders (a path prefix) to look through."""
    prefix: list[str] = []
    for _ in range(MAX_WRAPPERS + 1):
        depth = len(prefix)
        # A path longer than depth + 1 has a folder at this level; it is under the prefix, because at every
        # shallower level there was exactly one such folder.
        tops = {parts[depth] for parts in paths if len(parts) > depth + 1}
        lowered = {top.lower() for top in tops}
        if lowered & TRAIN_FOLDERS and lowered & TEST_FOLDERS:
            return "train_test", prefix
        if len(tops) != 1 or depth == MAX_WRAPPERS:
            break
        direct = sum(1 for parts in paths if len(parts) == depth + 2)
        deeper = sum(1 for parts in paths if len(parts) > depth + 2)
        if deeper <= direct:
            break  # one class folder with a few sub-folders, not a wrapper
        prefix.append(next(iter(tops)))
    return "class_folders", prefix


def _assign(
    scan: _Scan, layout: str, prefix: list[str], infos: list[zipfile.ZipInfo]
) -> tuple[list[ZipEntry], list[ZipReject], set[str]]:
    """Give each candidate its class and split, or a reason; also return the invalid class folder names."""
    depth = len(prefix)
    width = 3 if layout == "train_test" else 2  # parts below the prefix of a well-placed file
    entries: list[ZipEntry] = []
    rejects: list[ZipReject] = []
    labels: dict[str, str | None] = {}  # raw folder name -> cleaned label, None when invalid
    splits: dict[str, Split | None] = {}  # raw split folder name -> split, None when neither
    for index, name, parts, size in scan.candidates:
        relative = parts[depth:] if parts[:depth] == prefix else parts[-1:]
        split: Split | None = None
        if width == 3 and len(relative) > 1:
            if relative[0] not in splits:
                splits[relative[0]] = _split_of(relative[0])
            split = splits[relative[0]]
            if split is None:
                rejects.append(ZipReject(name, _outside_split_reason(relative[0])))
                continue
        if len(relative) != width:
            rejects.append(ZipReject(name, _placement_problem(parts, relative, width, layout)))
            continue
        raw = relative[-2]
        if raw not in labels:
            labels[raw] = None if _class_name_problem(raw) else _clean(raw)
        label = labels[raw]
        if label is None:
            reason = f"Its folder {raw!r} cannot be a class name: {_class_name_problem(raw)}."
            rejects.append(ZipReject(name, reason))
            continue
        info = infos[index]
        entries.append(
            ZipEntry(
                name, index, label, split, size, info.header_offset, info.compress_size, info.compress_type, info.CRC
            )
        )
    return entries, rejects, {raw for raw, label in labels.items() if label is None}


def _split_of(folder: str) -> Split | None:
    lowered = folder.lower()
    return "train" if lowered in TRAIN_FOLDERS else "test" if lowered in TEST_FOLDERS else None


def _placement_problem(parts: list[str], relative: list[str], width: int, layout: str) -> str:
    if len(relative) == 1:
        where = f"directly in {'/'.join(parts[:-1])}/" if len(parts) > 1 else "at the top of the zip"
        if layout == "class_folders":
            return f"It is {where}, outside any class folder. Put it in the folder of its class."
        return f"It is {where}, outside train/ and test/. Put it in train/<class>/ or test/<class>/."
    if len(relative) < width:
        return f"It is directly in {relative[0]}/, not in a class folder. Put it in {relative[0]}/<class>/."
    holder = "/".join(relative[: width - 1])
    return (
        f"It is in a sub-folder of the class folder {holder}/; only files directly inside a class folder are "
        f"used. Move it up into {holder}/ or make its sub-folder a class of its own."
    )


def _outside_split_reason(folder: str) -> str:
    return (
        f"It is in the folder {folder}/, which is neither train/ nor test/. "
        "Move its class folders into train/ or test/."
    )


def _folder_classes(folders: set[tuple[str, ...]], layout: str, prefix: list[str]) -> set[str]:
    """The raw class folder names among every folder seen (from entries, directories and junk)."""
    depth = len(prefix)
    wrapper = tuple(prefix)
    classes: set[str] = set()
    for folder in folders:
        if folder[:depth] != wrapper:
            continue
        relative = folder[depth:]
        if layout == "class_folders" and relative:
            classes.add(relative[0])
        elif len(relative) >= 2 and relative[0].lower() in TRAIN_FOLDERS | TEST_FOLDERS:
            classes.add(relative[1])
    return classes


def _display_name(info: zipfile.ZipInfo) -> str:
    # Without the UTF-8 flag, zipfile decodes names as cp437, but most tools that omit the flag (macOS,
    # many Linux zips) really wrote UTF-8: undo cp437 and try. Other encodings stay readable-but-odd.
    name = info.filename
    if info.flag_bits & _UTF8_FLAG or name.isascii():
        return name
    try:
        return name.encode("cp437").decode("utf-8")
    except UnicodeError:
        return name


def _too_many_entries(archive: str, count: int, limits: ZipLimits) -> InvalidInput:
    return InvalidInput(
        f"'{archive}' holds {count:,} files and folders, more than the {limits.max_entries:,} allowed in one "
        "upload. Split the dataset into several zips.",
        field=archive,
    )


def _mb(size: float) -> str:
    return f"{size / 2**20:,.1f} MB"
