"""The classification history: tasks (one per classified picture) and the owner's feedback on them."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from cluster.catalog import images as catalog_images
from cluster.catalog import task_stats
from cluster.catalog import tasks as catalog_tasks
from cluster.catalog.tasks import TaskFilter, TaskRecord
from cluster.kept import kept_picture
from pipelines.errors import InvalidInput, NotFound, NotReady
from pipelines.zips import validate_class_name
from serve.deps import CurrentUser, ServicesDep, quota_of
from serve.routes.common import request_model_update
from serve.routes.images import describe_picture
from serve.schemas import (
    MAX_OFFSET,
    ClassScore,
    FeedbackIn,
    FeedbackPublic,
    FileOutcome,
    ModelStatsPublic,
    TaskPublic,
    TasksPublic,
)
from serve.task_buffer import TaskBuffer, TaskBufferDep

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
    try:
        return value.astimezone(UTC).replace(tzinfo=None)
    except OverflowError:  # a zone moved it past year 1 or 9999 (a 500 found by fuzzing): as far as time goes
        return datetime.min if value.year == 1 else datetime.max


@router.get("")
async def list_tasks(
    principal: CurrentUser,
    services: ServicesDep,
    task_buffer: TaskBufferDep,
    model_id: Annotated[str | None, Query(description="Only this model's tasks")] = None,
    version: Annotated[int | None, Query(ge=1, description="Only this version's (needs model_id)")] = None,
    since: Annotated[datetime | None, Query(description="From this time (ISO 8601; UTC if no zone)")] = None,
    until: Annotated[datetime | None, Query(description="Before this time")] = None,
    feedback: Annotated[
        Literal["none", "given", "confirmed", "corrected"] | None,
        Query(description="none: no feedback yet; confirmed / corrected: the answer was right / wrong"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=catalog_tasks.MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> TasksPublic:
    """Your classification tasks, newest first; `count` is how many match in all."""
    filters = TaskFilter(model_id, version, _utc(since), _utc(until), feedback)
    await task_buffer.flush_for(principal.id)
    tasks, total = await services.catalog.call(
        catalog_tasks.list_tasks, principal.id, filters, limit=limit, offset=offset
    )
    return TasksPublic(data=[task_public(task) for task in tasks], count=total)


@router.get("/{task_id}")
async def get_task(
    task_id: str, principal: CurrentUser, services: ServicesDep, task_buffer: TaskBufferDep
) -> TaskPublic:
    """One task: the answer, its version, confidence, latency and any feedback."""
    return task_public(await _task_call(services, task_buffer, catalog_tasks.get_task, principal.id, task_id))


@router.post("/{task_id}/feedback")
async def give_feedback(
    task_id: str,
    body: FeedbackIn,
    response: Response,
    principal: CurrentUser,
    services: ServicesDep,
    task_buffer: TaskBufferDep,
) -> TaskPublic:
    """Confirm the answer (`{"correct": true}`) or correct it (`{"label": "cat"}`); later feedback replaces it.
    With `"add_to_dataset": true` the classified picture also joins the model's dataset under that class (the
    self-learning loop); a trained model then gets a new version as after an upload (`Model-Update` header)."""
    data = None
    if body.add_to_dataset:
        if body.label is None and body.correct is not True:
            raise InvalidInput(
                "To add the picture to the dataset, give its class ('label') or confirm the answer ('correct': true).",
                field="label",
            )
        before = await _task_call(services, task_buffer, catalog_tasks.get_task, principal.id, task_id)
        data = await _kept_bytes(services, before)
    task = await _task_call(
        services,
        task_buffer,
        catalog_tasks.give_feedback,
        principal.id,
        task_id,
        correct=body.correct,
        label=body.label,
    )
    out = task_public(task)
    if data is not None:
        out.added_to_dataset, out.model_update = await _add_to_dataset(
            services, principal, task, body.label or task.label, data, response
        )
    return out


async def _task_call(services, task_buffer: TaskBuffer, fn, owner_id: str, task_id: str, **kwargs):
    """A catalog call about one task, after this replica's buffer stored the owner's waiting tasks. With several
    API replicas the task may still wait in another one's buffer: a task not found is looked up once more after
    that buffer's longest wait."""
    await task_buffer.flush_for(owner_id)
    try:
        return await services.catalog.call(fn, owner_id, task_id, **kwargs)
    except NotFound:
        if services.settings.ingress_replicas <= 1:
            raise
    await asyncio.sleep(task_buffer.longest_wait_s)
    return await services.catalog.call(fn, owner_id, task_id, **kwargs)


async def _kept_bytes(services, task: TaskRecord) -> bytes:
    days = services.settings.keep_classified_days
    data = None
    if task.image_sha256 and days > 0:
        data = await run_in_threadpool(kept_picture, services.blobs, task.image_sha256, task.created_at)
    if data is None:
        raise NotReady(
            f"The picture of task '{task.id}' is no longer kept (classified pictures are kept {days} days), so it "
            "cannot be added from here. Upload it to the class instead (POST /v1/models/{id}/images)."
        )
    return data


async def _add_to_dataset(services, principal, task: TaskRecord, label: str, data: bytes, response: Response):
    """Store the picture (blob first, row second, as an upload does) and ask for a model update when it is new."""
    image = await run_in_threadpool(
        describe_picture, services, data, f"task-{task.id}", validate_class_name(label), None
    )
    if image.sha256 is not None:
        stored = await services.catalog.call(catalog_images.blob_refs, [image.sha256])
        ref = stored.get(image.sha256)
        if ref is None:

            def write():
                with services.blobs.pack_writer() as pack:
                    return pack.add(image.sha256, data)

            ref = await run_in_threadpool(write)
        image = replace(image, ref=ref)
    outcomes = await services.catalog.call(
        catalog_images.add_images,
        principal.id,
        task.model_id,
        [image],
        quota_bytes=quota_of(services, principal.user),
        require_usable=True,
    )
    (row,) = outcomes.rows()
    outcome = FileOutcome(name=row.original_name, status=row.status, image_id=row.image_id, split=row.split,
                          reason=row.reason)  # fmt: skip
    update = None
    if row.status == "accepted":
        reason = f"a picture of '{label}' added from task {task.id}"
        job = await request_model_update(services, principal.id, task.model_id, reason, response)
        update = f"/v1/jobs/{job.id}" if job else None
    return outcome, update


@stats_router.get("/models/{model_id}/stats")
async def model_stats(
    model_id: str,
    principal: CurrentUser,
    services: ServicesDep,
    task_buffer: TaskBufferDep,
    days: Annotated[int, Query(ge=1, le=task_stats.MAX_DAYS, description="How far back to look")] = 30,
) -> ModelStatsPublic:
    """Traffic, latency, confidence and field accuracy (from your feedback) per version, class and day."""
    await task_buffer.flush_for(principal.id)
    stats = await services.catalog.call(task_stats.model_stats, principal.id, model_id, days=days)
    return ModelStatsPublic.model_validate(stats)
