"""The images of a model's dataset: adding (de-duplicated, quota-checked, split), listing, moving, deleting."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pyarrow as pa

from cluster.blobs import BlobRef
from cluster.catalog.db import Connection, utcnow
from cluster.catalog.models import ensure_classes, get_owned_model
from pipelines.errors import InvalidInput, NotFound, QuotaExceeded

Split = Literal["train", "test"]
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class NewImage:
    """One file offered to a dataset, already decoded (or rejected) by the pipelines."""

    label: str
    original_name: str
    size_bytes: int
    sha256: str | None = None
    split: Split | None = None
    reject_reason: str | None = None
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    is_gray: bool | None = None
    ref: BlobRef | None = None  # where its bytes were written (a pack), for pictures that could be read


@dataclass(frozen=True)
class Outcome:
    """What became of one offered file: accepted (with its id), duplicate, or rejected (with the reason)."""

    original_name: str
    label: str
    status: Literal["accepted", "duplicate", "rejected"]
    image_id: int | None = None
    split: Split | None = None
    reason: str | None = None


_NEW_IMAGE_FIELDS = (
    "label", "original_name", "size_bytes", "sha256", "split", "reject_reason",
    "width", "height", "mode", "format", "is_gray",
)  # fmt: skip
_OUTCOME_FIELDS = ("original_name", "label", "status", "image_id", "split", "reason")


@dataclass(frozen=True)
class ImageColumns:
    """Many offered files as plain columns: ~10x cheaper to send between Ray processes than NewImage objects."""

    columns: dict[str, list]

    @classmethod
    def of(cls, images: Iterable[NewImage]) -> ImageColumns:
        images = list(images)
        columns = {name: [getattr(image, name) for image in images] for name in _NEW_IMAGE_FIELDS}
        columns["ref"] = [(r.pack, r.offset, r.length) if (r := image.ref) else None for image in images]
        return cls(columns)

    @classmethod
    def concat(cls, parts: Iterable[ImageColumns]) -> ImageColumns:
        merged: dict[str, list] = {name: [] for name in (*_NEW_IMAGE_FIELDS, "ref")}
        for part in parts:
            for name, values in part.columns.items():
                merged[name].extend(values)
        return cls(merged)

    def __len__(self) -> int:
        return len(self.columns["label"])

    def rows(self) -> list[NewImage]:
        refs = [BlobRef(*ref) if ref else None for ref in self.columns["ref"]]
        return [
            NewImage(*values, ref=ref)
            for *values, ref in zip(*(self.columns[name] for name in _NEW_IMAGE_FIELDS), refs, strict=True)
        ]


@dataclass(frozen=True)
class OutcomeColumns:
    """What became of each offered file, as columns (see ImageColumns for why)."""

    columns: dict[str, list]

    def __len__(self) -> int:
        return len(self.columns["status"])

    def rows(self) -> list[Outcome]:
        return [Outcome(*values) for values in zip(*(self.columns[name] for name in _OUTCOME_FIELDS), strict=True)]


@dataclass(frozen=True)
class ImageRecord:
    id: int
    model_id: str
    class_id: int | None
    label: str
    split: Split | None
    status: str
    reject_reason: str | None
    original_name: str
    sha256: str | None
    size_bytes: int
    width: int | None
    height: int | None
    mode: str | None
    format: str | None
    is_gray: bool | None
    job_id: str | None
    created_at: datetime


_IMAGE_COLUMNS = (
    "id, model_id, class_id, label, split, status, reject_reason, original_name, sha256, size_bytes,"
    " width, height, mode, format, is_gray, job_id, created_at"
)


def storage_used(conn: Connection, owner_id: str) -> int:
    """Bytes of distinct pictures the owner keeps (a picture in two models counts once)."""
    (used,) = conn.execute(
        "SELECT coalesce(sum(size_bytes), 0) FROM (SELECT DISTINCT i.sha256, i.size_bytes FROM images i"
        " JOIN models m ON m.id = i.model_id WHERE m.owner_id = ? AND i.status = 'accepted')",
        [owner_id],
    ).fetchone()
    return int(used)


def add_images(
    conn: Connection,
    owner_id: str,
    model_id: str,
    images: list[NewImage] | ImageColumns,
    *,
    quota_bytes: int,
    job_id: str | None = None,
    require_usable: bool = False,
) -> OutcomeColumns:
    """Add offered files to the dataset in one go: de-duplicate, check the quota, assign splits, insert.

    Same picture already in the same class: a duplicate (not stored twice). Same picture in another class:
    rejected, because one picture cannot teach two answers. Files without a split go to test so that each
    class keeps about 20 % of its pictures for testing. With `require_usable`, an offer in which no file
    is usable changes nothing and raises InvalidInput listing the reasons.
    """
    get_owned_model(conn, owner_id, model_id)
    # Bulk adds make tens of thousands of short-lived objects and no cycles; a collection would walk the
    # actor's whole heap each time (see cluster.importer.paused_gc).
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _add_images(conn, model_id, owner_id, images, quota_bytes, job_id, require_usable)
    finally:
        if was_enabled:
            gc.enable()


def _add_images(
    conn: Connection,
    model_id: str,
    owner_id: str,
    images: list[NewImage] | ImageColumns,
    quota_bytes: int,
    job_id: str | None,
    require_usable: bool,
) -> OutcomeColumns:
    if isinstance(images, ImageColumns):
        images = images.rows()
    known = dict(
        conn.execute(
            "SELECT sha256, label FROM images WHERE model_id = ? AND status = 'accepted'", [model_id]
        ).fetchall()
    )
    outcomes: list[Outcome] = []
    accepted: list[NewImage] = []
    for image in images:
        if image.reject_reason is not None or image.sha256 is None:
            reason = image.reject_reason or "The file could not be read."
            outcomes.append(Outcome(image.original_name, image.label, "rejected", reason=reason))
            continue
        owner_label = known.get(image.sha256)
        if owner_label == image.label:
            outcomes.append(
                Outcome(
                    image.original_name,
                    image.label,
                    "duplicate",
                    reason="The same picture is already in this class.",
                )
            )
            continue
        if owner_label is not None:
            reason = f"The same picture is already in class '{owner_label}'; one picture cannot teach two answers."
            outcomes.append(Outcome(image.original_name, image.label, "rejected", reason=reason))
            continue
        known[image.sha256] = image.label
        accepted.append(image)
        outcomes.append(Outcome(image.original_name, image.label, "accepted"))

    if require_usable and all(outcome.status == "rejected" for outcome in outcomes):
        reasons = "; ".join(f"'{o.original_name}': {o.reason}" for o in outcomes[:5])
        raise InvalidInput(
            f"None of the files could be used, so nothing was added. {reasons}",
            extra={"results": [{"name": o.original_name, "status": o.status, "reason": o.reason} for o in outcomes]},
        )
    _check_quota(conn, owner_id, accepted, quota_bytes)
    class_ids = ensure_classes(conn, owner_id, model_id, sorted({image.label for image in accepted}))
    splits = _assign_splits(conn, model_id, accepted)
    all_class_ids = dict(conn.execute("SELECT name, id FROM classes WHERE model_id = ?", [model_id]).fetchall())
    first_id = _insert(conn, model_id, images, outcomes, splits, {**all_class_ids, **class_ids}, job_id)
    _record_blobs(conn, accepted)

    result: dict[str, list] = {name: [] for name in _OUTCOME_FIELDS}
    next_id = first_id
    accepted_index = 0
    for outcome in outcomes:
        image_id, split = None, None
        if outcome.status != "duplicate":
            image_id = next_id
            next_id += 1
        if outcome.status == "accepted":
            split = splits[accepted_index]
            accepted_index += 1
        for name, value in zip(
            _OUTCOME_FIELDS,
            (outcome.original_name, outcome.label, outcome.status, image_id, split, outcome.reason),
            strict=True,
        ):
            result[name].append(value)
    return OutcomeColumns(result)


def _check_quota(conn: Connection, owner_id: str, accepted: list[NewImage], quota_bytes: int) -> None:
    owned = {
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT i.sha256 FROM images i JOIN models m ON m.id = i.model_id"
            " WHERE m.owner_id = ? AND i.status = 'accepted'",
            [owner_id],
        ).fetchall()
    }
    new_bytes = sum({image.sha256: image.size_bytes for image in accepted if image.sha256 not in owned}.values())
    used = storage_used(conn, owner_id)
    if used + new_bytes > quota_bytes:
        raise QuotaExceeded(
            f"These pictures need {_mb(new_bytes)} but only {_mb(max(quota_bytes - used, 0))} of your"
            f" {_mb(quota_bytes)} storage is free. Nothing was added. Delete some pictures or models, or ask"
            " for a clean-up proposal (GET /v1/me/storage/cleanup) that keeps every class balanced.",
            extra={"used_bytes": used, "quota_bytes": quota_bytes, "needed_bytes": new_bytes},
        )


def _mb(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:,.1f} MB"


def _assign_splits(conn: Connection, model_id: str, accepted: list[NewImage]) -> list[Split]:
    counts = Counter()
    for label, split, count in conn.execute(
        "SELECT label, split, count(*) FROM images WHERE model_id = ? AND status = 'accepted' GROUP BY ALL",
        [model_id],
    ).fetchall():
        counts[(label, split)] = count
    splits: list[Split] = []
    for image in accepted:
        split = image.split
        if split is None:
            test, total = (
                counts[(image.label, "test")],
                counts[(image.label, "train")] + counts[(image.label, "test")],
            )
            split = "test" if total >= 1 and test < round((total + 1) * TEST_FRACTION) else "train"
        counts[(image.label, split)] += 1
        splits.append(split)
    return splits


def _insert(
    conn: Connection,
    model_id: str,
    images: list[NewImage],
    outcomes: list[Outcome],
    splits: list[Split],
    class_ids: dict[str, int],
    job_id: str | None,
) -> int:
    kept = [(image, outcome) for image, outcome in zip(images, outcomes, strict=True) if outcome.status != "duplicate"]
    if not kept:
        return 0
    # Ids are taken as one block so a bulk insert of 70,000 rows is one statement, not 70,000.
    (last_id,) = conn.execute(
        "UPDATE counters SET value = value + ? WHERE name = 'images' RETURNING value", [len(kept)]
    ).fetchone()
    first_id = last_id - len(kept) + 1
    split_iter = iter(splits)
    now = utcnow()
    columns: dict[str, list] = {name: [] for name in _IMAGE_COLUMNS.replace(" ", "").split(",")}
    for offset, (image, outcome) in enumerate(kept):
        is_accepted = outcome.status == "accepted"
        values = {
            "id": first_id + offset,
            "model_id": model_id,
            "class_id": class_ids.get(image.label) if is_accepted or image.label in class_ids else None,
            "label": image.label,
            "split": next(split_iter) if is_accepted else None,
            "status": "accepted" if is_accepted else "rejected",
            "reject_reason": outcome.reason if not is_accepted else None,
            "original_name": image.original_name,
            "sha256": image.sha256,
            "size_bytes": image.size_bytes,
            "width": image.width,
            "height": image.height,
            "mode": image.mode,
            "format": image.format,
            "is_gray": image.is_gray,
            "job_id": job_id,
            "created_at": now,
        }
        for name, value in values.items():
            columns[name].append(value)
    # DuckDB refuses register() while an earlier fetchone() result is still open; finish it first.
    conn.execute("SELECT 1").fetchall()
    conn.register("incoming_images", pa.table(columns))
    try:
        conn.execute(f"INSERT INTO images ({_IMAGE_COLUMNS}) SELECT {_IMAGE_COLUMNS} FROM incoming_images")
    finally:
        conn.unregister("incoming_images")
    return first_id


def _record_blobs(conn: Connection, accepted: list[NewImage]) -> None:
    """Remember where new pictures' bytes lie; a picture already stored elsewhere keeps its first location."""
    rows = {image.sha256: image.ref for image in accepted if image.ref is not None}
    if not rows:
        return
    table = pa.table(
        {
            "sha256": list(rows),
            "pack": [ref.pack for ref in rows.values()],
            "pack_offset": [ref.offset for ref in rows.values()],
            "length": [ref.length for ref in rows.values()],
        }
    )
    conn.execute("SELECT 1").fetchall()
    conn.register("incoming_blobs", table)
    try:
        conn.execute(
            "INSERT INTO blobs SELECT sha256, pack, pack_offset, length, ? FROM incoming_blobs"
            " ON CONFLICT (sha256) DO NOTHING",
            [utcnow()],
        )
    finally:
        conn.unregister("incoming_blobs")


