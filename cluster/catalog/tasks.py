"""Classification tasks (one per classified picture) and the owner's feedback on them; scoped to their owner."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from cluster.catalog.db import Connection, utcnow
from cluster.catalog.models import get_owned_model
from cluster.catalog.runs import VersionRecord, get_version
from pipelines.errors import InvalidInput, NotFound, NotReady

FeedbackState = Literal["none", "given", "confirmed", "corrected"]
MAX_PAGE = 1000
INSERT_CHUNK = 500  # task rows in one INSERT statement


@dataclass(frozen=True)
class NewTask:
    """One classified picture, as the API answered it (ids are made by the caller, so it can answer at once)."""

    id: str
    version: int
    label: str
    confidence: float
    uncertain: bool
    top: list[dict[str, Any]]  # [{"label": ..., "probability": ...}], best first
    latency_ms: float
    image_sha256: str | None = None
    created_at: datetime | None = None  # when it was answered (naive UTC); None: when it is stored


@dataclass(frozen=True)
class BufferedTask:
    """A task waiting in an API replica's buffer (serve/task_buffer.py), with whose model it is."""

    owner_id: str
    model_id: str
    task: NewTask


@dataclass(frozen=True)
class FeedbackRecord:
    correct: bool
    label: str | None  # the right class; None when the owner only said the answer is wrong
    created_at: datetime


@dataclass(frozen=True)
class TaskRecord:
    id: str
    owner_id: str
    model_id: str
    version: int
    label: str
    confidence: float
    uncertain: bool
    top: list[dict[str, Any]]
    latency_ms: float
    image_sha256: str | None
    created_at: datetime
    feedback: FeedbackRecord | None = None


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks to list; every field narrows the list (None: any)."""

    model_id: str | None = None
    version: int | None = None
    since: datetime | None = None  # inclusive, naive UTC
    until: datetime | None = None  # exclusive, naive UTC
    feedback: FeedbackState | None = None

    def __post_init__(self) -> None:
        if self.feedback is not None and self.feedback not in ("none", "given", "confirmed", "corrected"):
            raise InvalidInput("feedback must be one of none, given, confirmed, corrected.", field="feedback")
        if self.version is not None and self.model_id is None:
            raise InvalidInput("Filter by version only together with a model.", field="version")
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise InvalidInput("'since' must be earlier than 'until'.", field="since")


_COLUMNS = (
    "t.id, t.owner_id, t.model_id, t.version, t.label, t.confidence, t.uncertain, t.top, t.latency_ms,"
    " t.image_sha256, t.created_at, f.correct, f.label, f.created_at"
)
_FROM = "FROM tasks t LEFT JOIN feedback f ON f.task_id = t.id"
_FEEDBACK_WHERE = {
    "none": "f.task_id IS NULL",
    "given": "f.task_id IS NOT NULL",
    "confirmed": "f.correct",
    "corrected": "NOT f.correct",
}


def _task(row: tuple) -> TaskRecord:
    *values, correct, label, given_at = row
    values[7] = json.loads(values[7]) if values[7] else []
    feedback = FeedbackRecord(bool(correct), label, given_at) if given_at is not None else None
    return TaskRecord(*values, feedback=feedback)


def version_to_serve(conn: Connection, owner_id: str, model_id: str, version: int | None = None) -> VersionRecord:
    """The version that answers for the owner's model: `version` when given, else the active one (with the
    model's options, which tune how it answers)."""
    model = get_owned_model(conn, owner_id, model_id)
    if version is None:
        if model.active_version is None:
            raise NotReady(
                f"Model '{model.name}' has no trained version yet, so it cannot classify. Train it first "
                f"(POST /v1/models/{model_id}/train) and classify when the run has succeeded."
            )
        version = model.active_version
    record = get_version(conn, owner_id, model_id, version)
    if record.status == "broken":  # marked by `classifly doctor --repair`: its stored model is gone
        raise NotReady(record.metrics.get("problem") or f"Version {version} is damaged; activate another version.")
    return replace(record, model_options=dict(model.options))


def record_tasks(conn: Connection, owner_id: str, model_id: str, tasks: list[NewTask]) -> datetime:
    """Store classifications of one of the owner's models (one row per picture); returns their time."""
    return record_tasks_of_models(conn, owner_id, {model_id: tasks})


def record_tasks_of_models(conn: Connection, owner_id: str, tasks: dict[str, list[NewTask]]) -> datetime:
    """Store classifications of several of the owner's models at once ({model id: tasks}); returns their time."""
    for model_id in tasks:
        get_owned_model(conn, owner_id, model_id)
    now = utcnow()
    rows = [(owner_id, model_id, task) for model_id, model_tasks in tasks.items() for task in model_tasks]
    _insert_tasks(conn, rows, now)
    return now


