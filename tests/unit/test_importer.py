"""Zip imports in one process: both layouts, the report a user reads, and all-or-nothing failures."""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from cluster import importer
from cluster.blobs import PACKS, BlobRef, LocalBlobStore, sha256_hex
from cluster.catalog import jobs, models, users
from cluster.catalog.client import LocalCatalog
from cluster.catalog.images import ImageColumns
from cluster.catalog.models import ModelSpec
from cluster.importer import (
    SPLIT_SEED,
    DecodeBatch,
    ImportRequest,
    batch_size_for,
    decode_batch,
    decode_entry,
    run_import,
    serial_map,
)
from pipelines.errors import InvalidInput, QuotaExceeded
from pipelines.zips import EntryReader, ZipLimits, plan_zip
from tests.factories import make_image, make_zip, zip_info

QUOTA = 10**9
MAX_PIXELS = 10_000_000


@dataclass
class Setup:
    catalog: LocalCatalog
    blobs: LocalBlobStore
    owner_id: str
    model_id: str
    tmp_path: Path

    def request(self, zip_path: Path, **overrides: object) -> ImportRequest:
        """Queue an import job for this zip and put the zip where the API would: in the blob store."""
        job = self.catalog.call_sync(jobs.create_job, self.owner_id, "import", model_id=self.model_id)
        key = f"uploads/{job.id}.zip"
        self.blobs.put_file(key, zip_path)
        request = ImportRequest(
            job_id=job.id,
            owner_id=self.owner_id,
            model_id=self.model_id,
            upload_key=key,
            blob_root=str(self.blobs.root),
            limits=ZipLimits(),
            max_pixels=MAX_PIXELS,
            quota_bytes=QUOTA,
            batch_size=4,  # several batches even for small zips, to check the order is kept
        )
        return replace(request, **overrides)

    def run(self, zip_path: Path, **overrides: object) -> tuple[dict, jobs.JobRecord]:
        request = self.request(zip_path, **overrides)
        report = run_import(request, self.catalog, self.blobs, serial_map)
        return report, self.job(request.job_id)

    def job(self, job_id: str) -> jobs.JobRecord:
        return self.catalog.call_sync(jobs.get_job, job_id)

    def rows(self) -> list[tuple]:
        return self.catalog.conn.execute(
            "SELECT id, label, split, status, reject_reason, original_name, sha256 FROM images ORDER BY id"
        ).fetchall()

    def classes(self) -> list[str]:
        return [c.name for c in self.catalog.call_sync(models.list_classes, self.owner_id, self.model_id)]

    def blob_rows(self) -> dict[str, BlobRef]:
        rows = self.catalog.conn.execute("SELECT sha256, pack, pack_offset, length FROM blobs").fetchall()
        return {sha: BlobRef(pack, offset, length) for sha, pack, offset, length in rows}

    def packs(self) -> list[str]:
        return sorted(self.blobs.iter_keys(PACKS))

    def pack_bytes(self) -> int:
        return sum(self.blobs.size(key) for key in self.packs())


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    catalog = LocalCatalog(":memory:")
    user = catalog.call_sync(users.create_user, "alice", "hash")
    model = catalog.call_sync(models.create_model, user.id, ModelSpec("pets"))
    yield Setup(catalog, LocalBlobStore(tmp_path / "blobs"), user.id, model.id, tmp_path)
    catalog.close()


def picture_of(number: int, size: tuple[int, int] = (8, 8)) -> bytes:
    """The bytes make_zip writes for its `number`-th picture, to build duplicates of it."""
    return make_image((number * 37 % 256, number * 91 % 256, number * 53 % 256), size, "PNG", mark=number)


def split_counts(report: dict) -> dict[str, tuple[int, int]]:
    return {c["name"]: (c["train"], c["test"]) for c in report["classes"]}


