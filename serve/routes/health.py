"""Liveness of the API and the catalog behind it."""

from __future__ import annotations

from fastapi import APIRouter

from cluster.catalog import users as catalog_users
from serve.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(services: ServicesDep) -> dict:
    """'ok' when the API answers and can reach the catalog."""
    await services.catalog.call(catalog_users.list_users_count)
    return {"status": "ok"}
