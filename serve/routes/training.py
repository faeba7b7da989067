"""Training runs (start, follow, cancel, resume) and the model versions they publish (list, evaluate, roll back)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Literal

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from cluster.catalog import jobs as catalog_jobs
from cluster.catalog import models as catalog_models
from cluster.catalog import runs as catalog_runs
from cluster.catalog.runs import RunRecord, TrialRecord, VersionRecord
from pipelines.errors import NotFound, NotReady
from serve.deps import CurrentUser, ServicesDep
from serve.routes.common import job_public, request_model_update
from serve.schemas import (
    JobPublic,
    JobsPublic,
    RunDetail,
    RunProgress,
    RunPublic,
    RunsPublic,
    TrainRequest,
    TrialPublic,
    VersionPublic,
    VersionsPublic,
)

router = APIRouter(tags=["training"])


def run_public(run: RunRecord) -> RunPublic:
    progress = {"stage": "queued", "fraction": 0.0, "message": "", **run.progress}
    return RunPublic(
        id=run.id,
        model_id=run.model_id,
        status=run.status,
        config=run.config,
        progress=RunProgress(**progress),
        result=run.result,
        error=run.error,
        cancel_requested=run.cancel_requested,
        num_images=run.num_images,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        url=f"/v1/runs/{run.id}",
    )


def trial_public(trial: TrialRecord) -> TrialPublic:
    return TrialPublic(
        trial_id=trial.trial_id,
        title=trial.metrics.get("title") or trial.spec.get("kind", "candidate"),
        spec=trial.spec,
        status=trial.status,
        epochs=trial.epochs,
        best_val_accuracy=trial.metrics.get("best_val_accuracy"),
        history=trial.metrics.get("history", []),
        cost_s=trial.cost_s,
        stop_reason=trial.stop_reason,
    )


def version_public(version: VersionRecord, active: int | None) -> VersionPublic:
    return VersionPublic(
        model_id=version.model_id,
        version=version.version,
        active=version.version == active,
        source=version.source,
        run_id=version.run_id,
        classes=version.classes,
        backbone=version.backbone,
        preprocessing=version.preprocessing,
        metrics=version.metrics,
        created_at=version.created_at,
    )


@router.post("/models/{model_id}/train", status_code=status.HTTP_202_ACCEPTED)
async def train(
    model_id: str, principal: CurrentUser, services: ServicesDep, response: Response, body: TrainRequest | None = None
) -> RunPublic:
    """Start training: the platform picks the preprocessing, searches candidate models and publishes the best."""
    model = await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
    chosen = (body or TrainRequest()).model_dump(exclude_none=True)
    config = {
        "target_accuracy": chosen.pop("target_accuracy", model.target_accuracy),
        "time_budget_s": chosen.pop("time_budget_s", model.time_budget_s),
        "advanced": chosen,
    }
    run = await services.catalog.call(catalog_runs.create_run, principal.id, model_id, config)
    await run_in_threadpool(services.jobs.submit_training, run.id)
    response.headers["Location"] = f"/v1/runs/{run.id}"
    return run_public(run)


@router.get("/models/{model_id}/runs")
async def list_runs(model_id: str, principal: CurrentUser, services: ServicesDep) -> RunsPublic:
    """The model's training runs, newest first."""
    runs = await services.catalog.call(catalog_runs.list_runs, principal.id, model_id)
    return RunsPublic(data=[run_public(r) for r in runs], count=len(runs))


@router.get("/runs/{run_id}")
async def get_run(run_id: str, principal: CurrentUser, services: ServicesDep) -> RunDetail:
    """A run's live progress and its candidate leaderboard (best first)."""
    run = await services.catalog.call(catalog_runs.get_owned_run, principal.id, run_id)
    trials = await services.catalog.call(catalog_runs.list_trials, run_id)
    return RunDetail(**run_public(run).model_dump(), trials=[trial_public(t) for t in trials])


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str, principal: CurrentUser, services: ServicesDep) -> RunPublic:
    """Stop a run; the model keeps answering with its current version."""
    return run_public(await services.catalog.call(catalog_runs.request_cancel, principal.id, run_id))


@router.post("/runs/{run_id}/resume", status_code=status.HTTP_202_ACCEPTED)
async def resume_run(run_id: str, principal: CurrentUser, services: ServicesDep) -> RunPublic:
    """Start an interrupted or failed run again on the same pictures."""
    run = await services.catalog.call(catalog_runs.requeue_run, principal.id, run_id)
    await run_in_threadpool(services.jobs.submit_training, run.id)
    return run_public(run)


