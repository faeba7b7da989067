"""Blob store: picture bytes in append-only pack files, plus named files (uploads, thumbnails, artifacts).

Pictures are content-addressed: the catalog's `blobs` table maps each sha256 to the `BlobRef` (pack, offset,
length) where its bytes lie, so a picture uploaded twice is stored once. A pack holds one batch of new
pictures (an import task's 2,500, or one upload request's files): creating one small file per picture costs
up to a millisecond on a VM disk, appending to a pack about a microsecond. Writers close (and fsync) the pack
before the catalog rows that point into it are committed, so a crash can leave unreferenced bytes (reclaimed
by `compact`) but never a row pointing at nothing.

A local directory by default; an fsspec URI (``s3://bucket/prefix``) on a cluster, where a pack is one object
read with range requests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipelines.errors import NotFound

PACKS = "packs"


def sha256_hex(data: bytes) -> str:
    """The sha256 of `data`, hex encoded: a picture's address."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where one picture's bytes lie: a pack's key, the offset in it and the length."""

    pack: str
    offset: int
    length: int


def new_pack_key() -> str:
    """A fresh, unique pack key; 256 folders keep directories small."""
    name = secrets.token_hex(10)
    return f"{PACKS}/{name[:2]}/{name}.pack"


def _exact(data: bytes, ref: BlobRef) -> bytes:
    """The bytes read for `ref`, refusing a short read (a damaged or truncated pack)."""
    if len(data) != ref.length:
        raise NotFound(f"Pack '{ref.pack}' is shorter than the catalog says. Run 'classifly doctor'.")
    return data


class PackWriter:
    """Appends pictures to one new pack; `add` returns each picture's BlobRef (a picture added twice lands once).

    Use as a context manager: on a clean exit the pack is flushed to stable storage (and uploaded, for an
    object store); an empty pack is not kept; on an error the partial pack is removed.
    """

    def __init__(self, store: BlobStore, key: str, local: Path):
        self.store = store
        self.key = key
        self.local = local
        self.local.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(local, "wb")  # noqa: SIM115 - closed in close()/abort()
        self.offset = 0
        self.refs: dict[str, BlobRef] = {}

    def add(self, sha256: str, data: bytes) -> BlobRef:
        ref = self.refs.get(sha256)
        if ref is None:
            self.file.write(data)
            ref = BlobRef(self.key, self.offset, len(data))
            self.offset += len(data)
            self.refs[sha256] = ref
        return ref

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        if self.offset == 0:
            self.local.unlink(missing_ok=True)
        else:
            self.store._publish_pack(self.key, self.local)

    def abort(self) -> None:
        self.file.close()
        self.local.unlink(missing_ok=True)

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


class LocalBlobStore:
    """Blobs as files under one local directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __reduce__(self):
        return (type(self), (str(self.root),))

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    # Pictures -------------------------------------------------------------------------------------------------

    def pack_writer(self) -> PackWriter:
        """A writer for a new pack of pictures."""
        key = new_pack_key()
        return PackWriter(self, key, self._path(key))

    def _publish_pack(self, key: str, local: Path) -> None:
        """The pack is already in place on a local disk."""

    def read(self, ref: BlobRef) -> bytes:
        """One picture's bytes."""
        try:
            with open(self._path(ref.pack), "rb") as handle:
                data = os.pread(handle.fileno(), ref.length, ref.offset)
        except FileNotFoundError:
            raise NotFound(f"Pack '{ref.pack}' is missing from the store. Run 'classifly doctor'.") from None
        return _exact(data, ref)

    def read_many(self, refs: Iterable[BlobRef]) -> list[bytes]:
        """Many pictures' bytes, in the order given; each pack is opened once and read front to back."""
        refs = list(refs)
        by_pack: dict[str, list[int]] = defaultdict(list)
        for position, ref in enumerate(refs):
            by_pack[ref.pack].append(position)
        result: list[bytes] = [b""] * len(refs)
        for pack, positions in by_pack.items():
            positions.sort(key=lambda position: refs[position].offset)
            try:
                with open(self._path(pack), "rb") as handle:
                    for position in positions:
                        ref = refs[position]
                        result[position] = _exact(os.pread(handle.fileno(), ref.length, ref.offset), ref)
            except FileNotFoundError:
                raise NotFound(f"Pack '{pack}' is missing from the store. Run 'classifly doctor'.") from None
        return result

    # Named files ----------------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"The stored file '{key}' is missing. Run 'classifly doctor' to check the store.") from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_bytes(data)
        os.replace(temp, path)

    def put_file(self, key: str, source: str | os.PathLike, *, move: bool = False) -> None:
        """Store a local file under `key` (moved, not copied, when `move` and on the same disk)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        if move:
            shutil.move(os.fspath(source), path)
        else:
            temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            shutil.copyfile(source, temp)
            os.replace(temp, path)

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """A local file holding the blob, for readers that need a path (zip files)."""
        path = self._path(key)
        if not path.exists():
            raise NotFound(f"The stored file '{key}' is missing.")
        yield path

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def iter_keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        if not base.exists():
            return
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                yield str(path.relative_to(self.root))

    def new_upload_path(self, suffix: str = "") -> Path:
        """A fresh local file on the store's disk for streaming an upload into (moved into place afterwards)."""
        folder = self.root / "incoming"
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=folder, suffix=suffix)
        os.close(handle)
        return Path(name)


