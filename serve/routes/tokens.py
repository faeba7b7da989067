"""Named API tokens for programs: create (the secret is shown once), list, revoke."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status

from cluster.catalog import users as catalog_users
from cluster.catalog.db import utcnow
from cluster.security import new_token
from serve.deps import CurrentUser, ServicesDep
from serve.schemas import TokenCreate, TokenCreated, TokenPublic, TokensPublic

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_token(body: TokenCreate, principal: CurrentUser, services: ServicesDep) -> TokenCreated:
    """Create an API token; its secret is in this response only."""
    days = min(body.expires_in_days or services.settings.token_max_days, services.settings.token_max_days)
    secret, token_hash, hint = new_token("api")
    token = await services.catalog.call(
        catalog_users.create_token,
        principal.id,
        name=body.name,
        kind="api",
        token_hash=token_hash,
        hint=hint,
        expires_at=utcnow() + timedelta(days=days),
    )
    return TokenCreated(**TokenPublic.model_validate(token).model_dump(), secret=secret)


@router.get("")
async def list_tokens(principal: CurrentUser, services: ServicesDep) -> TokensPublic:
    """Your API tokens (secrets are never shown again)."""
    tokens = await services.catalog.call(catalog_users.list_tokens, principal.id)
    return TokensPublic(data=[TokenPublic.model_validate(t) for t in tokens], count=len(tokens))


@router.delete("/{token_id}")
async def revoke_token(token_id: str, principal: CurrentUser, services: ServicesDep) -> TokenPublic:
    """Revoke a token: programs using it are refused from now on."""
    token = await services.catalog.call(catalog_users.revoke_token, principal.id, token_id)
    return TokenPublic.model_validate(token)
