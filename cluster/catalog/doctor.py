"""What `classifly doctor` asks the catalog, and the repairs it makes there (each call one transaction).

The blob store is checked by `cluster.ops`; these functions only read and fix catalog rows, so they run the
same way in the catalog actor (platform up) and on the file opened directly (platform down).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from cluster.catalog.db import Connection, changes_serving, utcnow
from cluster.catalog.migrations import MIGRATIONS

BROKEN = "broken"


@dataclass(frozen=True)
class CatalogReferences:
    """Everything in the catalog that points into the blob store, and the work it believes is in progress."""

    packs: dict[str, int]  # pack key -> the end of the last picture in it (offset + length) the catalog expects
    pictures: int  # blob rows
    images_without_bytes: list[tuple[int, str, str]]  # accepted images whose sha256 has no blob row (id, model, sha)
    versions: list[tuple[str, int, str | None, str]]  # (model id, version, artifact uri, status)
    trial_artifacts: set[str]
    upload_keys: dict[str, str]  # job id -> its uploaded zip, for queued or running jobs
    job_ids: set[str]
    batch_results: set[str]  # result keys succeeded batch classifications promise
    active_jobs: list[tuple[str, str, str, datetime]]  # (id, kind, status, updated_at)
    active_runs: list[tuple[str, str, datetime]]  # (id, status, updated_at)
    migrations: list[int] = field(default_factory=list)
    known_migrations: int = 0
    counts: dict[str, int] = field(default_factory=dict)


COUNTED_TABLES = ("users", "models", "images", "blobs", "model_versions", "training_runs", "jobs", "tasks")


def table_counts(conn: Connection) -> dict[str, int]:
    """Rows per main table (reports, and the backup manifest)."""
    return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in COUNTED_TABLES}


def references(conn: Connection) -> CatalogReferences:
    """Read every reference into the blob store in one consistent view."""
    packs = dict(conn.execute("SELECT pack, max(pack_offset + length) FROM blobs GROUP BY pack").fetchall())
    (pictures,) = conn.execute("SELECT count(*) FROM blobs").fetchone()
    missing_rows = conn.execute(
        "SELECT i.id, i.model_id, i.sha256 FROM images i LEFT JOIN blobs b ON b.sha256 = i.sha256"
        " WHERE i.status = 'accepted' AND i.sha256 IS NOT NULL AND b.sha256 IS NULL ORDER BY i.id"
    ).fetchall()
    versions = conn.execute(
        "SELECT model_id, version, artifact_uri, status FROM model_versions ORDER BY model_id, version"
    ).fetchall()
    trial_artifacts = {
        row[0]
        for row in conn.execute(
            "SELECT json_extract_string(metrics, '$.artifact') FROM trials"
            " WHERE json_extract_string(metrics, '$.artifact') IS NOT NULL"
        ).fetchall()
    }
    jobs = conn.execute("SELECT id, kind, status, params, updated_at FROM jobs").fetchall()
    upload_keys, batch_results, active_jobs = {}, set(), []
    for job_id, kind, status, params, updated_at in jobs:
        if status in ("queued", "running"):
            active_jobs.append((job_id, kind, status, updated_at))
            key = json.loads(params or "{}").get("upload_key")
            if key:
                upload_keys[job_id] = key
        if kind == "classify_batch" and status == "succeeded":
            batch_results.add(f"batch-results/{job_id}.json")
    runs = conn.execute(
        "SELECT id, status, updated_at FROM training_runs WHERE status IN ('queued', 'running') ORDER BY id"
    ).fetchall()
    migrations = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()]
    return CatalogReferences(
        packs=packs,
        pictures=pictures,
        images_without_bytes=[tuple(row) for row in missing_rows],
        versions=[tuple(row) for row in versions],
        trial_artifacts=trial_artifacts,
        upload_keys=upload_keys,
        job_ids={row[0] for row in jobs},
        batch_results=batch_results,
        active_jobs=[tuple(row) for row in active_jobs],
        active_runs=[tuple(row) for row in runs],
        migrations=migrations,
        known_migrations=max(version for version, _, _ in MIGRATIONS),
        counts=table_counts(conn),
    )


def mark_lost_pictures(conn: Connection, packs: dict[str, int], reason: str) -> int:
    """Pictures whose bytes are gone (their pack is missing, or shorter than `packs[pack]` says: the pack's
    real size): their images stay listed, as rejected with `reason` (out of training, quota and the splits),
    and their blob rows are dropped; accepted images with no blob row at all get the same. Returns the images
    marked."""
    lost: set[str] = set()
    for pack, size in packs.items():
        lost.update(
            row[0]
            for row in conn.execute(
                "SELECT sha256 FROM blobs WHERE pack = ? AND pack_offset + length > ?", [pack, size]
            ).fetchall()
        )
    lost.update(
        row[0]
        for row in conn.execute(
            "SELECT i.sha256 FROM images i LEFT JOIN blobs b ON b.sha256 = i.sha256"
            " WHERE i.status = 'accepted' AND i.sha256 IS NOT NULL AND b.sha256 IS NULL"
        ).fetchall()
    )
    if not lost:
        return 0
    shas = sorted(lost)
    (marked,) = conn.execute(
        "SELECT count(*) FROM images WHERE status = 'accepted' AND sha256 IN (SELECT unnest(?))", [shas]
    ).fetchone()
    conn.execute(
        "UPDATE images SET status = 'rejected', reject_reason = ?, class_id = NULL, split = NULL"
        " WHERE status = 'accepted' AND sha256 IN (SELECT unnest(?))",
        [reason, shas],
    )
    conn.execute("DELETE FROM blobs WHERE sha256 IN (SELECT unnest(?))", [shas])
    return int(marked)


@changes_serving
def mark_broken_versions(conn: Connection, versions: list[tuple[str, int]], reason: str) -> int:
    """Versions whose stored model is gone: status 'broken' and the reason in their metrics (`problem`);
    classifying with one answers 409 with that reason. Returns how many were marked now."""
    marked = 0
    for model_id, version in versions:
        row = conn.execute(
            "SELECT metrics, status FROM model_versions WHERE model_id = ? AND version = ?", [model_id, version]
        ).fetchone()
        if row is None or row[1] == BROKEN:
            continue
        metrics = json.loads(row[0] or "{}")
        metrics["problem"] = reason
        conn.execute(
            "UPDATE model_versions SET status = ?, metrics = ? WHERE model_id = ? AND version = ?",
            [BROKEN, json.dumps(metrics), model_id, version],
        )
        marked += 1
    return marked


def mark_work_interrupted(conn: Connection, job_ids: list[str], run_ids: list[str]) -> tuple[int, int]:
    """Jobs and runs whose worker is gone: interrupted, as the catalog actor marks them at start (runs stay
    resumable). Only those still queued or running are touched. Returns (jobs, runs) marked."""
    now = utcnow()
    jobs = conn.execute(
        "UPDATE jobs SET status = 'interrupted', finished_at = ?, updated_at = ?,"
        " message = 'The platform stopped while this job was running. Nothing from it was kept; start it again.'"
        " WHERE id IN (SELECT unnest(?)) AND status IN ('queued', 'running') RETURNING id",
        [now, now, job_ids],
    ).fetchall()
    runs = conn.execute(
        "UPDATE training_runs SET status = 'interrupted', finished_at = ?, updated_at = ?"
        " WHERE id IN (SELECT unnest(?)) AND status IN ('queued', 'running') RETURNING id",
        [now, now, run_ids],
    ).fetchall()
    return len(jobs), len(runs)


def pictures_in_pack(conn: Connection, pack: str) -> list[tuple[str, int, int]]:
    """(sha256, offset, length) of every picture the catalog places in `pack`, front to back."""
    return [
        tuple(row)
        for row in conn.execute(
            "SELECT sha256, pack_offset, length FROM blobs WHERE pack = ? ORDER BY pack_offset", [pack]
        ).fetchall()
    ]
