"""The classification history: tasks (one per classified picture) and the owner's feedback on them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from cluster.catalog import task_stats
from cluster.catalog import tasks as catalog_tasks
from cluster.catalog.tasks import TaskFilter, TaskRecord
from serve.deps import CurrentUser, ServicesDep
from serve.schemas import ClassScore, FeedbackIn, FeedbackPublic, ModelStatsPublic, TaskPublic, TasksPublic

router = APIRouter(prefix="/tasks", tags=["tasks"])
stats_router = APIRouter(tags=["tasks"])


def task_public(task: TaskRecord) -> TaskPublic:
    feedback = task.feedback
    return TaskPublic(
        id=task.id,
        model_id=task.model_id,
        version=task.version,
        label=task.label,
        confidence=task.confidence,
        uncertain=task.uncertain,
        top=[ClassScore(**score) for score in task.top],
        latency_ms=task.latency_ms,
        created_at=task.created_at,
        feedback=FeedbackPublic(correct=feedback.correct, label=feedback.label, created_at=feedback.created_at)
        if feedback
        else None,
        url=f"/v1/tasks/{task.id}",
    )


def _utc(value: datetime | None) -> datetime | None:
    """The catalog stores naive UTC; a time without a zone is taken as UTC."""
    if value is None or value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


@router.get("")
async def list_tasks(
    principal: CurrentUser,
    services: ServicesDep,
    model_id: Annotated[str | None, Query(description="Only this model's tasks")] = None,
    version: Annotated[int | None, Query(ge=1, description="Only this version's (needs model_id)")] = None,
    since: Annotated[datetime | None, Query(description="From this time (ISO 8601; UTC if no zone)")] = None,
    until: Annotated[datetime | None, Query(description="Before this time")] = None,
    feedback: Annotated[
        Literal["none", "given", "confirmed", "corrected"] | None,
        Query(description="none: no feedback yet; confirmed / corrected: the answer was right / wrong"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=catalog_tasks.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> TasksPublic:
    """Your classification tasks, newest first; `count` is how many match in all."""
    filters = TaskFilter(model_id, version, _utc(since), _utc(until), feedback)
    tasks, total = await services.catalog.call(
        catalog_tasks.list_tasks, principal.id, filters, limit=limit, offset=offset
    )
    return TasksPublic(data=[task_public(task) for task in tasks], count=total)


@router.get("/{task_id}")
async def get_task(task_id: str, principal: CurrentUser, services: ServicesDep) -> TaskPublic:
    """One task: the answer, its version, confidence, latency and any feedback."""
    return task_public(await services.catalog.call(catalog_tasks.get_task, principal.id, task_id))


@router.post("/{task_id}/feedback")
async def give_feedback(task_id: str, body: FeedbackIn, principal: CurrentUser, services: ServicesDep) -> TaskPublic:
    """Confirm the answer (`{"correct": true}`) or correct it (`{"label": "cat"}`); later feedback replaces it."""
    task = await services.catalog.call(
        catalog_tasks.give_feedback, principal.id, task_id, correct=body.correct, label=body.label
    )
    return task_public(task)


@stats_router.get("/models/{model_id}/stats")
async def model_stats(
    model_id: str,
    principal: CurrentUser,
    services: ServicesDep,
    days: Annotated[int, Query(ge=1, le=task_stats.MAX_DAYS, description="How far back to look")] = 30,
) -> ModelStatsPublic:
    """Traffic, latency, confidence and field accuracy (from your feedback) per version, class and day."""
    stats = await services.catalog.call(task_stats.model_stats, principal.id, model_id, days=days)
    return ModelStatsPublic.model_validate(stats)
