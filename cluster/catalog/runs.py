"""Training runs (with the exact dataset snapshot they train on), their trials, and published model versions."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cluster.blobs import BlobRef
from cluster.catalog.db import Connection, changes_serving, new_id, utcnow
from cluster.catalog.models import get_owned_model
from pipelines.errors import Conflict, InvalidInput, NotFound

ACTIVE_RUN = ("queued", "running")
MIN_CLASSES = 2


@dataclass(frozen=True)
class RunRecord:
    id: str
    model_id: str
    owner_id: str
    status: str
    config: dict[str, Any]
    progress: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    cancel_requested: bool
    ray_job_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    num_images: int = 0


@dataclass(frozen=True)
class TrialRecord:
    run_id: str
    trial_id: str
    spec: dict[str, Any]
    status: str
    epochs: int
    metrics: dict[str, Any]
    cost_s: float | None
    stop_reason: str | None


@dataclass(frozen=True)
class SnapshotImage:
    image_id: int
    label: str
    split: str
    sha256: str
    ref: BlobRef


@dataclass(frozen=True)
class VersionRecord:
    model_id: str
    version: int
    source: str
    run_id: str | None
    classes: list[str]
    backbone: str | None
    preprocessing: dict[str, Any] | None
    artifact_uri: str | None
    metrics: dict[str, Any]
    status: str
    created_at: datetime
    model_options: dict[str, Any] = field(default_factory=dict)  # the model's options; set by version_to_serve


_RUN_COLUMNS = (
    "r.id, r.model_id, r.owner_id, r.status, r.config, r.progress, r.result, r.error, r.cancel_requested,"
    " r.ray_job_id, r.created_at, r.started_at, r.finished_at, r.updated_at,"
    " (SELECT count(*) FROM run_images s WHERE s.run_id = r.id)"
)


def _json(value: Any, default: Any) -> Any:
    return json.loads(value) if value else default


def _run(row: tuple) -> RunRecord:
    values = list(row)
    values[4] = _json(values[4], {})
    values[5] = _json(values[5], {})
    values[6] = _json(values[6], None)
    values[7] = _json(values[7], None)
    return RunRecord(*values)


def create_run(conn: Connection, owner_id: str, model_id: str, config: dict[str, Any]) -> RunRecord:
    """Queue a training run on a snapshot of the model's dataset as it is now."""
    get_owned_model(conn, owner_id, model_id)
    busy = conn.execute(
        "SELECT id FROM training_runs WHERE model_id = ? AND status IN ('queued', 'running')", [model_id]
    ).fetchone()
    if busy:
        raise Conflict(f"Run '{busy[0]}' is already training this model. Wait for it or cancel it first.")
    counts = conn.execute(
        "SELECT label, count(*) FILTER (WHERE split = 'train'), count(*) FILTER (WHERE split = 'test')"
        " FROM images WHERE model_id = ? AND status = 'accepted' GROUP BY label ORDER BY label",
        [model_id],
    ).fetchall()
    usable = [label for label, train, _ in counts if train >= 2]
    if len(usable) < MIN_CLASSES:
        raise InvalidInput(
            "Training needs at least two classes with at least two training pictures each. "
            "Add pictures on the Data tab (or POST /v1/models/{id}/imports), then train again."
        )
    without_test = [label for label, _, test in counts if test == 0]
    if without_test:
        raise InvalidInput(
            f"Class '{without_test[0]}' has no test pictures, so the model could not be checked. "
            "Add a few more pictures to it (a fifth of each class is kept for testing)."
        )
    run_id = new_id("run")
    now = utcnow()
    conn.execute(
        "INSERT INTO training_runs (id, model_id, owner_id, status, config, progress, created_at, updated_at)"
        " VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
        [
            run_id,
            model_id,
            owner_id,
            json.dumps(config),
            json.dumps({"stage": "queued", "fraction": 0.0, "message": "Waiting to start"}),
            now,
            now,
        ],
    )
    conn.execute(
        "INSERT INTO run_images SELECT ?, id, label, split, sha256 FROM images"
        " WHERE model_id = ? AND status = 'accepted'",
        [run_id, model_id],
    )
    return get_owned_run(conn, owner_id, run_id)


