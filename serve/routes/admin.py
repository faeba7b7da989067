"""Administrators only: what the cluster is doing (nodes, resources, runners, queued and running work)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cluster import inventory
from cluster.runtime import endpoints
from serve.deps import AdminUser, ServicesDep

router = APIRouter(prefix="/admin", tags=["admin"])


class ClusterNode(BaseModel):
    id: str
    address: str
    alive: bool
    kind: str = Field(description="head, worker (serves and/or trains) or runner (one user's own machine)")
    owner: str | None = Field(None, description="The username whose runner this is")
    total: dict[str, float]
    available: dict[str, float]


class ClusterResources(BaseModel):
    total: dict[str, float] = {}
    in_use: dict[str, float] = {}
    free: dict[str, float] = {}


class Runner(BaseModel):
    user_id: str
    username: str
    nodes: int
    cpus: float


class UserStorage(BaseModel):
    username: str
    models: int
    pictures: int = Field(description="Accepted pictures in all their models")
    used_bytes: int = Field(description="Bytes of distinct pictures kept (what the quota counts)")
    quota_bytes: int


class ClusterView(BaseModel):
    ray: str = Field(description="'connected', or why the live part is missing")
    dashboard_url: str
    nodes: list[ClusterNode] = []
    resources: ClusterResources = ClusterResources()
    runners: list[Runner] = []
    jobs: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    serve: list[dict[str, Any]] = []
    storage: list[UserStorage] = []


def _live(names: dict[str, str]) -> dict[str, Any]:
    import ray

    if not ray.is_initialized():
        return {"ray": "not connected: this API runs outside Ray"}
    view: dict[str, Any] = {"ray": "connected", **inventory.ray_view(names)}
    try:
        view["serve"] = inventory.serve_view()
    except Exception as error:  # Serve answers from its controller; the rest of the view still helps
        view["serve"] = [{"app": "-", "deployment": "-", "status": f"unknown ({type(error).__name__})"}]
    return view


@router.get("/cluster")
async def cluster_view(admin: AdminUser, services: ServicesDep) -> ClusterView:
    """Nodes (head, workers, users' runners) with their resources in use and free, runners per user, queued and
    running jobs and training runs, Serve replicas, storage per user, and the Ray dashboard's address."""
    names = await services.catalog.call(inventory.usernames)
    storage = await services.catalog.call(inventory.storage_per_user, services.settings.quota_bytes)
    work = await services.catalog.call(inventory.active_work)
    live = await run_in_threadpool(_live, names)
    return ClusterView(dashboard_url=endpoints(services.settings).dashboard, storage=storage, **work, **live)
