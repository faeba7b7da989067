"""Models and their classes. `get_owned_model` is the one ownership check every model-scoped call goes through."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cluster.blobs import BlobRef
from cluster.catalog.db import Connection, changes_serving, new_id, utcnow
from pipelines.errors import Conflict, InvalidInput, NotFound
from pipelines.zips import validate_class_name

DEFAULT_TIME_BUDGET_S = 600


@dataclass(frozen=True)
class ModelSpec:
    """What a user decides when creating or editing a model (everything optional but the name)."""

    name: str
    description: str = ""
    target_accuracy: float | None = None
    time_budget_s: int = DEFAULT_TIME_BUDGET_S
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelRecord:
    id: str
    owner_id: str
    name: str
    description: str
    target_accuracy: float | None
    time_budget_s: int
    active_version: int | None
    preprocessing: dict[str, Any] | None
    sample_sha256: str | None
    options: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    num_classes: int = 0
    num_images: int = 0


@dataclass(frozen=True)
class ClassRecord:
    id: int
    model_id: str
    name: str
    created_at: datetime
    train_images: int = 0
    test_images: int = 0


_MODEL_COLUMNS = (
    "m.id, m.owner_id, m.name, m.description, m.target_accuracy, m.time_budget_s, m.active_version,"
    " m.preprocessing, m.sample_sha256, m.options, m.created_at, m.updated_at,"
    " (SELECT count(*) FROM classes c WHERE c.model_id = m.id),"
    " (SELECT count(*) FROM images i WHERE i.model_id = m.id AND i.status = 'accepted')"
)


def _model(row: tuple) -> ModelRecord:
    values = list(row)
    values[7] = json.loads(values[7]) if values[7] else None
    values[9] = json.loads(values[9]) if values[9] else {}
    return ModelRecord(*values)


def _check_spec(spec: ModelSpec) -> None:
    if not spec.name.strip() or len(spec.name) > 200:
        raise InvalidInput("A model needs a name of 1 to 200 characters.", field="name")
    if spec.target_accuracy is not None and not 0 < spec.target_accuracy <= 1:
        raise InvalidInput("Target accuracy is a fraction between 0 and 1 (0.95 means 95 %).", field="target_accuracy")
    if not 10 <= spec.time_budget_s <= 7 * 24 * 3600:
        raise InvalidInput("The time budget must be between 10 seconds and 7 days.", field="time_budget_s")


def create_model(conn: Connection, owner_id: str, spec: ModelSpec) -> ModelRecord:
    """Create an empty model owned by `owner_id`."""
    _check_spec(spec)
    model_id = new_id("mdl")
    now = utcnow()
    conn.execute(
        "INSERT INTO models (id, owner_id, name, description, target_accuracy, time_budget_s, options,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            model_id,
            owner_id,
            spec.name.strip(),
            spec.description,
            spec.target_accuracy,
            spec.time_budget_s,
            json.dumps(spec.options),
            now,
            now,
        ],
    )
    return get_owned_model(conn, owner_id, model_id)


def get_owned_model(conn: Connection, owner_id: str, model_id: str) -> ModelRecord:
    """The model if `owner_id` owns it; NotFound both when it is missing and when it is someone else's."""
    row = conn.execute(
        f"SELECT {_MODEL_COLUMNS} FROM models m WHERE m.id = ? AND m.owner_id = ?", [model_id, owner_id]
    ).fetchone()
    if row is None:
        raise NotFound(f"There is no model '{model_id}' in your account.")
    return _model(row)


def list_models(conn: Connection, owner_id: str, *, limit: int = 100, offset: int = 0) -> tuple[list[ModelRecord], int]:
    """A page of the owner's models, newest first, and the total count."""
    rows = conn.execute(
        f"SELECT {_MODEL_COLUMNS} FROM models m WHERE m.owner_id = ? ORDER BY m.created_at DESC LIMIT ? OFFSET ?",
        [owner_id, limit, offset],
    ).fetchall()
    (total,) = conn.execute("SELECT count(*) FROM models WHERE owner_id = ?", [owner_id]).fetchone()
    return [_model(row) for row in rows], total