def get_run(conn: Connection, run_id: str) -> RunRecord:
    """A run by id (platform use)."""
    row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM training_runs r WHERE r.id = ?", [run_id]).fetchone()
    if row is None:
        raise NotFound(f"There is no training run '{run_id}'.")
    return _run(row)


def get_owned_run(conn: Connection, owner_id: str, run_id: str) -> RunRecord:
    """A run of one of the owner's models; NotFound for anyone else's, in the same words as for a missing one."""
    row = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM training_runs r WHERE r.id = ? AND r.owner_id = ?", [run_id, owner_id]
    ).fetchone()
    if row is None:
        raise NotFound(f"There is no training run '{run_id}' in your account.")
    return _run(row)


def list_runs(conn: Connection, owner_id: str, model_id: str, *, limit: int = 50) -> list[RunRecord]:
    """The model's runs, newest first."""
    get_owned_model(conn, owner_id, model_id)
    rows = conn.execute(
        f"SELECT {_RUN_COLUMNS} FROM training_runs r WHERE r.model_id = ? ORDER BY r.created_at DESC LIMIT ?",
        [model_id, limit],
    ).fetchall()
    return [_run(row) for row in rows]


def run_snapshot(conn: Connection, run_id: str) -> list[SnapshotImage]:
    """The exact images (and where their bytes lie) a run trains and tests on."""
    rows = conn.execute(
        "SELECT s.image_id, s.label, s.split, s.sha256, b.pack, b.pack_offset, b.length FROM run_images s"
        " JOIN blobs b ON b.sha256 = s.sha256 WHERE s.run_id = ? ORDER BY s.image_id",
        [run_id],
    ).fetchall()
    return [
        SnapshotImage(i, label, split, sha, BlobRef(pack, offset, length))
        for i, label, split, sha, pack, offset, length in rows
    ]


def start_run(conn: Connection, run_id: str, *, ray_job_id: str | None = None) -> RunRecord:
    """Mark a queued run as running."""
    run = get_run(conn, run_id)
    if run.status != "queued":
        raise Conflict(f"Run '{run_id}' is {run.status}; only a queued run can start.")
    now = utcnow()
    conn.execute(
        "UPDATE training_runs SET status = 'running', started_at = ?, updated_at = ?, ray_job_id = ? WHERE id = ?",
        [now, now, ray_job_id, run_id],
    )
    return get_run(conn, run_id)


def report_run_progress(conn: Connection, run_id: str, progress: dict[str, Any]) -> bool:
    """Record a running run's progress; returns whether the user asked to cancel it."""
    conn.execute(
        "UPDATE training_runs SET progress = ?, updated_at = ? WHERE id = ? AND status = 'running'",
        [json.dumps(progress), utcnow(), run_id],
    )
    (cancel,) = conn.execute("SELECT cancel_requested FROM training_runs WHERE id = ?", [run_id]).fetchone()
    return bool(cancel)


def request_cancel(conn: Connection, owner_id: str, run_id: str) -> RunRecord:
    """Ask a run to stop; a queued run stops at once, a running one at its next progress report."""
    run = get_owned_run(conn, owner_id, run_id)
    if run.status not in ACTIVE_RUN:
        raise Conflict(f"Run '{run_id}' is already {run.status}.")
    now = utcnow()
    if run.status == "queued":
        conn.execute(
            "UPDATE training_runs SET status = 'cancelled', cancel_requested = TRUE, finished_at = ?, updated_at = ?"
            " WHERE id = ?",
            [now, now, run_id],
        )
    else:
        conn.execute("UPDATE training_runs SET cancel_requested = TRUE, updated_at = ? WHERE id = ?", [now, run_id])
    return get_run(conn, run_id)


def finish_run(
    conn: Connection,
    run_id: str,
    *,
    status: str,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    progress: dict[str, Any] | None = None,
) -> RunRecord:
    """Mark a run succeeded, failed or cancelled."""
    if status not in ("succeeded", "failed", "cancelled"):
        raise ValueError(f"not a final run status: {status}")
    now = utcnow()
    current = get_run(conn, run_id)
    conn.execute(
        "UPDATE training_runs SET status = ?, result = ?, error = ?, progress = ?, finished_at = ?, updated_at = ?"
        " WHERE id = ?",
        [
            status,
            json.dumps(result) if result is not None else None,
            json.dumps(error) if error is not None else None,
            json.dumps(progress if progress is not None else current.progress),
            now,
            now,
            run_id,
        ],
    )
    return get_run(conn, run_id)


