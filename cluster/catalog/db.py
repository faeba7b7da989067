"""Opening the catalog database, applying migrations, and running one call as one transaction."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from cluster.catalog.migrations import MIGRATIONS

T = TypeVar("T")
Connection = duckdb.DuckDBPyConnection


def connect(path: str = ":memory:") -> Connection:
    """Open (creating if needed) the catalog at `path` and bring its schema up to date."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = duckdb.connect(path)
    migrate(conn)
    return conn


def migrate(conn: Connection) -> list[int]:
    """Apply every migration not yet applied; returns the versions applied now."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
    )
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations").fetchall()}
    applied = []
    for version, name, sql in MIGRATIONS:
        if version in done:
            continue
        conn.execute("BEGIN TRANSACTION")
        try:
            conn.execute(sql)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utcnow()])
            conn.execute("COMMIT")
        except Exception:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def in_transaction(conn: Connection, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run `fn(conn, *args, **kwargs)` atomically: all of its writes land, or none do."""
    conn.execute("BEGIN TRANSACTION")
    try:
        result = fn(conn, *args, **kwargs)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def changes_serving(fn: Callable[..., T]) -> Callable[..., T]:
    """Mark a catalog function that changes what the API may answer from its short-lived cache (serve/cache.py):
    which user a token opens (revoking, new passwords, quotas) or which version answers for a model (publishing,
    activating, model options, deleting). Every catalog counts the calls of such functions as its generation."""
    fn.changes_serving = True  # type: ignore[attr-defined]
    return fn


def utcnow() -> datetime:
    """Now, in UTC, without tzinfo (the catalog stores naive UTC timestamps)."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_id(prefix: str) -> str:
    """A short random id with a readable prefix, e.g. ``mdl_4f9c1a2b7d3e``."""
    return f"{prefix}_{secrets.token_hex(6)}"


def rows_as_dicts(cursor: Connection) -> list[dict[str, Any]]:
    """The rows of the last query as dicts keyed by column name."""
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
