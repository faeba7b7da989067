"""The blob store: pictures appended to pack files, named files, safe keys, both back ends."""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import blobs
from cluster.blobs import PACKS, BlobRef, FsspecBlobStore, LocalBlobStore, new_pack_key, open_blob_store, sha256_hex
from pipelines.errors import NotFound
from tests.factories import make_image

PICTURE = make_image((10, 200, 30), (8, 8))
SHA = sha256_hex(PICTURE)
OTHER = make_image((200, 10, 30), (12, 12), mark=7)
THIRD = make_image((30, 10, 200), (9, 9), "BMP")
PICTURES = [PICTURE, OTHER, THIRD]


@pytest.fixture
def local(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


@pytest.fixture
def memory() -> Iterator[FsspecBlobStore]:
    # fsspec's memory filesystem is one global dict: a unique root per test keeps tests apart.
    store = open_blob_store(f"memory://classifly-test-{uuid.uuid4().hex}")
    assert isinstance(store, FsspecBlobStore)
    yield store
    if store.fs.exists(store.base):
        store.fs.rm(store.base, recursive=True)


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest) -> LocalBlobStore:
    """Each back end, for the behaviour both must share."""
    return request.getfixturevalue(request.param)


def files_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def packs(store: LocalBlobStore) -> list[str]:
    return sorted(store.iter_keys(PACKS))


def write_pack(store: LocalBlobStore, pictures: list[bytes]) -> list[BlobRef]:
    with store.pack_writer() as pack:
        return [pack.add(sha256_hex(data), data) for data in pictures]


def cache_files() -> set[str]:
    """What the fsspec store keeps in its local staging folder (shared by every fsspec store of the process)."""
    root = Path(tempfile.gettempdir()) / "classifly-blob-cache"
    return set(files_under(root)) if root.exists() else set()


def test_sha256_hex_is_the_hex_digest() -> None:
    assert SHA == sha256_hex(bytes(PICTURE))
    assert re.fullmatch(r"[0-9a-f]{64}", SHA)
    assert sha256_hex(OTHER) != SHA


def test_pack_keys_are_fresh_and_fan_out_by_their_first_two_characters() -> None:
    keys = [new_pack_key() for _ in range(200)]

    assert len(set(keys)) == 200
    for key in keys:
        match = re.fullmatch(rf"{PACKS}/([0-9a-f]{{2}})/([0-9a-f]{{20}})\.pack", key)
        assert match, key
        assert match[2].startswith(match[1])


# --- pack files: behaviour of both back ends -------------------------------------------------------------------


def test_pictures_are_appended_one_after_another(store: LocalBlobStore) -> None:
    refs = write_pack(store, PICTURES)

    (key,) = packs(store)
    assert [ref.pack for ref in refs] == [key] * 3
    assert [(ref.offset, ref.length) for ref in refs] == [
        (0, len(PICTURE)),
        (len(PICTURE), len(OTHER)),
        (len(PICTURE) + len(OTHER), len(THIRD)),
    ]
    assert store.size(key) == sum(map(len, PICTURES))
    assert store.get(key) == b"".join(PICTURES)  # a pack is the pictures' bytes, nothing between them
    assert [store.read(ref) for ref in refs] == PICTURES


def test_a_picture_added_twice_to_one_pack_lands_once(store: LocalBlobStore) -> None:
    with store.pack_writer() as pack:
        first = pack.add(SHA, PICTURE)
        other = pack.add(sha256_hex(OTHER), OTHER)
        again = pack.add(SHA, PICTURE)

    assert again == first
    assert other.offset == len(PICTURE)
    (key,) = packs(store)
    assert store.size(key) == len(PICTURE) + len(OTHER)
    assert store.read(again) == PICTURE


def test_each_writer_makes_its_own_pack(store: LocalBlobStore) -> None:
    (first,) = write_pack(store, [PICTURE])
    (second,) = write_pack(store, [PICTURE])  # the catalog decides which copy is used, not the store

    assert first.pack != second.pack
    assert packs(store) == sorted([first.pack, second.pack])
    assert (first.offset, second.offset) == (0, 0)
    assert store.read(first) == store.read(second) == PICTURE


def test_an_empty_pack_is_not_kept(store: LocalBlobStore) -> None:
    before = cache_files()

    with store.pack_writer():
        pass

    assert packs(store) == []
    assert list(store.iter_keys("")) == []
    assert cache_files() <= before


def test_an_error_removes_the_partial_pack(store: LocalBlobStore) -> None:
    before = cache_files()

    with pytest.raises(RuntimeError, match="decoder crashed"), store.pack_writer() as pack:
        pack.add(SHA, PICTURE)
        raise RuntimeError("decoder crashed")

    assert packs(store) == []
    assert list(store.iter_keys("")) == []
    assert cache_files() <= before