def test_class_folder_layout_gets_a_seeded_stratified_split(setup: Setup) -> None:
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 10, "dog": 5, "owl": 1})

    report, job = setup.run(archive)

    assert report["layout"] == "class_folders"
    assert report["split_seed"] == SPLIT_SEED
    assert split_counts(report) == {"cat": (8, 2), "dog": (4, 1), "owl": (1, 0)}
    assert report["accepted"] == 16
    assert (report["duplicates"], report["rejected"], report["empty_folders"]) == (0, 0, [])
    assert report["summary"] == "Added 16 pictures in 3 classes."
    assert (job.status, job.result, job.error) == ("succeeded", report, None)
    assert job.progress_done == job.progress_total == 16
    assert setup.classes() == ["cat", "dog", "owl"]


def test_the_split_is_the_same_for_the_same_zip(setup: Setup, tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "pets.zip", {"cat": 10, "dog": 10})
    setup.run(archive)
    first = {name: split for _, _, split, _, _, name, _ in setup.rows()}

    other = LocalCatalog(":memory:")
    try:
        user = other.call_sync(users.create_user, "bob", "hash")
        model = other.call_sync(models.create_model, user.id, ModelSpec("pets"))
        again = Setup(other, setup.blobs, user.id, model.id, tmp_path)
        again.run(archive)
        assert {name: split for _, _, split, _, _, name, _ in again.rows()} == first
    finally:
        other.close()


def test_train_test_layout_keeps_the_given_splits(setup: Setup) -> None:
    layout = {"data": {"train": {"cat": 4, "dog": 3}, "test": {"cat": 1, "dog": 2}}}
    archive = make_zip(setup.tmp_path / "pets.zip", layout, directories=True)

    report, job = setup.run(archive)

    assert report["layout"] == "train_test"
    assert report["split_seed"] is None
    assert split_counts(report) == {"cat": (4, 1), "dog": (3, 2)}
    assert job.status == "succeeded"
    for _, _, split, _, _, name, _ in setup.rows():
        assert name.split("/")[1] == split


def test_report_lists_duplicates_rejects_and_empty_folders(setup: Setup) -> None:
    extra = {
        "cat/copy-of-0.png": picture_of(0),  # same class: a duplicate
        "dog/copy-of-1.png": picture_of(1),  # another class: rejected, naming the class
        "dog/notes.jpg": b"remember to feed the dog",
        "cat/kittens/small.png": make_image((1, 2, 3)),
        "../escape.png": make_image((4, 5, 6)),
        zip_info("cat/link.png", symlink=True): b"0.png",
        "__MACOSX/cat/._0.png": b"junk",
        "cat/.DS_Store": b"junk",
    }
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 3, "bird": 0, "dog": 3}, extra=extra, directories=True)

    report, job = setup.run(archive)

    assert {c["name"]: c["total"] for c in report["classes"]} == {"cat": 3, "dog": 3}
    assert report["duplicates"] == 1
    assert report["duplicate_names"] == ["cat/copy-of-0.png"]
    reasons = {reject["name"]: reject["reason"] for reject in report["rejects"]}
    assert set(reasons) == {
        "dog/copy-of-1.png",
        "dog/notes.jpg",
        "cat/kittens/small.png",
        "../escape.png",
        "cat/link.png",
    }
    assert "'cat'" in reasons["dog/copy-of-1.png"]
    assert "not a picture" in reasons["dog/notes.jpg"]
    assert "sub-folder" in reasons["cat/kittens/small.png"]
    assert "outside the zip" in reasons["../escape.png"]
    assert "link" in reasons["cat/link.png"]
    assert report["rejected"] == 5
    assert sum(r["count"] for r in report["rejects_by_reason"]) == 5
    assert report["empty_folders"] == ["bird"]
    assert any("'bird' had no pictures" in warning for warning in report["warnings"])
    assert report["ignored_files"] == 2
    assert (
        report["summary"] == "Added 6 pictures in 2 classes, skipped 1 duplicates, rejected 5 files (see the reasons)."
    )
    assert job.status == "succeeded"

    # The catalog holds exactly what the report says: accepted rows, reject rows with reasons, no duplicate row.
    rows = setup.rows()
    assert Counter(status for _, _, _, status, _, _, _ in rows) == {"accepted": 6, "rejected": 5}
    assert {name: reason for _, _, _, status, reason, name, _ in rows if status == "rejected"} == reasons
    assert setup.classes() == ["cat", "dog"]