@changes_serving
def update_model(conn: Connection, owner_id: str, model_id: str, changes: dict[str, Any]) -> ModelRecord:
    """Change a model's name, description, target accuracy, time budget or options."""
    current = get_owned_model(conn, owner_id, model_id)
    allowed = {"name", "description", "target_accuracy", "time_budget_s", "options"}
    unknown = set(changes) - allowed
    if unknown:
        raise InvalidInput(f"These fields cannot be changed: {', '.join(sorted(unknown))}.")
    for required in ("name", "description", "time_budget_s", "options"):
        if required in changes and changes[required] is None:
            raise InvalidInput(f"'{required}' cannot be empty; leave it out to keep the current value.", field=required)
    merged = ModelSpec(
        name=changes.get("name", current.name),
        description=changes.get("description", current.description),
        target_accuracy=changes.get("target_accuracy", current.target_accuracy),
        time_budget_s=changes.get("time_budget_s", current.time_budget_s),
        options=changes.get("options", current.options),
    )
    _check_spec(merged)
    conn.execute(
        "UPDATE models SET name = ?, description = ?, target_accuracy = ?, time_budget_s = ?, options = ?,"
        " updated_at = ? WHERE id = ?",
        [
            merged.name.strip(),
            merged.description,
            merged.target_accuracy,
            merged.time_budget_s,
            json.dumps(merged.options),
            utcnow(),
            model_id,
        ],
    )
    return get_owned_model(conn, owner_id, model_id)


@changes_serving
def set_model_fields(conn: Connection, owner_id: str, model_id: str, **fields: Any) -> ModelRecord:
    """Platform-side changes: preprocessing policy, sample image, active version."""
    get_owned_model(conn, owner_id, model_id)
    allowed = {"preprocessing", "active_version"}
    for name, value in fields.items():
        if name not in allowed:
            raise InvalidInput(f"'{name}' is not a platform-managed model field.")
        stored = json.dumps(value) if name == "preprocessing" and value is not None else value
        conn.execute(f"UPDATE models SET {name} = ?, updated_at = ? WHERE id = ?", [stored, utcnow(), model_id])
    return get_owned_model(conn, owner_id, model_id)


@changes_serving
def delete_model(conn: Connection, owner_id: str, model_id: str) -> list[str]:
    """Delete a model and everything it holds; returns the sha256 of pictures no longer stored for anyone."""
    get_owned_model(conn, owner_id, model_id)
    running = conn.execute(
        "SELECT id FROM jobs WHERE model_id = ? AND status IN ('queued', 'running')", [model_id]
    ).fetchone()
    if running:
        raise Conflict(f"Job '{running[0]}' is still working on this model. Wait for it or cancel it first.")
    shas = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT sha256 FROM images WHERE model_id = ? AND sha256 IS NOT NULL", [model_id]
        ).fetchall()
    ]
    current = get_owned_model(conn, owner_id, model_id)
    if current.sample_sha256:
        shas.append(current.sample_sha256)
    conn.execute("DELETE FROM feedback WHERE task_id IN (SELECT id FROM tasks WHERE model_id = ?)", [model_id])
    for table in ("images", "classes", "model_versions", "tasks"):
        conn.execute(f"DELETE FROM {table} WHERE model_id = ?", [model_id])
    conn.execute("DELETE FROM models WHERE id = ?", [model_id])
    return _prune(conn, shas)


_CLASS_COLUMNS = (
    "c.id, c.model_id, c.name, c.created_at,"
    " (SELECT count(*) FROM images i WHERE i.class_id = c.id AND i.status = 'accepted' AND i.split = 'train'),"
    " (SELECT count(*) FROM images i WHERE i.class_id = c.id AND i.status = 'accepted' AND i.split = 'test')"
)


def list_classes(conn: Connection, owner_id: str, model_id: str) -> list[ClassRecord]:
    """The model's classes with their image counts, by name."""
    get_owned_model(conn, owner_id, model_id)
    rows = conn.execute(
        f"SELECT {_CLASS_COLUMNS} FROM classes c WHERE c.model_id = ? ORDER BY c.name", [model_id]
    ).fetchall()
    return [ClassRecord(*row) for row in rows]


def get_class(conn: Connection, owner_id: str, model_id: str, name: str) -> ClassRecord:
    """One class of the model, by name."""
    get_owned_model(conn, owner_id, model_id)
    row = conn.execute(
        f"SELECT {_CLASS_COLUMNS} FROM classes c WHERE c.model_id = ? AND c.name = ?", [model_id, name]
    ).fetchone()
    if row is None:
        raise NotFound(f"Model '{model_id}' has no class '{name}'.")
    return ClassRecord(*row)