@router.get("/models/{model_id}/versions")
async def list_versions(model_id: str, principal: CurrentUser, services: ServicesDep) -> VersionsPublic:
    """Every published version of the model, newest first; `active` marks the one answering."""
    model = await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
    versions = await services.catalog.call(catalog_runs.list_versions, principal.id, model_id)
    return VersionsPublic(data=[version_public(v, model.active_version) for v in versions], count=len(versions))


@router.get("/models/{model_id}/versions/{version}")
async def get_version(model_id: str, version: int, principal: CurrentUser, services: ServicesDep) -> VersionPublic:
    """One version with its evaluation on the test pictures."""
    model = await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
    record = await services.catalog.call(catalog_runs.get_version, principal.id, model_id, version)
    return version_public(record, model.active_version)


@router.post("/models/{model_id}/versions/{version}/activate")
async def activate_version(
    model_id: str, version: int, request: Request, principal: CurrentUser, services: ServicesDep
) -> VersionPublic:
    """Make this version the one that answers (a rollback is one call). Its head or model is loaded first (for
    at most a few seconds), so the first answers after the switch do not wait for it."""
    target = await services.catalog.call(catalog_runs.get_version, principal.id, model_id, version)
    warm = getattr(getattr(request.app.state, "classifier", None), "warm", None)
    if warm is not None and target.artifact_uri:
        with contextlib.suppress(Exception):  # warming is a courtesy: the switch happens anyway
            await asyncio.wait_for(warm(target), timeout=WARM_BEFORE_ACTIVATE_S)
    record = await services.catalog.call(catalog_runs.activate_version, principal.id, model_id, version)
    return version_public(record, record.version)


WARM_BEFORE_ACTIVATE_S = 10.0  # a numpy head loads in milliseconds; a whole Keras model in a few seconds
EXPORT_MEDIA_TYPES = {"keras": "application/zip", "tflite": "application/octet-stream"}


@router.get(
    "/models/{model_id}/versions/{version}/export",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The model as one file."}},
)
async def export_version(
    model_id: str,
    version: int,
    principal: CurrentUser,
    services: ServicesDep,
    format: Literal["keras", "tflite"] = Query("keras", description="keras: Keras 3 .keras; tflite: LiteRT"),  # noqa: A002
) -> Response:
    """The version as one self-contained file, preprocessing included: it takes uint8 pictures made square
    at the version's size (see `preprocessing`) and outputs class probabilities in the order of `classes`.
    The first download of a format builds the file (seconds to a minute); later ones are immediate.
    """
    model = await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
    record = await services.catalog.call(catalog_runs.get_version, principal.id, model_id, version)
    if not record.artifact_uri:
        raise NotFound(f"Version {version} of this model has no stored network to export.")
    key = await run_in_threadpool(services.jobs.export, record.artifact_uri, format)
    data = await run_in_threadpool(services.blobs.get, key)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", model.name).strip("-.") or "model"
    disposition = f'attachment; filename="{stem}-v{version}.{format}"'
    return Response(data, media_type=EXPORT_MEDIA_TYPES[format], headers={"Content-Disposition": disposition})


@router.post("/models/{model_id}/update", status_code=status.HTTP_202_ACCEPTED)
async def update_model_now(
    model_id: str, principal: CurrentUser, services: ServicesDep, response: Response
) -> JobPublic:
    """Bring the active version up to date with the data as it is now (classes added or removed, pictures
    added, moved or deleted) in seconds, without training: a new head on the cached features, checked on the
    test pictures and activated at once. Uploads and class deletions do this by themselves; call it after
    edits such as moving pictures. If the quick update cannot tell the classes apart well enough, the job's
    result says so (`retrain_recommended`) and the previous version stays one call away.
    """
    job = await request_model_update(services, principal.id, model_id, "asked for an update", response)
    if job is None:
        raise NotReady("This model has no trained version yet: train it once (POST /v1/models/{id}/train).")
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job)


@router.get("/models/{model_id}/updates")
async def list_updates(model_id: str, principal: CurrentUser, services: ServicesDep) -> JobsPublic:
    """The model's quick updates (expansions), newest first, with their results."""
    await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
    jobs = await services.catalog.call(catalog_jobs.list_jobs, principal.id, model_id=model_id, kind="expansion")
    return JobsPublic(data=[job_public(job) for job in jobs], count=len(jobs))
