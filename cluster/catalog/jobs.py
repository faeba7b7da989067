"""Background jobs (zip imports and later long operations): their status, progress and result."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cluster.catalog.db import Connection, new_id, utcnow
from pipelines.errors import Conflict, NotFound

ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class JobRecord:
    id: str
    owner_id: str
    model_id: str | None
    kind: str
    status: str
    progress_done: int
    progress_total: int
    message: str
    params: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime


_JOB_COLUMNS = (
    "id, owner_id, model_id, kind, status, progress_done, progress_total, message, params, result, error,"
    " created_at, started_at, finished_at, updated_at"
)


def _job(row: tuple) -> JobRecord:
    values = list(row)
    values[8] = json.loads(values[8]) if values[8] else {}
    values[9] = json.loads(values[9]) if values[9] else None
    values[10] = json.loads(values[10]) if values[10] else None
    return JobRecord(*values)


def create_job(
    conn: Connection,
    owner_id: str,
    kind: str,
    *,
    model_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> JobRecord:
    """Queue a job; a model may have only one import running at a time."""
    if model_id is not None:
        from cluster.catalog.models import get_owned_model

        get_owned_model(conn, owner_id, model_id)
        busy = conn.execute(
            "SELECT id FROM jobs WHERE model_id = ? AND kind = ? AND status IN ('queued', 'running')",
            [model_id, kind],
        ).fetchone()
        if busy:
            raise Conflict(f"Job '{busy[0]}' is already doing this for the model. Wait until it finishes.")
    job_id = new_id("job")
    now = utcnow()
    conn.execute(
        "INSERT INTO jobs (id, owner_id, model_id, kind, status, params, message, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, 'queued', ?, 'Waiting to start', ?, ?)",
        [job_id, owner_id, model_id, kind, json.dumps(params or {}), now, now],
    )
    return get_job(conn, job_id)


def update_params(conn: Connection, job_id: str, params: dict[str, Any]) -> JobRecord:
    """Replace a queued job's parameters (e.g. once its upload is stored under the job's id)."""
    conn.execute("UPDATE jobs SET params = ?, updated_at = ? WHERE id = ?", [json.dumps(params), utcnow(), job_id])
    return get_job(conn, job_id)


def get_job(conn: Connection, job_id: str) -> JobRecord:
    """A job by id, for the platform's own use."""
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", [job_id]).fetchone()
    if row is None:
        raise NotFound(f"There is no job '{job_id}'.")
    return _job(row)


def get_owned_job(conn: Connection, owner_id: str, job_id: str) -> JobRecord:
    """A job if `owner_id` started it; NotFound otherwise, in the same words whether it is missing or someone
    else's (different words would tell a caller which ids exist)."""
    row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ? AND owner_id = ?", [job_id, owner_id]).fetchone()
    if row is None:
        raise NotFound(f"There is no job '{job_id}' in your account.")
    return _job(row)


def list_jobs(
    conn: Connection, owner_id: str, *, model_id: str | None = None, kind: str | None = None, limit: int = 50
) -> list[JobRecord]:
    """The owner's most recent jobs, optionally for one model or of one kind."""
    where, params = ["owner_id = ?"], [owner_id]
    if model_id is not None:
        where.append("model_id = ?")
        params.append(model_id)
    if kind is not None:
        where.append("kind = ?")
        params.append(kind)
    rows = conn.execute(
        f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?",
        [*params, limit],
    ).fetchall()
    return [_job(row) for row in rows]


def start_job(conn: Connection, job_id: str, *, total: int = 0, message: str = "Started") -> JobRecord:
    """Mark a queued job as running."""
    job = get_job(conn, job_id)
    if job.status != "queued":
        raise Conflict(f"Job '{job_id}' is {job.status}; only a queued job can start.")
    now = utcnow()
    conn.execute(
        "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ?, progress_total = ?, message = ?"
        " WHERE id = ?",
        [now, now, total, message, job_id],
    )
    return get_job(conn, job_id)


def report_progress(conn: Connection, job_id: str, done: int, total: int, message: str) -> None:
    """Record how far a running job has come."""
    conn.execute(
        "UPDATE jobs SET progress_done = ?, progress_total = ?, message = ?, updated_at = ?"
        " WHERE id = ? AND status = 'running'",
        [done, total, message, utcnow(), job_id],
    )


def finish_job(
    conn: Connection,
    job_id: str,
    *,
    status: str,
    message: str,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> JobRecord:
    """Mark a job succeeded, failed or cancelled, with its result or its error."""
    if status not in ("succeeded", "failed", "cancelled"):
        raise ValueError(f"not a final job status: {status}")
    now = utcnow()
    conn.execute(
        "UPDATE jobs SET status = ?, message = ?, result = ?, error = ?, finished_at = ?, updated_at = ?,"
        " progress_done = CASE WHEN ? = 'succeeded' THEN progress_total ELSE progress_done END WHERE id = ?",
        [
            status,
            message,
            json.dumps(result) if result is not None else None,
            json.dumps(error) if error is not None else None,
            now,
            now,
            status,
            job_id,
        ],
    )
    return get_job(conn, job_id)


def mark_interrupted(conn: Connection) -> list[str]:
    """At start-up: jobs left queued or running by a stopped platform are marked interrupted; returns their ids."""
    ids = [row[0] for row in conn.execute("SELECT id FROM jobs WHERE status IN ('queued', 'running')").fetchall()]
    if ids:
        now = utcnow()
        conn.execute(
            "UPDATE jobs SET status = 'interrupted', finished_at = ?, updated_at = ?,"
            " message = 'The platform stopped while this job was running. Nothing from it was kept; start it again.'"
            " WHERE id IN (SELECT unnest(?))",
            [now, now, ids],
        )
    return ids


def request_expansion(conn: Connection, owner_id: str, model_id: str, reason: str) -> tuple[JobRecord, bool]:
    """Ask for the model's head to be refitted on its data as it is now. Changes made close together share one
    job: while an expansion job is still queued, later requests join it (their reasons are added) instead of
    queueing another; a running one reads the data when it starts, so a request during it queues the next.
    Returns (the job, whether it was newly created and must be started).
    """
    from cluster.catalog.models import get_owned_model

    get_owned_model(conn, owner_id, model_id)
    queued = conn.execute(
        "SELECT id, params FROM jobs WHERE model_id = ? AND kind = 'expansion' AND status = 'queued'"
        " ORDER BY created_at LIMIT 1",
        [model_id],
    ).fetchone()
    if queued:
        params = json.loads(queued[1] or "{}")
        params["reasons"] = [*params.get("reasons", []), reason][-50:]
        conn.execute(
            "UPDATE jobs SET params = ?, updated_at = ? WHERE id = ?", [json.dumps(params), utcnow(), queued[0]]
        )
        return get_job(conn, queued[0]), False
    job_id = new_id("job")
    now = utcnow()
    conn.execute(
        "INSERT INTO jobs (id, owner_id, model_id, kind, status, params, message, created_at, updated_at)"
        " VALUES (?, ?, ?, 'expansion', 'queued', ?, 'Waiting to update the model', ?, ?)",
        [job_id, owner_id, model_id, json.dumps({"reasons": [reason]}), now, now],
    )
    return get_job(conn, job_id), True


def seconds_since_update(conn: Connection, job_id: str) -> float:
    """How long ago the job row last changed (a queued expansion changes each time a request joins it)."""
    job = get_job(conn, job_id)
    return max(0.0, (utcnow() - job.updated_at).total_seconds())
