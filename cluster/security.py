"""Passwords (bcrypt) and tokens (random secrets, stored as sha256 hashes)."""

from __future__ import annotations

import functools
import hashlib
import secrets

import bcrypt

from pipelines.errors import InvalidInput

TOKEN_PREFIX = {"session": "cfs", "api": "cfy", "service": "cfx"}
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything longer; refuse it rather than pretend


def check_password_rules(password: str) -> None:
    """Refuse passwords bcrypt cannot protect well."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters.", field="password")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidInput(f"Choose a password of at most {MAX_PASSWORD_BYTES} bytes.", field="password")


def hash_password(password: str) -> str:
    """A bcrypt hash of the password (slow on purpose: call it off the event loop)."""
    check_password_rules(password)
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def verify_password(password: str, password_hash: str) -> bool:
    """Whether `password` matches the stored bcrypt hash."""
    try:
        return bcrypt.checkpw(password.encode()[:MAX_PASSWORD_BYTES], password_hash.encode())
    except ValueError:
        return False


@functools.cache
def dummy_hash() -> str:
    """A real bcrypt hash to check against when the user does not exist, so timing does not reveal usernames."""
    return bcrypt.hashpw(b"not-a-real-password", bcrypt.gensalt()).decode()


def new_token(kind: str) -> tuple[str, str, str]:
    """A new secret token of a kind: (secret shown once, hash to store, hint to recognise it)."""
    secret = f"{TOKEN_PREFIX[kind]}_{secrets.token_urlsafe(32)}"
    return secret, hash_token(secret), secret[:8]


def hash_token(secret: str) -> str:
    """The stored form of a token: tokens are long random secrets, so a plain sha256 is enough."""
    return hashlib.sha256(secret.encode()).hexdigest()