def test_read_many_keeps_the_order_given(store: LocalBlobStore) -> None:
    first = write_pack(store, PICTURES)
    (second,) = write_pack(store, [make_image((1, 1, 1), (5, 5), mark=3)])
    refs = [first[2], second, first[0], first[2], first[1]]  # packs mixed, offsets out of order, one twice

    assert store.read_many(refs) == [store.read(ref) for ref in refs]
    assert store.read_many(refs)[0] == THIRD
    assert store.read_many(iter(refs[:2])) == [THIRD, store.read(second)]  # any iterable
    assert store.read_many([]) == []


def test_reading_a_missing_pack_is_not_found(store: LocalBlobStore) -> None:
    missing = BlobRef(new_pack_key(), 0, 10)

    with pytest.raises(NotFound, match="missing"):
        store.read(missing)
    with pytest.raises(NotFound, match="missing"):
        store.read_many([missing])


@pytest.mark.parametrize("how", ["read", "read_many"])
def test_a_pack_shorter_than_the_catalog_says_is_not_found(store: LocalBlobStore, how: str) -> None:
    (ref,) = write_pack(store, [PICTURE])
    beyond = BlobRef(ref.pack, ref.offset + 10, ref.length)  # runs 10 bytes past the end of the pack

    # Silently short bytes would reach the decoder (or a training run) as a corrupt picture.
    try:
        got = store.read(beyond) if how == "read" else store.read_many([ref, beyond])[1]
    except NotFound as error:
        assert "shorter" in error.detail
    else:
        raise AssertionError(
            f"BUG: {type(store).__name__}.{how} returned {len(got)} of the {beyond.length} bytes the catalog"
            " promised instead of raising NotFound"
        )


@pytest.mark.parametrize(
    "pack",
    [
        pytest.param("../outside.pack", id="parent"),
        pytest.param("packs/../../outside.pack", id="nested-parent"),
        pytest.param("/etc/passwd", id="absolute"),
    ],
)
def test_pack_keys_escaping_the_root_are_refused(store: LocalBlobStore, pack: str) -> None:
    with pytest.raises(ValueError, match="escapes"):
        store.read(BlobRef(pack, 0, 1))
    with pytest.raises(ValueError, match="escapes"):
        store.read_many([BlobRef(pack, 0, 1)])


def test_stores_pickle_to_the_same_place(store: LocalBlobStore) -> None:
    refs = write_pack(store, PICTURES)

    copy = pickle.loads(pickle.dumps(store))

    assert type(copy) is type(store)
    assert copy.read_many(refs) == PICTURES
    (ref,) = write_pack(copy, [PICTURE])  # a copy in another process writes where the original reads
    assert store.read(ref) == PICTURE


# --- named files: behaviour of both back ends ------------------------------------------------------------------


def test_missing_named_files(store: LocalBlobStore) -> None:
    assert not store.exists("models/x.bin")
    with pytest.raises(NotFound, match="missing"):
        store.get("models/x.bin")
    store.delete("models/x.bin")  # deleting what is not there is fine
    assert list(store.iter_keys("models")) == []


def test_named_files_roundtrip_and_listing(store: LocalBlobStore, tmp_path: Path) -> None:
    store.put("models/m1/v1.keras", b"weights")
    source = tmp_path / "report.json"
    source.write_bytes(b"{}")
    store.put_file("models/m1/report.json", source)

    assert store.get("models/m1/v1.keras") == b"weights"
    assert store.size("models/m1/v1.keras") == 7
    assert store.exists("models/m1/report.json")
    assert source.exists()  # copied, not moved
    assert sorted(store.iter_keys("models")) == ["models/m1/report.json", "models/m1/v1.keras"]
    assert list(store.iter_keys("nothing-here")) == []
    store.delete("models/m1/v1.keras")
    assert list(store.iter_keys("models")) == ["models/m1/report.json"]


def test_named_files_and_packs_are_listed_apart(store: LocalBlobStore) -> None:
    (ref,) = write_pack(store, [PICTURE])
    store.put(f"thumbnails/{SHA[:2]}/{SHA}/128", b"thumb")

    assert packs(store) == [ref.pack]
    assert list(store.iter_keys("thumbnails")) == [f"thumbnails/{SHA[:2]}/{SHA}/128"]
    assert sorted(store.iter_keys("")) == sorted([ref.pack, f"thumbnails/{SHA[:2]}/{SHA}/128"])


def test_put_file_can_move(store: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "upload.zip"
    source.write_bytes(b"PK zip bytes")

    store.put_file("uploads/job_1.zip", source, move=True)

    assert not source.exists()
    assert store.get("uploads/job_1.zip") == b"PK zip bytes"


def test_local_path_gives_a_readable_file(store: LocalBlobStore) -> None:
    store.put("uploads/job_1.zip", b"zip bytes")

    with store.local_path("uploads/job_1.zip") as path:
        assert path.read_bytes() == b"zip bytes"

    assert store.get("uploads/job_1.zip") == b"zip bytes"


def test_local_path_of_a_missing_key_is_not_found(store: LocalBlobStore) -> None:
    with pytest.raises(NotFound), store.local_path("uploads/none.zip"):
        pass


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("../outside", id="parent"),
        pytest.param("packs/../../outside", id="nested-parent"),
        pytest.param("/etc/passwd", id="absolute"),
    ],
)
def test_keys_escaping_the_root_are_refused(store: LocalBlobStore, key: str) -> None:
    with pytest.raises(ValueError, match="escapes"):
        store.put(key, b"x")
    with pytest.raises(ValueError, match="escapes"):
        store.get(key)
    with pytest.raises(ValueError, match="escapes"):
        store.exists(key)