def mark_interrupted_runs(conn: Connection) -> list[str]:
    """At start-up: runs left queued or running by a stopped platform are marked interrupted (resumable)."""
    ids = [
        row[0] for row in conn.execute("SELECT id FROM training_runs WHERE status IN ('queued', 'running')").fetchall()
    ]
    if ids:
        now = utcnow()
        conn.execute(
            "UPDATE training_runs SET status = 'interrupted', finished_at = ?, updated_at = ?"
            " WHERE id IN (SELECT unnest(?))",
            [now, now, ids],
        )
    return ids


def requeue_run(conn: Connection, owner_id: str, run_id: str) -> RunRecord:
    """Put an interrupted or failed run back in the queue, on the same snapshot (its finished trials are kept)."""
    run = get_owned_run(conn, owner_id, run_id)
    if run.status not in ("interrupted", "failed"):
        raise Conflict(f"Run '{run_id}' is {run.status}; only an interrupted or failed run can be resumed.")
    busy = conn.execute(
        "SELECT id FROM training_runs WHERE model_id = ? AND status IN ('queued', 'running')", [run.model_id]
    ).fetchone()
    if busy:
        raise Conflict(f"Run '{busy[0]}' is already training this model. Wait for it or cancel it first.")
    conn.execute(
        "UPDATE training_runs SET status = 'queued', cancel_requested = FALSE, error = NULL, finished_at = NULL,"
        " updated_at = ? WHERE id = ?",
        [utcnow(), run_id],
    )
    return get_run(conn, run_id)


def record_trial(
    conn: Connection,
    run_id: str,
    trial_id: str,
    *,
    spec: dict[str, Any],
    status: str,
    epochs: int,
    metrics: dict[str, Any],
    cost_s: float | None,
    stop_reason: str | None,
) -> None:
    """Insert or update one trial of a run (the candidate leaderboard)."""
    conn.execute(
        "INSERT INTO trials VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, trial_id) DO UPDATE SET"
        " spec = excluded.spec, status = excluded.status, epochs = excluded.epochs, metrics = excluded.metrics,"
        " cost_s = excluded.cost_s, stop_reason = excluded.stop_reason",
        [run_id, trial_id, json.dumps(spec), status, epochs, json.dumps(metrics), cost_s, stop_reason],
    )


def list_trials(conn: Connection, run_id: str) -> list[TrialRecord]:
    """A run's trials, best validation accuracy first."""
    rows = conn.execute(
        "SELECT run_id, trial_id, spec, status, epochs, metrics, cost_s, stop_reason FROM trials WHERE run_id = ?"
        " ORDER BY coalesce(CAST(json_extract(metrics, '$.best_val_accuracy') AS DOUBLE), -1) DESC, trial_id",
        [run_id],
    ).fetchall()
    return [
        TrialRecord(r, t, _json(spec, {}), status, epochs, _json(metrics, {}), cost, reason)
        for r, t, spec, status, epochs, metrics, cost, reason in rows
    ]


_VERSION_COLUMNS = (
    "model_id, version, source, run_id, classes, backbone, preprocessing, artifact_uri, metrics, status, created_at"
)


def _version(row: tuple) -> VersionRecord:
    values = list(row)
    values[4] = _json(values[4], [])
    values[6] = _json(values[6], None)
    values[8] = _json(values[8], {})
    return VersionRecord(*values)


@changes_serving
def publish_version(
    conn: Connection,
    owner_id: str,
    model_id: str,
    *,
    source: str,
    run_id: str | None,
    classes: list[str],
    backbone: str | None,
    preprocessing: dict[str, Any] | None,
    artifact_uri: str,
    metrics: dict[str, Any],
    activate: bool = True,
) -> VersionRecord:
    """Record a new version of the model (numbered 1, 2, …) and, by default, make it the active one."""
    get_owned_model(conn, owner_id, model_id)
    (latest,) = conn.execute(
        "SELECT coalesce(max(version), 0) FROM model_versions WHERE model_id = ?", [model_id]
    ).fetchone()
    version = latest + 1
    conn.execute(
        f"INSERT INTO model_versions ({_VERSION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'ready', ?)",
        [
            model_id,
            version,
            source,
            run_id,
            json.dumps(classes),
            backbone,
            json.dumps(preprocessing) if preprocessing is not None else None,
            artifact_uri,
            json.dumps(metrics),
            utcnow(),
        ],
    )
    if activate:
        conn.execute(
            "UPDATE models SET active_version = ?, preprocessing = ?, updated_at = ? WHERE id = ?",
            [version, json.dumps(preprocessing) if preprocessing is not None else None, utcnow(), model_id],
        )
    return get_version(conn, owner_id, model_id, version)