def blob_refs(conn: Connection, shas: list[str]) -> dict[str, BlobRef]:
    """Where each of these pictures lies (platform use: training and serving read through this)."""
    rows = conn.execute(
        "SELECT b.sha256, b.pack, b.pack_offset, b.length FROM blobs b JOIN (SELECT unnest(?) AS sha256) s"
        " ON s.sha256 = b.sha256",
        [shas],
    ).fetchall()
    return {sha: BlobRef(pack, offset, length) for sha, pack, offset, length in rows}


def image_blob(conn: Connection, owner_id: str, model_id: str, image_id: int) -> tuple[ImageRecord, BlobRef]:
    """An image of the model and where its bytes lie; NotFound for rejects (their bytes were not kept)."""
    image = get_image(conn, owner_id, model_id, image_id)
    ref = blob_refs(conn, [image.sha256]).get(image.sha256) if image.sha256 and image.status == "accepted" else None
    if ref is None:
        raise NotFound(f"Image {image_id} was rejected ({image.reject_reason}), so its file was not kept.")
    return image, ref


def prune_blobs(conn: Connection, shas: list[str]) -> list[str]:
    """Forget the locations of those of `shas` nothing refers to any more; returns them.

    Their bytes stay in their packs until `compact` rewrites the packs; the quota counts rows, so the
    owner's space is free at once.
    """
    if not shas:
        return []
    rows = conn.execute(
        "DELETE FROM blobs WHERE sha256 IN (SELECT unnest(?))"
        " AND sha256 NOT IN (SELECT sha256 FROM images WHERE sha256 IS NOT NULL AND status = 'accepted')"
        " AND sha256 NOT IN (SELECT sample_sha256 FROM models WHERE sample_sha256 IS NOT NULL)"
        # A run that may still (re)start trains on its snapshot: keep those pictures.
        " AND sha256 NOT IN (SELECT s.sha256 FROM run_images s JOIN training_runs r ON r.id = s.run_id"
        "   WHERE r.status IN ('queued', 'running', 'interrupted', 'failed'))"
        " RETURNING sha256",
        [shas],
    ).fetchall()
    return [row[0] for row in rows]