def create_class(conn: Connection, owner_id: str, model_id: str, name: str) -> ClassRecord:
    """Add an (empty) class to the model."""
    get_owned_model(conn, owner_id, model_id)
    clean = validate_class_name(name)
    if conn.execute("SELECT 1 FROM classes WHERE model_id = ? AND name = ?", [model_id, clean]).fetchone():
        raise Conflict(f"Model '{model_id}' already has a class '{clean}'.", field="name")
    conn.execute("INSERT INTO classes (model_id, name, created_at) VALUES (?, ?, ?)", [model_id, clean, utcnow()])
    return get_class(conn, owner_id, model_id, clean)


def ensure_classes(conn: Connection, owner_id: str, model_id: str, names: list[str]) -> dict[str, int]:
    """Create the classes that do not exist yet; returns name -> class id for all of `names`."""
    get_owned_model(conn, owner_id, model_id)
    existing = dict(conn.execute("SELECT name, id FROM classes WHERE model_id = ?", [model_id]).fetchall())
    now = utcnow()
    for name in names:
        if name not in existing:
            (class_id,) = conn.execute(
                "INSERT INTO classes (model_id, name, created_at) VALUES (?, ?, ?) RETURNING id",
                [model_id, name, now],
            ).fetchone()
            existing[name] = class_id
    return {name: existing[name] for name in names}


def rename_class(conn: Connection, owner_id: str, model_id: str, name: str, new_name: str) -> ClassRecord:
    """Rename a class; its images follow."""
    current = get_class(conn, owner_id, model_id, name)
    clean = validate_class_name(new_name)
    if clean == current.name:
        return current
    if conn.execute("SELECT 1 FROM classes WHERE model_id = ? AND name = ?", [model_id, clean]).fetchone():
        raise Conflict(f"Model '{model_id}' already has a class '{clean}'. Move the images instead.", field="name")
    conn.execute("UPDATE classes SET name = ? WHERE id = ?", [clean, current.id])
    conn.execute("UPDATE images SET label = ? WHERE class_id = ?", [clean, current.id])
    return get_class(conn, owner_id, model_id, clean)


def delete_class(conn: Connection, owner_id: str, model_id: str, name: str) -> list[str]:
    """Delete a class and its images; returns the sha256 of pictures no longer stored for anyone."""
    current = get_class(conn, owner_id, model_id, name)
    shas = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT sha256 FROM images WHERE class_id = ? AND sha256 IS NOT NULL", [current.id]
        ).fetchall()
    ]
    conn.execute("DELETE FROM images WHERE class_id = ?", [current.id])
    conn.execute("DELETE FROM classes WHERE id = ?", [current.id])
    return _prune(conn, shas)


def _prune(conn: Connection, shas: list[str]) -> list[str]:
    from cluster.catalog.images import prune_blobs  # images builds on models; the import goes the other way

    return prune_blobs(conn, shas)


def set_sample_image(conn: Connection, owner_id: str, model_id: str, sha256: str, ref: BlobRef) -> ModelRecord:
    """Make a stored picture the model's sample image (shown in lists)."""
    current = get_owned_model(conn, owner_id, model_id)
    conn.execute(
        "INSERT INTO blobs VALUES (?, ?, ?, ?, ?) ON CONFLICT (sha256) DO NOTHING",
        [sha256, ref.pack, ref.offset, ref.length, utcnow()],
    )
    conn.execute("UPDATE models SET sample_sha256 = ?, updated_at = ? WHERE id = ?", [sha256, utcnow(), model_id])
    if current.sample_sha256 and current.sample_sha256 != sha256:
        _prune(conn, [current.sample_sha256])
    return get_owned_model(conn, owner_id, model_id)


def sample_blob(conn: Connection, owner_id: str, model_id: str) -> BlobRef:
    """Where the model's sample picture lies."""
    from cluster.catalog.images import blob_refs

    current = get_owned_model(conn, owner_id, model_id)
    ref = blob_refs(conn, [current.sample_sha256]).get(current.sample_sha256) if current.sample_sha256 else None
    if ref is None:
        raise NotFound(f"Model '{model_id}' has no sample picture. Upload one with PUT .../sample.")
    return ref
