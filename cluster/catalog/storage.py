"""Storage use per user and the balanced clean-up that brings a user back under quota."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from cluster.catalog.db import Connection
from cluster.catalog.images import prune_blobs, storage_used

# Clean up to a little under the quota, so the next upload does not hit it again at once.
TARGET_SHARE_OF_QUOTA = 0.9


@dataclass(frozen=True)
class ModelUsage:
    model_id: str
    name: str
    images: int
    bytes: int


@dataclass(frozen=True)
class StorageReport:
    used_bytes: int
    quota_bytes: int
    over_quota: bool
    models: list[ModelUsage]


@dataclass(frozen=True)
class CleanupPlan:
    """Which images a clean-up would delete: the same share of every class and split, largest files first."""

    needed_bytes: int
    freed_bytes: int
    share_removed: float
    image_ids: list[int]
    per_class: list[dict]  # model_id, class, before, removed
    sufficient: bool


def storage_report(conn: Connection, owner_id: str, quota_bytes: int) -> StorageReport:
    """How much of their quota a user uses, per model."""
    rows = conn.execute(
        "SELECT m.id, m.name, count(i.id), coalesce(sum(i.size_bytes), 0) FROM models m"
        " LEFT JOIN images i ON i.model_id = m.id AND i.status = 'accepted'"
        " WHERE m.owner_id = ? GROUP BY m.id, m.name ORDER BY 4 DESC",
        [owner_id],
    ).fetchall()
    used = storage_used(conn, owner_id)
    return StorageReport(used, quota_bytes, used > quota_bytes, [ModelUsage(*row) for row in rows])


def cleanup_plan(conn: Connection, owner_id: str, quota_bytes: int, free_bytes: int | None = None) -> CleanupPlan:
    """Propose deleting the smallest equal share of every class (never emptying one) that frees enough space.

    Without `free_bytes` the plan brings the user to 90 % of their quota. Each (model, class, split) group
    loses the same share of its images, largest files first, and keeps at least one image, so the
    classes stay as balanced as they were and no class disappears.
    """
    used = storage_used(conn, owner_id)
    needed = free_bytes if free_bytes is not None else max(0, used - int(quota_bytes * TARGET_SHARE_OF_QUOTA))
    groups: dict[tuple[str, str, str], list[tuple[int, str, int]]] = defaultdict(list)
    for image_id, model_id, label, split, sha, size in conn.execute(
        "SELECT i.id, i.model_id, i.label, i.split, i.sha256, i.size_bytes FROM images i"
        " JOIN models m ON m.id = i.model_id WHERE m.owner_id = ? AND i.status = 'accepted'"
        " ORDER BY i.size_bytes DESC, i.id",
        [owner_id],
    ).fetchall():
        groups[(model_id, label, split)].append((image_id, sha, size))
    if needed <= 0:
        return CleanupPlan(0, 0, 0.0, [], [], True)

    def chosen(share: float) -> list[tuple[int, str, int]]:
        picked = []
        for members in groups.values():
            removable = len(members) - 1
            picked.extend(members[: min(removable, math.ceil(share * len(members) - 1e-9))])
        return picked

    def freed(picked: list[tuple[int, str, int]]) -> int:
        removed_ids = {image_id for image_id, _, _ in picked}
        kept = {sha for members in groups.values() for image_id, sha, _ in members if image_id not in removed_ids}
        return sum({sha: size for _, sha, size in picked if sha not in kept}.values())

    low, high = 0.0, 1.0
    if freed(chosen(high)) < needed:
        low = high
    else:
        for _ in range(30):
            middle = (low + high) / 2
            if freed(chosen(middle)) >= needed:
                high = middle
            else:
                low = middle
    picked = chosen(high)
    per_class: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    removed_ids = {image_id for image_id, _, _ in picked}
    for (model_id, label, _), members in groups.items():
        per_class[(model_id, label)][0] += len(members)
        per_class[(model_id, label)][1] += sum(1 for image_id, _, _ in members if image_id in removed_ids)
    amount = freed(picked)
    return CleanupPlan(
        needed_bytes=needed,
        freed_bytes=amount,
        share_removed=round(len(removed_ids) / max(1, sum(map(len, groups.values()))), 4),
        image_ids=sorted(removed_ids),
        per_class=[
            {"model_id": m, "class": c, "before": before, "removed": removed}
            for (m, c), (before, removed) in sorted(per_class.items())
        ],
        sufficient=amount >= needed,
    )


def apply_cleanup(
    conn: Connection, owner_id: str, quota_bytes: int, free_bytes: int | None = None
) -> tuple[CleanupPlan, list[str]]:
    """Carry out the clean-up plan computed now (inside the same transaction); returns it and the freed sha256s."""
    plan = cleanup_plan(conn, owner_id, quota_bytes, free_bytes)
    if not plan.image_ids:
        return plan, []
    shas = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT sha256 FROM images WHERE id IN (SELECT unnest(?))", [plan.image_ids]
        ).fetchall()
    ]
    conn.execute("DELETE FROM images WHERE id IN (SELECT unnest(?))", [plan.image_ids])
    return plan, prune_blobs(conn, shas)
