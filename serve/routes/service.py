"""Routes only the web UI may call, with its service token: sign-in data for its login form, and sessions.

The UI checks the password itself (streamlit-authenticator compares bcrypt hashes), then asks for a normal
session token for that user. See docs/ARCHITECTURE.md, "UI sign-in". Hidden from the public OpenAPI page.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cluster.catalog import users as catalog_users
from cluster.catalog.db import utcnow
from cluster.security import new_token
from serve.deps import ServiceCaller, ServicesDep
from serve.schemas import SessionOut, UserPublic

router = APIRouter(prefix="/service", tags=["service"], include_in_schema=False)


class SignInAccount(BaseModel):
    username: str
    password_hash: str = Field(description="bcrypt hash, as streamlit-authenticator compares it")
    is_admin: bool


class SignInAccounts(BaseModel):
    data: list[SignInAccount]
    count: int


class SessionFor(BaseModel):
    username: str = Field(min_length=1, max_length=64)


@router.get("/accounts")
async def sign_in_accounts(caller: ServiceCaller, services: ServicesDep) -> SignInAccounts:
    """Every account's username and password hash, read fresh for each sign-in attempt."""
    rows = await services.catalog.call(catalog_users.list_sign_in_hashes)
    data = [SignInAccount(username=name, password_hash=hashed, is_admin=admin) for name, hashed, admin in rows]
    return SignInAccounts(data=data, count=len(data))


@router.post("/sessions")
async def session_for(body: SessionFor, caller: ServiceCaller, services: ServicesDep) -> SessionOut:
    """A normal session token for a user whose password (or signed cookie) the UI has just verified."""
    user = await services.catalog.call(catalog_users.get_user_by_username, body.username)
    secret, token_hash, hint = new_token("session")
    expires_at = utcnow() + timedelta(hours=services.settings.session_hours)
    await services.catalog.call(
        catalog_users.create_token,
        user.id,
        name="web UI session",
        kind="session",
        token_hash=token_hash,
        hint=hint,
        expires_at=expires_at,
    )
    return SessionOut(access_token=secret, expires_at=expires_at, user=UserPublic.model_validate(user))
