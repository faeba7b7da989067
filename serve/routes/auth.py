"""Accounts: register, sign in and out, who am I, and the storage quota with its balanced clean-up."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, status
from starlette.concurrency import run_in_threadpool

from cluster.catalog import images as catalog_images
from cluster.catalog import storage as catalog_storage
from cluster.catalog import users as catalog_users
from cluster.catalog.db import utcnow
from cluster.security import dummy_hash, hash_password, new_token, verify_password
from pipelines.errors import Forbidden, Unauthorized
from serve.deps import CurrentUser, ServicesDep, client_address, quota_of
from serve.routes.common import forget_pictures
from serve.schemas import (
    CleanupIn,
    CleanupPublic,
    LoginIn,
    MeOut,
    RegisterIn,
    SessionOut,
    StoragePublic,
    UserPublic,
)

router = APIRouter(tags=["account"])


@router.post("/auth/register", status_code=status.HTTP_201_CREATED)
async def register(body: RegisterIn, services: ServicesDep) -> UserPublic:
    """Create an account (when the operator allows sign-ups)."""
    if not services.settings.allow_registration:
        raise Forbidden("Sign-ups are closed on this server. Ask the operator for an account.")
    password_hash = await run_in_threadpool(hash_password, body.password)
    user = await services.catalog.call(catalog_users.create_user, body.username, password_hash)
    return UserPublic.model_validate(user)


@router.post("/auth/login")
async def login(body: LoginIn, request: Request, services: ServicesDep) -> SessionOut:
    """Sign in with username and password; returns a session token for the Authorization header.
    Too many failed attempts for one username from one address answer 429 (with Retry-After) for a while."""
    limits, client = request.app.state.limits, client_address(request)
    limits.check_login(body.username, client)  # before the password check: no guessing while locked out
    found = await services.catalog.call(catalog_users.get_password_hash, body.username)
    stored = found[1] if found else dummy_hash()
    matches = await run_in_threadpool(verify_password, body.password, stored)
    if not found or not matches:
        limits.login_failed(body.username, client)
        raise Unauthorized("The username or password is wrong.")
    limits.login_succeeded(body.username, client)
    secret, token_hash, hint = new_token("session")
    expires_at = utcnow() + timedelta(hours=services.settings.session_hours)
    await services.catalog.call(
        catalog_users.create_token,
        found[0],
        name="session",
        kind="session",
        token_hash=token_hash,
        hint=hint,
        expires_at=expires_at,
    )
    user = await services.catalog.call(catalog_users.get_user, found[0])
    return SessionOut(access_token=secret, expires_at=expires_at, user=UserPublic.model_validate(user))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(principal: CurrentUser, services: ServicesDep) -> None:
    """End this session (or revoke this API token)."""
    await services.catalog.call(catalog_users.revoke_token, principal.id, principal.token.id)


@router.get("/me")
async def me(principal: CurrentUser, services: ServicesDep) -> MeOut:
    """The signed-in user and their storage use."""
    used = await services.catalog.call(catalog_images.storage_used, principal.id)
    return MeOut(
        **UserPublic.model_validate(principal.user).model_dump(),
        storage_used_bytes=used,
        storage_quota_bytes=quota_of(services, principal.user),
    )


@router.get("/me/storage")
async def storage(principal: CurrentUser, services: ServicesDep) -> StoragePublic:
    """Storage used per model against the quota."""
    report = await services.catalog.call(
        catalog_storage.storage_report, principal.id, quota_of(services, principal.user)
    )
    return StoragePublic.model_validate(report)


@router.get("/me/storage/cleanup")
async def propose_cleanup(
    principal: CurrentUser, services: ServicesDep, free_bytes: int | None = None
) -> CleanupPublic:
    """Propose the smallest equal share of every class to delete to free space (nothing is deleted)."""
    plan = await services.catalog.call(
        catalog_storage.cleanup_plan, principal.id, quota_of(services, principal.user), free_bytes
    )
    return _cleanup_public(plan, applied=False)


@router.post("/me/storage/cleanup")
async def apply_cleanup(principal: CurrentUser, services: ServicesDep, body: CleanupIn) -> CleanupPublic:
    """Carry out the clean-up: delete the same share of every class, never emptying one."""
    plan, shas = await services.catalog.call(
        catalog_storage.apply_cleanup, principal.id, quota_of(services, principal.user), body.free_bytes
    )
    await forget_pictures(services, shas)
    return _cleanup_public(plan, applied=bool(plan.image_ids))


def _cleanup_public(plan: catalog_storage.CleanupPlan, *, applied: bool) -> CleanupPublic:
    return CleanupPublic(
        needed_bytes=plan.needed_bytes,
        freed_bytes=plan.freed_bytes,
        share_removed=plan.share_removed,
        images=len(plan.image_ids),
        per_class=plan.per_class,
        sufficient=plan.sufficient,
        applied=applied,
    )