def record_buffered_tasks(conn: Connection, buffered: list[BufferedTask]) -> int:
    """Store many tasks of any owners and models in one transaction (the API's task buffer flushing); returns
    how many were stored.

    The route checked ownership when it classified; a model deleted (or handed away) since then takes its
    waiting tasks with it, as its deletion took the stored ones. A task id already stored is skipped, so a
    flush retried after an answer was lost stores nothing twice.
    """
    if not buffered:
        return 0
    pairs = sorted({(item.owner_id, item.model_id) for item in buffered})
    placeholders = ", ".join("(?, ?)" for _ in pairs)
    owned = {
        (owner, model)
        for model, owner in conn.execute(
            f"SELECT id, owner_id FROM models WHERE (owner_id, id) IN ({placeholders})",
            [value for pair in pairs for value in pair],
        ).fetchall()
    }
    keep = [(item.owner_id, item.model_id, item.task) for item in buffered if (item.owner_id, item.model_id) in owned]
    ids = [task.id for _, _, task in keep]
    stored = set()
    if ids:
        marks = ", ".join("?" for _ in ids)
        stored = {row[0] for row in conn.execute(f"SELECT id FROM tasks WHERE id IN ({marks})", ids).fetchall()}
    fresh = [row for row in keep if row[2].id not in stored]
    return _insert_tasks(conn, fresh, utcnow())


def _insert_tasks(conn: Connection, tasks: list[tuple[str, str, NewTask]], now: datetime) -> int:
    rows = [
        [
            task.id,
            owner_id,
            model_id,
            task.version,
            task.label,
            task.confidence,
            task.uncertain,
            json.dumps(task.top),
            task.latency_ms,
            task.image_sha256,
            task.created_at or now,
        ]
        for owner_id, model_id, task in tasks
    ]
    # One multi-row INSERT per chunk: DuckDB's executemany costs ~0.7 ms a row, this ~0.05 ms.
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start : start + INSERT_CHUNK]
        values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
        conn.execute(
            "INSERT INTO tasks (id, owner_id, model_id, version, label, confidence, uncertain, top, latency_ms,"
            f" image_sha256, created_at) VALUES {values}",
            [value for row in chunk for value in row],
        )
    return len(rows)


def get_task(conn: Connection, owner_id: str, task_id: str) -> TaskRecord:
    """One of the owner's tasks; NotFound both when it is missing and when it is someone else's."""
    row = conn.execute(f"SELECT {_COLUMNS} {_FROM} WHERE t.id = ? AND t.owner_id = ?", [task_id, owner_id]).fetchone()
    if row is None:
        raise NotFound(f"There is no task '{task_id}' in your account.")
    return _task(row)


def list_tasks(
    conn: Connection, owner_id: str, filters: TaskFilter, *, limit: int = 50, offset: int = 0
) -> tuple[list[TaskRecord], int]:
    """A page of the owner's tasks matching `filters`, newest first, and how many match in all."""
    if not 1 <= limit <= MAX_PAGE or offset < 0:
        raise InvalidInput(f"limit must be 1 to {MAX_PAGE} and offset 0 or more.", field="limit")
    if filters.model_id is not None:
        get_owned_model(conn, owner_id, filters.model_id)
    where, params = ["t.owner_id = ?"], [owner_id]
    for column, operator, value in (
        ("t.model_id", "=", filters.model_id),
        ("t.version", "=", filters.version),
        ("t.created_at", ">=", filters.since),
        ("t.created_at", "<", filters.until),
    ):
        if value is not None:
            where.append(f"{column} {operator} ?")
            params.append(value)
    if filters.feedback is not None:
        where.append(_FEEDBACK_WHERE[filters.feedback])
    condition = " AND ".join(where)
    (total,) = conn.execute(f"SELECT count(*) {_FROM} WHERE {condition}", params).fetchone()
    rows = conn.execute(
        f"SELECT {_COLUMNS} {_FROM} WHERE {condition} ORDER BY t.created_at DESC, t.id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    ).fetchall()
    return [_task(row) for row in rows], total


def give_feedback(
    conn: Connection, owner_id: str, task_id: str, *, correct: bool | None = None, label: str | None = None
) -> TaskRecord:
    """Confirm a task's answer (`correct=True`), reject it (`correct=False`), or give the right class (`label`).

    A later call replaces earlier feedback. A label must be one of the model's classes (or of the version's).
    """
    task = get_task(conn, owner_id, task_id)
    if correct is None and label is None:
        raise InvalidInput('Send {"correct": true} to confirm the answer, or {"label": "<class>"} to correct it.')
    if label is not None:
        label = _known_label(conn, owner_id, task, label)
        if correct is True and label != task.label:
            raise InvalidInput(
                f"The answer was '{task.label}': it cannot be correct with the label '{label}'. "
                'Send only {"label": ...} to correct it.',
                field="label",
            )
        correct = label == task.label
    elif correct:
        label = task.label
    conn.execute(
        "INSERT INTO feedback (task_id, correct, label, created_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (task_id) DO UPDATE SET correct = excluded.correct, label = excluded.label,"
        " created_at = excluded.created_at",
        [task_id, correct, label, utcnow()],
    )
    return get_task(conn, owner_id, task_id)


def _known_label(conn: Connection, owner_id: str, task: TaskRecord, label: str) -> str:
    label = label.strip()
    known = {row[0] for row in conn.execute("SELECT name FROM classes WHERE model_id = ?", [task.model_id]).fetchall()}
    try:
        known.update(get_version(conn, owner_id, task.model_id, task.version).classes)
    except NotFound:
        pass  # the version's record is gone; the model's classes still count
    if label not in known:
        raise InvalidInput(
            f"'{label}' is not a class of this model. Use one of: {', '.join(sorted(known))}.", field="label"
        )
    return label