def test_duplicates_in_the_zip_do_not_take_the_test_places(setup: Setup) -> None:
    # Three distinct cats (0-2) plus a copy of cat 0; three dogs plus a cat picture filed as a dog.
    extra = {"cat/copy-of-0.png": picture_of(0), "dog/copy-of-1.png": picture_of(1)}
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 3, "dog": 3}, extra=extra)

    report, _ = setup.run(archive)

    # Three accepted pictures per class: the stratified split keeps one of them for testing, whichever
    # copies were dropped as duplicates or rejected.
    assert split_counts(report) == {"cat": (2, 1), "dog": (2, 1)}


def test_accepted_pictures_are_in_the_store_and_the_upload_is_removed(setup: Setup) -> None:
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 3, "dog": 3})
    request = setup.request(archive)  # batches of 4: two decode tasks

    run_import(request, setup.catalog, setup.blobs, serial_map)

    with zipfile.ZipFile(archive) as opened:
        expected = {sha256_hex(opened.read(name)): opened.read(name) for name in opened.namelist()}
    assert {sha for *_, sha in setup.rows()} == set(expected)
    refs = setup.blob_rows()
    assert set(refs) == set(expected)
    assert {sha: setup.blobs.read(ref) for sha, ref in refs.items()} == expected
    assert setup.packs() == sorted({ref.pack for ref in refs.values()})
    assert len(setup.packs()) == 2  # one pack per batch
    assert setup.pack_bytes() == sum(map(len, expected.values()))  # nothing else in them
    assert not setup.blobs.exists(request.upload_key)


def test_a_picture_twice_in_one_batch_is_written_once(setup: Setup) -> None:
    extra = {"cat/copy-of-0.png": picture_of(0), "dog/copy-of-1.png": picture_of(1)}
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 2, "dog": 2}, extra=extra)

    setup.run(archive, batch_size=100)

    (pack,) = setup.packs()
    assert setup.pack_bytes() == sum(len(picture_of(number)) for number in range(4))
    assert set(setup.blob_rows()) == {sha256_hex(picture_of(number)) for number in range(4)}
    assert {ref.pack for ref in setup.blob_rows().values()} == {pack}


def test_importing_the_same_zip_again_finds_only_duplicates(setup: Setup) -> None:
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 4, "dog": 4})
    setup.run(archive)
    before = setup.rows()

    locations = setup.blob_rows()

    report, job = setup.run(archive)

    assert report["accepted"] == 0
    assert report["duplicates"] == 8
    assert report["classes"] == []
    assert job.status == "succeeded"
    assert setup.rows() == before
    assert setup.blob_rows() == locations  # still read from the first import's packs


def test_a_second_zip_adds_to_existing_classes(setup: Setup) -> None:
    setup.run(make_zip(setup.tmp_path / "first.zip", {"cat": 5}))

    # make_zip numbers pictures from 0 in every zip: these dogs are the very pictures imported as cats.
    report, _ = setup.run(make_zip(setup.tmp_path / "second.zip", {"dog": 5, "cat": 10}))

    assert split_counts(report) == {"cat": (8, 2)}
    assert report["rejected"] == 5
    assert all("'cat'" in reject["reason"] for reject in report["rejects"])
    cats = setup.catalog.call_sync(models.get_class, setup.owner_id, setup.model_id, "cat")
    assert (cats.train_images, cats.test_images) == (12, 3)
    assert setup.classes() == ["cat"]


