"""Users and their tokens (session, API and service tokens, stored only as hashes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cluster.catalog.db import Connection, changes_serving, new_id, utcnow
from pipelines.errors import Conflict, NotFound, Unauthorized

# Writing last_used_at on every request would turn reads into writes; once a minute is plenty.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class UserRecord:
    id: str
    username: str
    is_admin: bool
    quota_bytes: int | None
    created_at: datetime


@dataclass(frozen=True)
class TokenRecord:
    id: str
    user_id: str
    name: str
    kind: str
    hint: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


_USER_COLUMNS = "id, username, is_admin, quota_bytes, created_at"
_TOKEN_COLUMNS = "id, user_id, name, kind, hint, created_at, expires_at, last_used_at, revoked_at"


def create_user(conn: Connection, username: str, password_hash: str, *, is_admin: bool = False) -> UserRecord:
    """Create a user; the password arrives already hashed (bcrypt runs outside the catalog)."""
    if conn.execute("SELECT 1 FROM users WHERE lower(username) = lower(?)", [username]).fetchone():
        raise Conflict(f"The username '{username}' is taken. Choose another one.", field="username")
    user_id = new_id("usr")
    conn.execute(
        "INSERT INTO users (id, username, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?, ?)",
        [user_id, username, password_hash, is_admin, utcnow()],
    )
    return get_user(conn, user_id)


def get_user(conn: Connection, user_id: str) -> UserRecord:
    """The user with this id."""
    row = conn.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", [user_id]).fetchone()
    if row is None:
        raise NotFound(f"There is no user '{user_id}'.")
    return UserRecord(*row)


def list_users(conn: Connection) -> list[UserRecord]:
    """Every user, oldest first (admin use)."""
    rows = conn.execute(f"SELECT {_USER_COLUMNS} FROM users ORDER BY created_at").fetchall()
    return [UserRecord(*row) for row in rows]


def get_password_hash(conn: Connection, username: str) -> tuple[str, str] | None:
    """(user id, password hash) for a username, or None; the caller compares hashes outside the catalog."""
    row = conn.execute("SELECT id, password_hash FROM users WHERE lower(username) = lower(?)", [username]).fetchone()
    return (row[0], row[1]) if row else None


@changes_serving
def set_password_hash(conn: Connection, user_id: str, password_hash: str) -> None:
    """Replace a user's password hash and revoke their sessions."""
    get_user(conn, user_id)
    conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", [password_hash, user_id])
    conn.execute(
        "UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND kind = 'session' AND revoked_at IS NULL",
        [utcnow(), user_id],
    )


@changes_serving
def set_quota(conn: Connection, user_id: str, quota_bytes: int | None) -> UserRecord:
    """Give a user their own storage quota (None: the platform default)."""
    get_user(conn, user_id)
    conn.execute("UPDATE users SET quota_bytes = ? WHERE id = ?", [quota_bytes, user_id])
    return get_user(conn, user_id)


def create_token(
    conn: Connection,
    user_id: str,
    *,
    name: str,
    kind: str,
    token_hash: str,
    hint: str,
    expires_at: datetime | None,
) -> TokenRecord:
    """Store a new token by its hash; the secret itself is never stored."""
    get_user(conn, user_id)
    token_id = new_id("tok")
    conn.execute(
        "INSERT INTO tokens (id, user_id, name, kind, token_hash, hint, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [token_id, user_id, name, kind, token_hash, hint, utcnow(), expires_at],
    )
    return _get_token(conn, token_id)


def authenticate_token(conn: Connection, token_hash: str) -> tuple[UserRecord, TokenRecord]:
    """The user and token for a presented token hash; Unauthorized when unknown, expired or revoked."""
    row = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE token_hash = ?", [token_hash]).fetchone()
    if row is None:
        raise Unauthorized("This token is not valid. Sign in again or create a new API token.")
    token = TokenRecord(*row)
    now = utcnow()
    if token.revoked_at is not None:
        raise Unauthorized("This token was revoked. Sign in again or create a new API token.")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthorized("This token has expired. Sign in again or create a new API token.")
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", [now, token.id])
    return get_user(conn, token.user_id), token


def list_tokens(conn: Connection, user_id: str, *, kind: str = "api") -> list[TokenRecord]:
    """A user's tokens of one kind, newest first, revoked ones included (marked)."""
    rows = conn.execute(
        f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE user_id = ? AND kind = ? ORDER BY created_at DESC",
        [user_id, kind],
    ).fetchall()
    return [TokenRecord(*row) for row in rows]


@changes_serving
def revoke_token(conn: Connection, user_id: str, token_id: str) -> TokenRecord:
    """Revoke one of the user's own tokens (someone else's reads as missing)."""
    token = _get_token(conn, token_id)
    if token.user_id != user_id:
        raise NotFound(f"There is no token '{token_id}'.")
    if token.revoked_at is None:
        conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", [utcnow(), token_id])
    return _get_token(conn, token_id)


def _get_token(conn: Connection, token_id: str) -> TokenRecord:
    row = conn.execute(f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE id = ?", [token_id]).fetchone()
    if row is None:
        raise NotFound(f"There is no token '{token_id}'.")
    return TokenRecord(*row)


def list_users_count(conn: Connection) -> int:
    """How many accounts exist (a cheap query that proves the catalog answers)."""
    (count,) = conn.execute("SELECT count(*) FROM users").fetchone()
    return count


# --- the built-in service user: the web UI's credential (see docs/ARCHITECTURE.md, "UI sign-in") ------------

# Registration refuses ':' in usernames, and the password hash below is not a bcrypt hash, so no password ever
# matches it: nobody can sign in as the service user, and an account that merely took the name is refused.
SERVICE_USERNAME = "classifly:service"
SERVICE_PASSWORD_HASH = "!service-account-no-password"


@changes_serving
def ensure_service_token(conn: Connection, token_hash: str, hint: str) -> TokenRecord:
    """Store a new service token (creating the service user on first use) and revoke the earlier ones."""
    row = conn.execute("SELECT id, password_hash FROM users WHERE username = ?", [SERVICE_USERNAME]).fetchone()
    if row is not None and row[1] != SERVICE_PASSWORD_HASH:
        raise Conflict(f"The username '{SERVICE_USERNAME}' is reserved for the web UI. Rename that account.")
    user_id = row[0] if row else create_user(conn, SERVICE_USERNAME, SERVICE_PASSWORD_HASH).id
    conn.execute(
        "UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND kind = 'service' AND revoked_at IS NULL",
        [utcnow(), user_id],
    )
    return create_token(conn, user_id, name="web UI", kind="service", token_hash=token_hash, hint=hint, expires_at=None)


def list_sign_in_hashes(conn: Connection) -> list[tuple[str, str, bool]]:
    """(username, bcrypt hash, is_admin) of every account people sign in to; the service user is left out."""
    return conn.execute(
        "SELECT username, password_hash, is_admin FROM users WHERE username <> ? ORDER BY created_at",
        [SERVICE_USERNAME],
    ).fetchall()


def get_user_by_username(conn: Connection, username: str) -> UserRecord:
    """The account people sign in to under this name (case-insensitive); NotFound for the service user."""
    row = conn.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE lower(username) = lower(?) AND username <> ?",
        [username, SERVICE_USERNAME],
    ).fetchone()
    if row is None:
        raise NotFound(f"There is no user '{username}'.")
    return UserRecord(*row)
