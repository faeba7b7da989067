"""What the cluster is doing, for administrators: nodes and their resources, runners per user, queued and
running work, Serve replicas. Read from Ray (live) and the catalog; `GET /v1/admin/cluster` answers with it."""

from __future__ import annotations

from typing import Any

from cluster.catalog.cluster_work import active_work, storage_per_user, usernames  # noqa: F401 - catalog functions
from cluster.resources import RUNNER_PREFIX, SERVE_RESOURCE, TRAIN_RESOURCE, runner_owner

SHOWN = ("CPU", "GPU", TRAIN_RESOURCE, SERVE_RESOURCE, "memory")
HEAD_MARKER = "node:__internal_head__"


def _shown(resources: dict[str, float]) -> dict[str, float]:
    picked = {k: v for k, v in resources.items() if k in SHOWN or k.startswith(RUNNER_PREFIX)}
    return {k: round(float(v), 4) for k, v in sorted(picked.items())}


def node_kind(resources: dict[str, float]) -> tuple[str, str | None]:
    """(head | runner | worker, the runner's owner id)."""
    for name in resources:
        owner = runner_owner(name)
        if owner:
            return "runner", owner
    return ("head" if HEAD_MARKER in resources else "worker"), None


def ray_view(names: dict[str, str]) -> dict[str, Any]:
    """Nodes, totals and runners of the connected Ray cluster (`names`: user id → username)."""
    import ray

    try:
        from ray._private.state import available_resources_per_node

        free_by_node = available_resources_per_node()
    except Exception:  # a private API: without it, each node shows its totals only
        free_by_node = {}
    nodes = []
    runners: dict[str, dict[str, Any]] = {}
    for node in ray.nodes():
        total = dict(node.get("Resources", {}))
        kind, owner = node_kind(total)
        node_id = node.get("NodeID", "")
        alive = bool(node.get("Alive"))
        entry = {
            "id": node_id,
            "address": node.get("NodeManagerAddress", ""),
            "alive": alive,
            "kind": kind,
            "owner": names.get(owner, owner) if owner else None,
            "total": _shown(total),
            "available": _shown(free_by_node.get(node_id, {})) if alive else {},
        }
        nodes.append(entry)
        if owner and alive:
            runner = runners.setdefault(owner, {"user_id": owner, "username": names.get(owner, owner), "nodes": 0,
                                                "cpus": 0.0})  # fmt: skip
            runner["nodes"] += 1
            runner["cpus"] += total.get(f"{RUNNER_PREFIX}{owner}", 0.0)
    total = _shown(ray.cluster_resources())
    free = _shown(ray.available_resources())
    in_use = {k: round(v - free.get(k, 0.0), 4) for k, v in total.items()}
    return {
        "nodes": sorted(nodes, key=lambda n: (not n["alive"], ["head", "worker", "runner"].index(n["kind"]))),
        "resources": {"total": total, "in_use": in_use, "free": free},
        "runners": sorted(runners.values(), key=lambda r: r["username"]),
    }


def serve_view() -> list[dict[str, Any]]:
    """Each Serve deployment with its replica counts by state."""
    from ray import serve

    deployments = []
    for app_name, app in serve.status().applications.items():
        for name, deployment in app.deployments.items():
            states = {str(getattr(k, "value", k)): int(v) for k, v in deployment.replica_states.items()}
            deployments.append(
                {"app": app_name, "deployment": name, "status": str(getattr(deployment.status, "value", "")),
                 "replicas": states}
            )  # fmt: skip
    return deployments