@pytest.mark.parametrize(
    ("content", "limits", "quota", "code", "message"),
    [
        pytest.param(b"this is not a zip", ZipLimits(), QUOTA, "invalid_input", "not a zip file", id="not-a-zip"),
        pytest.param(None, ZipLimits(max_entries=3), QUOTA, "invalid_input", "more than the 3", id="too-many"),
        pytest.param(None, ZipLimits(), 100, "quota_exceeded", "Nothing was added", id="quota-too-small"),
    ],
)
def test_a_failed_zip_changes_nothing(
    setup: Setup, content: bytes | None, limits: ZipLimits, quota: int, code: str, message: str
) -> None:
    setup.run(make_zip(setup.tmp_path / "first.zip", {"cat": 2, "dog": 2}))
    rows, classes = setup.rows(), setup.classes()
    archive = setup.tmp_path / "second.zip"
    if content is None:
        make_zip(archive, {"cat": 3, "owl": 3}, size=(16, 16))
    else:
        archive.write_bytes(content)
    request = setup.request(archive, limits=limits, quota_bytes=quota)
    locations, packs = setup.blob_rows(), setup.packs()

    with pytest.raises((InvalidInput, QuotaExceeded)):
        run_import(request, setup.catalog, setup.blobs, serial_map)

    job = setup.job(request.job_id)
    assert job.status == "failed"
    assert job.result is None
    assert job.error["code"] == code
    assert message in job.error["detail"]
    assert job.message == job.error["detail"]
    assert (setup.rows(), setup.classes(), setup.blob_rows()) == (rows, classes, locations)
    assert not setup.blobs.exists(request.upload_key)
    if code == "invalid_input":  # refused while planning, before any picture was read
        assert setup.packs() == packs
    # Over quota, the pictures were already in packs: bytes nothing refers to, left for compaction.


def test_an_unexpected_error_fails_the_job_without_details(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 2, "dog": 2})
    request = setup.request(archive)

    def broken_mapper(fn, batches):
        raise OSError("disk on fire at /srv/secret/path")
        yield  # pragma: no cover - makes this a generator like the real mappers

    with pytest.raises(OSError):
        run_import(request, setup.catalog, setup.blobs, broken_mapper)

    job = setup.job(request.job_id)
    assert job.status == "failed"
    assert job.error["code"] == "internal"
    assert "/srv/secret" not in job.error["detail"]
    assert (setup.rows(), setup.blob_rows(), setup.packs()) == ([], {}, [])
    assert not setup.blobs.exists(request.upload_key)


def test_a_zip_with_only_rejects_still_succeeds_with_the_reasons(setup: Setup) -> None:
    archive = make_zip(setup.tmp_path / "junk.zip", {"cat": 0}, extra={"cat/a.jpg": b"text", "cat/b.png": b"\x89PNG"})

    report, job = setup.run(archive)

    assert job.status == "succeeded"
    assert (report["accepted"], report["rejected"]) == (0, 2)
    assert Counter(status for _, _, _, status, _, _, _ in setup.rows()) == {"rejected": 2}
    assert (setup.blob_rows(), setup.packs()) == ({}, [])  # no picture, so no pack kept


def test_the_report_has_the_time_of_each_phase(setup: Setup) -> None:
    report, job = setup.run(make_zip(setup.tmp_path / "pets.zip", {"cat": 2, "dog": 2}))

    assert set(report["phase_seconds"]) == {"plan", "decode", "save"}
    assert all(seconds >= 0 for seconds in report["phase_seconds"].values())
    assert sum(report["phase_seconds"].values()) <= report["seconds"] + 0.05
    assert job.result["phase_seconds"] == report["phase_seconds"]


# --- decode batches -----------------------------------------------------------------------------------------


def test_import_requests_choose_their_batch_size_by_default() -> None:
    request = ImportRequest("job", "usr", "mdl", "uploads/x.zip", "/blobs", ZipLimits(), MAX_PIXELS, QUOTA)

    assert (request.batch_size, request.parallelism) == (0, 2)


@pytest.mark.parametrize(
    ("entries", "parallelism", "size"),
    [
        pytest.param(10, 2, 256, id="tiny-zip-one-batch"),
        pytest.param(1_000, 2, 256, id="never-below-256"),
        pytest.param(6_000, 2, 1_000, id="three-per-worker"),
        pytest.param(6_001, 2, 1_001, id="rounded-up"),
        pytest.param(60_000, 16, 1_250, id="many-workers"),
        pytest.param(70_000, 1, 10_000, id="never-above-10000"),
        pytest.param(3_000, 1, 1_000, id="one-worker"),
        pytest.param(0, 4, 256, id="empty"),
    ],
)
def test_batch_size_for(entries: int, parallelism: int, size: int) -> None:
    assert batch_size_for(entries, parallelism) == size


