"""Catalog functions of the administrators' cluster view (cluster/inventory.py, GET /v1/admin/cluster)."""

from __future__ import annotations

import json
from typing import Any

from duckdb import DuckDBPyConnection as Connection

ACTIVE = ("queued", "running")


def active_work(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Queued and running jobs and training runs of every user (a catalog function: runs in the catalog actor)."""
    marks = ", ".join("?" for _ in ACTIVE)
    jobs = conn.execute(
        f"SELECT j.id, j.kind, j.status, u.username, j.model_id, j.progress_done, j.progress_total, j.message, "
        f"j.created_at FROM jobs j LEFT JOIN users u ON u.id = j.owner_id WHERE j.status IN ({marks}) "
        "ORDER BY j.created_at",
        list(ACTIVE),
    ).fetchall()
    runs = conn.execute(
        f"SELECT r.id, r.status, u.username, r.model_id, r.progress, r.created_at FROM training_runs r "
        f"LEFT JOIN users u ON u.id = r.owner_id WHERE r.status IN ({marks}) ORDER BY r.created_at",
        list(ACTIVE),
    ).fetchall()
    return {
        "jobs": [
            {
                "id": r[0],
                "kind": r[1],
                "status": r[2],
                "owner": r[3],
                "model_id": r[4],
                "done": r[5],
                "total": r[6],
                "message": r[7],
                "created_at": r[8].isoformat() if r[8] else None,
            }
            for r in jobs
        ],  # fmt: skip
        "runs": [
            {
                "id": r[0],
                "status": r[1],
                "owner": r[2],
                "model_id": r[3],
                "message": (json.loads(r[4]) if isinstance(r[4], str) else (r[4] or {})).get("message", ""),
                "created_at": r[5].isoformat() if r[5] else None,
            }
            for r in runs
        ],  # fmt: skip
    }


def usernames(conn: Connection) -> dict[str, str]:
    """User id → username (to name the owners of runners)."""
    return dict(conn.execute("SELECT id, username FROM users").fetchall())


def storage_per_user(conn: Connection, default_quota_bytes: int) -> list[dict[str, Any]]:
    """Every account with its models, accepted pictures and the bytes they keep (a picture in two models counts
    once, as for the quota), largest first."""
    rows = conn.execute(
        "SELECT u.username, u.quota_bytes, "
        " (SELECT count(*) FROM models m WHERE m.owner_id = u.id), "
        " (SELECT count(*) FROM images i JOIN models m ON m.id = i.model_id "
        "   WHERE m.owner_id = u.id AND i.status = 'accepted'), "
        " (SELECT coalesce(sum(size_bytes), 0) FROM (SELECT DISTINCT i.sha256, i.size_bytes FROM images i "
        "   JOIN models m ON m.id = i.model_id WHERE m.owner_id = u.id AND i.status = 'accepted')) "
        "FROM users u"
    ).fetchall()
    users = [
        {"username": r[0], "quota_bytes": int(r[1] if r[1] is not None else default_quota_bytes), "models": int(r[2]),
         "pictures": int(r[3]), "used_bytes": int(r[4])}
        for r in rows
    ]  # fmt: skip
    return sorted(users, key=lambda u: (-u["used_bytes"], u["username"]))