def list_images(
    conn: Connection,
    owner_id: str,
    model_id: str,
    *,
    label: str | None = None,
    split: str | None = None,
    status: str | None = "accepted",
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[ImageRecord], int]:
    """A page of the model's images (filter by class, split, status) and the total that match."""
    get_owned_model(conn, owner_id, model_id)
    where, params = ["model_id = ?"], [model_id]
    for column, value in (("label", label), ("split", split), ("status", status)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = " AND ".join(where)
    rows = conn.execute(
        f"SELECT {_IMAGE_COLUMNS} FROM images WHERE {clause} ORDER BY id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    (total,) = conn.execute(f"SELECT count(*) FROM images WHERE {clause}", params).fetchone()
    return [ImageRecord(*row) for row in rows], total


def get_image(conn: Connection, owner_id: str, model_id: str, image_id: int) -> ImageRecord:
    """One image of the model."""
    get_owned_model(conn, owner_id, model_id)
    row = conn.execute(
        f"SELECT {_IMAGE_COLUMNS} FROM images WHERE id = ? AND model_id = ?", [image_id, model_id]
    ).fetchone()
    if row is None:
        raise NotFound(f"Model '{model_id}' has no image {image_id}.")
    return ImageRecord(*row)


def update_image(
    conn: Connection,
    owner_id: str,
    model_id: str,
    image_id: int,
    *,
    label: str | None = None,
    split: str | None = None,
) -> ImageRecord:
    """Move an image to another class (created if needed) and/or to the other split."""
    image = get_image(conn, owner_id, model_id, image_id)
    if image.status != "accepted":
        raise InvalidInput(f"Image {image_id} was rejected ({image.reject_reason}); upload a readable copy instead.")
    if split is not None and split not in ("train", "test"):
        raise InvalidInput("The split is either 'train' or 'test'.", field="split")
    if label is not None and label != image.label:
        from pipelines.zips import validate_class_name

        clean = validate_class_name(label)
        class_id = ensure_classes(conn, owner_id, model_id, [clean])[clean]
        conn.execute("UPDATE images SET label = ?, class_id = ? WHERE id = ?", [clean, class_id, image_id])
    if split is not None and split != image.split:
        conn.execute("UPDATE images SET split = ? WHERE id = ?", [split, image_id])
    return get_image(conn, owner_id, model_id, image_id)


def delete_images(conn: Connection, owner_id: str, model_id: str, image_ids: list[int]) -> list[str]:
    """Delete images of the model (all or none); returns the sha256 of pictures no longer stored for anyone."""
    get_owned_model(conn, owner_id, model_id)
    if not image_ids:
        return []
    found = conn.execute(
        "SELECT id, sha256 FROM images WHERE model_id = ? AND id IN (SELECT unnest(?))", [model_id, image_ids]
    ).fetchall()
    missing = set(image_ids) - {row[0] for row in found}
    if missing:
        raise NotFound(f"Model '{model_id}' has no image {sorted(missing)[0]}.")
    conn.execute("DELETE FROM images WHERE model_id = ? AND id IN (SELECT unnest(?))", [model_id, image_ids])
    return prune_blobs(conn, sorted({row[1] for row in found if row[1]}))


def known_shas(conn: Connection, owner_id: str, model_id: str, shas: list[str]) -> set[str]:
    """Those of `shas` that the model's dataset already holds."""
    get_owned_model(conn, owner_id, model_id)
    if not shas:
        return set()
    rows = conn.execute(
        "SELECT DISTINCT i.sha256 FROM images i JOIN (SELECT unnest(?) AS sha256) o ON o.sha256 = i.sha256"
        " WHERE i.model_id = ? AND i.status = 'accepted'",
        [shas, model_id],
    ).fetchall()
    return {row[0] for row in rows}


def training_view(conn: Connection, owner_id: str, model_id: str) -> list[tuple[int, str, str, str]]:
    """(image id, class name, split, sha256) of every accepted image: what a training run snapshots."""
    get_owned_model(conn, owner_id, model_id)
    return conn.execute(
        "SELECT id, label, split, sha256 FROM images WHERE model_id = ? AND status = 'accepted' ORDER BY id",
        [model_id],
    ).fetchall()
