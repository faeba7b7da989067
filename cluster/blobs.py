"""Blob store: image bytes content-addressed by sha256 (stored once however often uploaded), plus named files.

A local directory by default; an fsspec URI (``s3://bucket/prefix``) on a cluster. Writers put the blob first
and the catalog row second, so a crash can leave an unreferenced blob (collected by ``classifly doctor``) but
never a row that points at nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from pipelines.errors import NotFound

_HEX = frozenset("0123456789abcdef")


def sha256_hex(data: bytes) -> str:
    """The sha256 of `data`, hex encoded: an image's address in the store."""
    return hashlib.sha256(data).hexdigest()


def image_key(sha256: str) -> str:
    """The key of an image blob; one level of 256 folders keeps directories small."""
    return f"images/{sha256[:2]}/{sha256}"


class LocalBlobStore:
    """Blobs as files under one directory; writes are atomic (temp file, then rename)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._made: set[Path] = set()
        self._made_dirs: set[str] = set()

    def __reduce__(self):
        return (LocalBlobStore, (str(self.root),))

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def _parent(self, path: Path) -> None:
        if path.parent not in self._made:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(path.parent)

    def _image_path(self, sha256: str) -> str:
        # Hot path (70,000 calls per big import): plain string joins, no Path.resolve() syscalls.
        if len(sha256) != 64 or not _HEX.issuperset(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return f"{self.root}/images/{sha256[:2]}/{sha256}"

    def put_image(self, sha256: str, data: bytes) -> bool:
        """Store image bytes under their hash unless already there; returns True when written now.

        No temp-file-and-rename: a content address fixes the size, so a blob cut short by a crash is
        recognised by its size and simply written again (half the cost per small image).
        """
        path = self._image_path(sha256)
        try:
            if os.stat(path).st_size == len(data):
                # A fresh mtime tells a concurrent clean-up that someone is about to reference this blob.
                os.utime(path)
                return False
        except FileNotFoundError:
            pass
        folder = path[: path.rindex("/")]
        if folder not in self._made_dirs:
            os.makedirs(folder, exist_ok=True)
            self._made_dirs.add(folder)
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(handle, data)
        finally:
            os.close(handle)
        return True

    def get_image(self, sha256: str) -> bytes:
        """The bytes of an image blob."""
        try:
            with open(self._image_path(sha256), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            raise NotFound(f"Picture {sha256[:12]} is missing from the store. Run 'classifly doctor'.") from None

    def has_image(self, sha256: str) -> bool:
        return os.path.exists(self._image_path(sha256))

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"The stored file '{key}' is missing. Run 'classifly doctor' to check the store.") from None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self._parent(path)
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_bytes(data)
        os.replace(temp, path)

    def put_file(self, key: str, source: str | os.PathLike, *, move: bool = False) -> None:
        """Store a local file under `key` (moved, not copied, when `move` and on the same disk)."""
        path = self._path(key)
        self._parent(path)
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

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def delete_image(self, sha256: str, *, idle_seconds: float = 0.0) -> bool:
        """Delete an image blob unless it was written or re-offered in the last `idle_seconds`."""
        path = self._image_path(sha256)
        try:
            if idle_seconds and time.time() - os.stat(path).st_mtime < idle_seconds:
                return False
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True

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
        self._cache = Path(tempfile.gettempdir()) / "classifly-blob-cache"
        self._cache.mkdir(parents=True, exist_ok=True)

    def __reduce__(self):
        return (FsspecBlobStore, (self.uri,))

    def _key(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return f"{self.base}/{key}"

    def put_image(self, sha256: str, data: bytes) -> bool:
        key = self._key(image_key(sha256))
        if self.fs.exists(key):
            return False
        self.fs.pipe_file(key, data)
        return True

    def has_image(self, sha256: str) -> bool:
        return self.fs.exists(self._key(image_key(sha256)))

    def get_image(self, sha256: str) -> bytes:
        return self.get(image_key(sha256))

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
        handle, name = tempfile.mkstemp(dir=self._cache)
        os.close(handle)
        try:
            self.fs.get_file(self._key(key), name)
            yield Path(name)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._key(key))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._key(key))

    def delete_image(self, sha256: str, *, idle_seconds: float = 0.0) -> bool:
        key = self._key(image_key(sha256))
        try:
            if idle_seconds:
                modified = self.fs.modified(key).timestamp()
                if time.time() - modified < idle_seconds:
                    return False
            self.fs.rm_file(key)
        except (FileNotFoundError, NotImplementedError):
            return False
        return True

    def iter_keys(self, prefix: str) -> Iterator[str]:
        base = self._key(prefix)
        if not self.fs.exists(base):
            return
        for path in self.fs.find(base):
            yield path[len(self.base) + 1 :]

    def new_upload_path(self, suffix: str = "") -> Path:
        handle, name = tempfile.mkstemp(dir=self._cache, suffix=suffix)
        os.close(handle)
        return Path(name)


BlobStore = LocalBlobStore


def open_blob_store(uri: str) -> BlobStore:
    """The blob store at `uri`: a local path (or file://) gives a directory store, anything else goes to fsspec."""
    if "://" not in uri or uri.startswith("file://"):
        return LocalBlobStore(uri.removeprefix("file://"))
    return FsspecBlobStore(uri)