# --- the local directory store -------------------------------------------------------------------------------


def test_local_pack_is_a_file_under_the_root(local: LocalBlobStore) -> None:
    (ref,) = write_pack(local, [PICTURE])

    assert (local.root / ref.pack).read_bytes() == PICTURE


def test_local_pack_is_synced_before_the_writer_returns(local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def spy(descriptor: int) -> None:
        real_fsync(descriptor)
        synced.append(os.fstat(descriptor).st_size)  # how much of the pack was in the file when synced

    monkeypatch.setattr(blobs.os, "fsync", spy)

    with local.pack_writer() as pack:
        pack.add(SHA, PICTURE)
        pack.add(sha256_hex(OTHER), OTHER)
        assert synced == []

    # Synced once, with everything in it: the catalog rows pointing into it are committed only afterwards.
    assert synced == [len(PICTURE) + len(OTHER)]


def test_writes_leave_no_temporary_files(local: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"source")

    ref, _ = write_pack(local, [PICTURE, PICTURE])
    with local.pack_writer():
        pass
    with pytest.raises(RuntimeError), local.pack_writer() as pack:
        pack.add(SHA, PICTURE)
        raise RuntimeError
    local.put("models/a.bin", b"a")
    local.put("models/a.bin", b"b")
    local.put_file("models/b.bin", source)

    assert files_under(local.root) == sorted([ref.pack, "models/a.bin", "models/b.bin"])
    assert local.get("models/a.bin") == b"b"


def test_hidden_files_are_not_listed(local: LocalBlobStore) -> None:
    (ref,) = write_pack(local, [PICTURE])
    (local.root / ref.pack).with_name(".half-written.tmp").write_bytes(b"half")

    assert packs(local) == [ref.pack]


def test_new_upload_path_is_an_empty_file_inside_the_store(local: LocalBlobStore) -> None:
    first, second = local.new_upload_path(".zip"), local.new_upload_path(".zip")

    assert first != second
    assert first.parent == local.root / "incoming"
    assert first.suffix == ".zip"
    assert first.read_bytes() == b""


def test_symlink_out_of_the_root_is_refused(local: LocalBlobStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    (local.root / "models").symlink_to(outside)
    (local.root / PACKS).symlink_to(outside)

    with pytest.raises(ValueError, match="escapes"):
        local.get("models/secret")
    with pytest.raises(ValueError, match="escapes"):
        local.read(BlobRef(f"{PACKS}/secret", 0, 6))


@pytest.mark.parametrize(
    "uri",
    [
        pytest.param("{tmp}/plain", id="path"),
        pytest.param("file://{tmp}/with-scheme", id="file-uri"),
    ],
)
def test_open_blob_store_local_uris(tmp_path: Path, uri: str) -> None:
    store = open_blob_store(uri.format(tmp=tmp_path))

    assert type(store) is LocalBlobStore
    assert store.root.is_relative_to(tmp_path)
    assert store.root.is_dir()


# --- the fsspec store ---------------------------------------------------------------------------------------


def test_memory_pack_is_one_object_in_the_filesystem(memory: FsspecBlobStore) -> None:
    before = cache_files()

    refs = write_pack(memory, PICTURES)

    assert memory.fs.cat_file(f"{memory.base}/{refs[0].pack}") == b"".join(PICTURES)
    assert cache_files() <= before  # the local staging copy is gone once the pack is published


def test_memory_reads_are_ranges_of_the_pack(memory: FsspecBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    refs = write_pack(memory, PICTURES)
    ranges: list[tuple[int | None, int | None]] = []
    real_cat_file = memory.fs.cat_file

    def spy(path: str, start: int | None = None, end: int | None = None, **kwargs: object) -> bytes:
        ranges.append((start, end))
        return real_cat_file(path, start=start, end=end, **kwargs)

    monkeypatch.setattr(memory.fs, "cat_file", spy)

    assert memory.read_many(refs[1:]) == PICTURES[1:]
    assert ranges == [(ref.offset, ref.offset + ref.length) for ref in refs[1:]]


def test_fsspec_local_path_is_a_temporary_copy(memory: FsspecBlobStore) -> None:
    memory.put("uploads/job_1.zip", b"zip bytes")

    with memory.local_path("uploads/job_1.zip") as path:
        assert path.read_bytes() == b"zip bytes"

    assert not path.exists()


def test_fsspec_new_upload_path_is_local(memory: FsspecBlobStore) -> None:
    path = memory.new_upload_path(".zip")
    try:
        assert path.exists()
        assert path.suffix == ".zip"
    finally:
        path.unlink()