class FsspecBlobStore(LocalBlobStore):
    """Blobs on an object store through fsspec (s3://, gs://, memory://): the same interface as the local store."""

    def __init__(self, uri: str):
        import fsspec

        self.uri = uri.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.uri)
        self.root = Path(tempfile.gettempdir()) / "classifly-blob-cache"
        self.root.mkdir(parents=True, exist_ok=True)

    def __reduce__(self):
        return (FsspecBlobStore, (self.uri,))

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return f"{self.base}/{key}"

    def pack_writer(self) -> PackWriter:
        key = new_pack_key()
        handle, name = tempfile.mkstemp(dir=self.root, suffix=".pack")
        os.close(handle)
        return PackWriter(self, key, Path(name))

    def _publish_pack(self, key: str, local: Path) -> None:
        try:
            self.fs.put_file(os.fspath(local), self._key(key))
        finally:
            local.unlink(missing_ok=True)

    def read(self, ref: BlobRef) -> bytes:
        try:
            return _exact(self.fs.cat_file(self._key(ref.pack), start=ref.offset, end=ref.offset + ref.length), ref)
        except FileNotFoundError:
            raise NotFound(f"Pack '{ref.pack}' is missing from the store. Run 'classifly doctor'.") from None

    def read_many(self, refs: Iterable[BlobRef]) -> list[bytes]:
        return [self.read(ref) for ref in refs]

    def get(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._key(key))
        except FileNotFoundError:
            raise NotFound(f"The stored file '{key}' is missing. Run 'classifly doctor' to check the store.") from None

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._key(key), data)

    def put_file(self, key: str, source: str | os.PathLike, *, move: bool = False) -> None:
        self.fs.put_file(os.fspath(source), self._key(key))
        if move:
            os.unlink(source)

    @contextlib.contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        handle, name = tempfile.mkstemp(dir=self.root)
        os.close(handle)
        try:
            try:
                self.fs.get_file(self._key(key), name)
            except FileNotFoundError:
                raise NotFound(f"The stored file '{key}' is missing.") from None
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._key(key))

    def size(self, key: str) -> int:
        return int(self.fs.size(self._key(key)))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._key(key))

    def iter_keys(self, prefix: str) -> Iterator[str]:
        base = self._key(prefix)
        if not self.fs.exists(base):
            return
        for path in self.fs.find(base):
            yield path[len(self.base) + 1 :]

    def new_upload_path(self, suffix: str = "") -> Path:
        handle, name = tempfile.mkstemp(dir=self.root, suffix=suffix)
        os.close(handle)
        return Path(name)


BlobStore = LocalBlobStore


def open_blob_store(uri: str) -> BlobStore:
    """The blob store at `uri`: a local path (or file://) gives a directory store, anything else goes to fsspec."""
    if "://" not in uri or uri.startswith("file://"):
        return LocalBlobStore(uri.removeprefix("file://"))
    return FsspecBlobStore(uri)