def test_batch_size_zero_is_chosen_from_the_entries(setup: Setup) -> None:
    archive = make_zip(setup.tmp_path / "many.zip", {"cat": 150, "dog": 150}, size=(4, 4))
    sizes: list[int] = []

    def counting_map(fn, batches):
        sizes.extend(len(batch.entries) for batch in batches)
        yield from serial_map(fn, batches)

    report = run_import(setup.request(archive, batch_size=0, parallelism=1), setup.catalog, setup.blobs, counting_map)

    assert sizes == [256, 44]  # batch_size_for(300, 1) == 256
    assert report["accepted"] == 300
    assert len(setup.packs()) == 2


def batch_of(setup: Setup, archive: Path, **overrides: object) -> DecodeBatch:
    """All the entries of `archive` as one decode batch, the zip stored where an import puts it."""
    key = f"uploads/{archive.stem}.zip"
    setup.blobs.put_file(key, archive)
    plan = plan_zip(archive, ZipLimits())
    batch = DecodeBatch(str(setup.blobs.root), key, plan.entries, ZipLimits(), MAX_PIXELS)
    return replace(batch, **overrides)


def test_decode_batch_writes_one_pack_and_returns_columns(setup: Setup) -> None:
    extra = {"cat/notes.png": b"not a picture", "cat/copy-of-0.png": picture_of(0)}
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 3}, extra=extra)

    decoded = decode_batch(batch_of(setup, archive))

    assert isinstance(decoded, ImageColumns)
    rows = decoded.rows()
    assert [row.original_name for row in rows] == [
        "cat/0.png",
        "cat/1.png",
        "cat/2.png",
        "cat/notes.png",
        "cat/copy-of-0.png",
    ]
    (pack,) = setup.packs()
    pictures = [picture_of(number) for number in range(3)]
    assert [row.ref for row in rows[:3]] == [
        BlobRef(pack, sum(map(len, pictures[:number])), len(pictures[number])) for number in range(3)
    ]
    assert rows[4].ref == rows[0].ref  # the copy lands once
    assert setup.blobs.get(pack) == b"".join(pictures)
    notes = rows[3]
    assert (notes.ref, notes.sha256, notes.label) == (None, None, "cat")
    assert "not a picture" in notes.reject_reason
    assert [(row.sha256, row.size_bytes, row.width, row.format) for row in rows[:3]] == [
        (sha256_hex(data), len(data), 8, "PNG") for data in pictures
    ]


def test_a_batch_without_readable_pictures_keeps_no_pack(setup: Setup) -> None:
    archive = make_zip(setup.tmp_path / "junk.zip", {"cat": 0}, extra={"cat/a.png": b"text", "cat/b.jpg": b"\xff"})

    decoded = decode_batch(batch_of(setup, archive))

    assert [row.ref for row in decoded.rows()] == [None, None]
    assert setup.packs() == []


def test_a_batch_that_fails_midway_removes_its_pack(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 3})
    real_inspect = importer.inspect_image

    def inspect_then_crash(data: bytes, name: str, **kwargs: object):
        if name.endswith("2.png"):
            raise MemoryError("decoder ran out of memory")
        return real_inspect(data, name, **kwargs)

    monkeypatch.setattr(importer, "inspect_image", inspect_then_crash)

    with pytest.raises(MemoryError):
        decode_batch(batch_of(setup, archive))

    assert setup.packs() == []


def test_decode_entry_adds_only_readable_pictures_to_the_pack(setup: Setup) -> None:
    archive = make_zip(setup.tmp_path / "pets.zip", {"cat": 1}, extra={"cat/notes.png": b"text"})
    picture, notes = plan_zip(archive, ZipLimits()).entries

    with EntryReader(archive) as reader, setup.blobs.pack_writer() as pack:
        rejected = decode_entry(reader, notes, pack, ZipLimits(), MAX_PIXELS)
        accepted = decode_entry(reader, picture, pack, ZipLimits(), MAX_PIXELS)

    assert rejected.ref is None
    assert rejected.reject_reason
    assert accepted.ref == BlobRef(pack.key, 0, len(picture_of(0)))
    assert setup.blobs.read(accepted.ref) == picture_of(0)
    assert (accepted.sha256, accepted.label, accepted.split) == (sha256_hex(picture_of(0)), "cat", None)