def get_version(conn: Connection, owner_id: str, model_id: str, version: int) -> VersionRecord:
    """One version of the owner's model."""
    get_owned_model(conn, owner_id, model_id)
    row = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE model_id = ? AND version = ?", [model_id, version]
    ).fetchone()
    if row is None:
        raise NotFound(f"Model '{model_id}' has no version {version}.")
    return _version(row)


def list_versions(conn: Connection, owner_id: str, model_id: str) -> list[VersionRecord]:
    """Every version of the model, newest first."""
    get_owned_model(conn, owner_id, model_id)
    rows = conn.execute(
        f"SELECT {_VERSION_COLUMNS} FROM model_versions WHERE model_id = ? ORDER BY version DESC", [model_id]
    ).fetchall()
    return [_version(row) for row in rows]


@changes_serving
def activate_version(conn: Connection, owner_id: str, model_id: str, version: int) -> VersionRecord:
    """Make an earlier (or later) version the one that answers classifications: a rollback is one call."""
    record = get_version(conn, owner_id, model_id, version)
    conn.execute(
        "UPDATE models SET active_version = ?, preprocessing = ?, updated_at = ? WHERE id = ?",
        [version, json.dumps(record.preprocessing) if record.preprocessing else None, utcnow(), model_id],
    )
    return record


def winning_specs(conn: Connection, *, limit: int = 50) -> list[dict[str, Any]]:
    """Specs that won past runs, with the dataset summary they won on (the 'database search' of candidates)."""
    rows = conn.execute(
        "SELECT json_extract(result, '$.winner.spec'), json_extract(result, '$.dataset'),"
        " CAST(json_extract(result, '$.accuracy') AS DOUBLE) FROM training_runs"
        " WHERE status = 'succeeded' AND json_extract(result, '$.winner.spec') IS NOT NULL"
        " ORDER BY finished_at DESC LIMIT ?",
        [limit],
    ).fetchall()
    return [
        {"spec": _json(spec, {}), "dataset": _json(dataset, {}), "accuracy": accuracy or 0.0}
        for spec, dataset, accuracy in rows
    ]


def run_stop_reason(conn: Connection, run_id: str) -> str | None:
    """Why a running search should stop now: 'cancelled', 'target reached' (by some candidate), or None."""
    row = conn.execute(
        "SELECT cancel_requested, coalesce(CAST(json_extract(progress, '$.target_reached') AS BOOLEAN), false)"
        " FROM training_runs WHERE id = ?",
        [run_id],
    ).fetchone()
    if row is None:
        raise NotFound(f"There is no training run '{run_id}'.")
    if row[0]:
        return "cancelled"
    return "target reached" if row[1] else None


def run_shape(conn: Connection, run_id: str) -> list[tuple[int, int, bool]]:
    """(width, height, is_gray) of the run's pictures: what the preprocessing policy is chosen from."""
    return conn.execute(
        "SELECT i.width, i.height, coalesce(i.is_gray, false) FROM run_images s JOIN images i ON i.id = s.image_id"
        " WHERE s.run_id = ?",
        [run_id],
    ).fetchall()


def dataset_images(conn: Connection, owner_id: str, model_id: str) -> list[SnapshotImage]:
    """The model's accepted pictures as they are now (label, split, and where their bytes lie)."""
    get_owned_model(conn, owner_id, model_id)
    rows = conn.execute(
        "SELECT i.id, i.label, i.split, i.sha256, b.pack, b.pack_offset, b.length FROM images i"
        " JOIN blobs b ON b.sha256 = i.sha256 WHERE i.model_id = ? AND i.status = 'accepted' ORDER BY i.id",
        [model_id],
    ).fetchall()
    return [
        SnapshotImage(i, label, split, sha, BlobRef(pack, offset, length))
        for i, label, split, sha, pack, offset, length in rows
    ]
