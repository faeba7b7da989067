"""The blob store: content-addressed images written once and atomically, named files, safe keys, both back ends."""

from __future__ import annotations

import os
import pickle
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.blobs import FsspecBlobStore, LocalBlobStore, image_key, open_blob_store, sha256_hex
from pipelines.errors import NotFound
from tests.factories import make_image

PICTURE = make_image((10, 200, 30), (8, 8))
SHA = sha256_hex(PICTURE)


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


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def test_sha256_hex_and_image_key_fan_out() -> None:
    assert len(SHA) == 64
    assert image_key(SHA) == f"images/{SHA[:2]}/{SHA}"


# --- behaviour of both back ends ---------------------------------------------------------------------------


def test_put_image_is_idempotent(store: LocalBlobStore) -> None:
    assert store.put_image(SHA, PICTURE) is True
    assert store.put_image(SHA, PICTURE) is False

    assert store.get_image(SHA) == PICTURE
    assert store.has_image(SHA)
    assert list(store.iter_keys("images")) == [image_key(SHA)]


def test_missing_blobs(store: LocalBlobStore) -> None:
    assert not store.has_image(SHA)
    assert not store.exists("models/x.bin")
    with pytest.raises(NotFound, match="missing"):
        store.get_image(SHA)
    with pytest.raises(NotFound):
        store.get("models/x.bin")
    assert store.delete_image(SHA) is False
    store.delete("models/x.bin")  # deleting what is not there is fine
    assert list(store.iter_keys("images")) == []


def test_delete_image(store: LocalBlobStore) -> None:
    store.put_image(SHA, PICTURE)

    assert store.delete_image(SHA) is True

    assert not store.has_image(SHA)
    assert store.delete_image(SHA) is False


def test_fresh_blob_survives_a_delete_with_idle_seconds(store: LocalBlobStore) -> None:
    store.put_image(SHA, PICTURE)

    assert store.delete_image(SHA, idle_seconds=60) is False

    assert store.get_image(SHA) == PICTURE


def test_named_files_roundtrip_and_listing(store: LocalBlobStore, tmp_path: Path) -> None:
    store.put("models/m1/v1.keras", b"weights")
    source = tmp_path / "report.json"
    source.write_bytes(b"{}")
    store.put_file("models/m1/report.json", source)

    assert store.get("models/m1/v1.keras") == b"weights"
    assert store.exists("models/m1/report.json")
    assert source.exists()  # copied, not moved
    assert sorted(store.iter_keys("models")) == ["models/m1/report.json", "models/m1/v1.keras"]
    assert list(store.iter_keys("nothing-here")) == []
    store.delete("models/m1/v1.keras")
    assert list(store.iter_keys("models")) == ["models/m1/report.json"]


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


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("../outside", id="parent"),
        pytest.param("images/../../outside", id="nested-parent"),
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


def test_stores_pickle_to_the_same_place(store: LocalBlobStore) -> None:
    store.put_image(SHA, PICTURE)

    copy = pickle.loads(pickle.dumps(store))

    assert type(copy) is type(store)
    assert copy.get_image(SHA) == PICTURE


# --- the local directory store -------------------------------------------------------------------------------


def test_local_store_lays_images_out_by_hash(local: LocalBlobStore) -> None:
    local.put_image(SHA, PICTURE)

    assert (local.root / "images" / SHA[:2] / SHA).read_bytes() == PICTURE


def test_writes_leave_no_temporary_files(local: LocalBlobStore, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    source.write_bytes(b"source")

    local.put_image(SHA, PICTURE)
    local.put_image(SHA, PICTURE)
    local.put("models/a.bin", b"a")
    local.put("models/a.bin", b"b")
    local.put_file("models/b.bin", source)

    assert files_under(local.root) == [f"images/{SHA[:2]}/{SHA}", "models/a.bin", "models/b.bin"]
    assert local.get("models/a.bin") == b"b"


def test_blob_cut_short_by_a_crash_is_written_again(local: LocalBlobStore) -> None:
    local.put_image(SHA, PICTURE)
    (local.root / image_key(SHA)).write_bytes(PICTURE[:10])

    assert local.put_image(SHA, PICTURE) is True

    assert local.get_image(SHA) == PICTURE


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("../" * 3 + "x" * 55, id="path"),
        pytest.param(SHA.upper(), id="upper-case"),
        pytest.param(SHA[:-1], id="too-short"),
    ],
)
def test_image_addresses_must_be_sha256(local: LocalBlobStore, name: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        local.put_image(name, PICTURE)
    with pytest.raises(ValueError, match="sha256"):
        local.get_image(name)

    assert files_under(local.root) == []


def test_hidden_files_are_not_listed(local: LocalBlobStore) -> None:
    local.put_image(SHA, PICTURE)
    (local.root / "images" / SHA[:2] / f".{SHA}.123.tmp").write_bytes(b"half")

    assert list(local.iter_keys("images")) == [image_key(SHA)]


def test_idle_blob_is_deleted(local: LocalBlobStore) -> None:
    local.put_image(SHA, PICTURE)
    age(local.root / image_key(SHA), 120)

    assert local.delete_image(SHA, idle_seconds=60) is True
    assert not local.has_image(SHA)


def test_offering_a_blob_again_refreshes_it_against_cleanup(local: LocalBlobStore) -> None:
    local.put_image(SHA, PICTURE)
    age(local.root / image_key(SHA), 120)

    assert local.put_image(SHA, PICTURE) is False  # someone is about to reference it again

    assert local.delete_image(SHA, idle_seconds=60) is False
    assert local.has_image(SHA)


def test_local_path_of_a_missing_key_is_not_found(local: LocalBlobStore) -> None:
    with pytest.raises(NotFound), local.local_path("uploads/none.zip"):
        pass


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

    with pytest.raises(ValueError, match="escapes"):
        local.get("models/secret")


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


def test_memory_uri_gives_the_fsspec_store(memory: FsspecBlobStore) -> None:
    memory.put_image(SHA, PICTURE)

    assert memory.fs.cat_file(f"{memory.base}/{image_key(SHA)}") == PICTURE


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
