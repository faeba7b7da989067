"""Whole-dataset operations: zip imports (background jobs with progress and a report) and statistics."""

from __future__ import annotations

import contextlib
import json
import os
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from cluster.batch import results_csv, results_key
from cluster.catalog import jobs as catalog_jobs
from cluster.catalog import models as catalog_models
from cluster.catalog import stats as catalog_stats
from cluster.catalog import tasks as catalog_tasks
from cluster.importer import ImportRequest
from pipelines.errors import InvalidInput, NotFound, NotReady
from pipelines.images import DatasetShape, choose_policy
from serve.deps import CurrentUser, ServicesDep, UploadRate, quota_of
from serve.routes.common import job_public
from serve.routes.uploads import check_content_length, save_upload, stream_body
from serve.schemas import DatasetStatsPublic, JobPublic, JobsPublic, PolicyPublic

router = APIRouter(prefix="/models/{model_id}", tags=["datasets"])

ZIP_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")


ZIP_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/zip": {"schema": {"type": "string", "format": "binary"}},
        },
        "required": True,
    }
}


@router.post("/imports", status_code=status.HTTP_202_ACCEPTED, openapi_extra=ZIP_BODY, dependencies=[UploadRate])
async def import_zip(
    model_id: str, request: Request, response: Response, principal: CurrentUser, services: ServicesDep
) -> JobPublic:
    """Import a zip of class folders (or train/ and test/ folders of class folders) as a background job.

    Send it as the form field `file` or as the raw body with Content-Type application/zip. Follow the
    returned job's `url` for progress and, at the end, the import report.
    """
    settings = services.settings
    check_content_length(request, settings.max_upload_bytes)
    await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
    target = services.blobs.new_upload_path(".zip")
    try:
        await _receive_zip(request, target, settings.max_upload_bytes)
        job = await services.catalog.call(
            catalog_jobs.create_job,
            principal.id,
            "import",
            model_id=model_id,
            params={"bytes": os.path.getsize(target)},
        )
        upload_key = f"uploads/{job.id}.zip"
        await run_in_threadpool(services.blobs.put_file, upload_key, target, move=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
    import_request = ImportRequest(
        job_id=job.id,
        owner_id=principal.id,
        model_id=model_id,
        upload_key=upload_key,
        blob_root=settings.blob_root,
        limits=settings.zip_limits,
        max_pixels=settings.max_image_pixels,
        quota_bytes=quota_of(services, principal.user),
        batch_size=settings.import_batch_size,
        parallelism=settings.import_parallelism or services.cpus,
    )
    await run_in_threadpool(services.jobs.submit_import, import_request)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job)


@router.post(
    "/classify-batch",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=ZIP_BODY,
    tags=["classify"],
    dependencies=[UploadRate],
)
async def classify_batch(
    model_id: str,
    request: Request,
    response: Response,
    principal: CurrentUser,
    services: ServicesDep,
    top_k: Annotated[int, Query(ge=1, le=100, description="How many classes to list per answer")] = 3,
    uncertain_below: Annotated[float | None, Query(ge=0, le=1, description="Default 0.5")] = None,
    version: Annotated[int | None, Query(ge=1, description="A published version; default: the active one")] = None,
) -> JobPublic:
    """Classify every picture of a zip (any folders) as a background job; each picture becomes a task.

    Send it as the form field `file` or as the raw body with Content-Type application/zip. Follow the job's
    `url` for progress; when it has succeeded, `GET /v1/jobs/{id}/results?format=csv` (or json) has the answers.
    """
    settings = services.settings
    check_content_length(request, settings.max_upload_bytes)
    served = await services.catalog.call(catalog_tasks.version_to_serve, principal.id, model_id, version)
    target = services.blobs.new_upload_path(".zip")
    try:
        await _receive_zip(request, target, settings.max_upload_bytes)
        params = {"version": served.version, "top_k": top_k, "uncertain_below": uncertain_below}
        job = await services.catalog.call(
            catalog_jobs.create_job, principal.id, "classify_batch", model_id=model_id, params=params
        )
        upload_key = f"uploads/{job.id}.zip"
        await run_in_threadpool(services.blobs.put_file, upload_key, target, move=True)
        job = await services.catalog.call(catalog_jobs.update_params, job.id, {**params, "upload_key": upload_key})
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
    await run_in_threadpool(services.jobs.submit_classify_batch, job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_public(job)


async def _receive_zip(request: Request, target, limit: int) -> None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=5, max_part_size=limit)
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise InvalidInput("Put the zip in the form field 'file'.", field="file")
        await save_upload(file, target, limit)
        await form.close()
    elif content_type in ZIP_TYPES:
        await stream_body(request, target, limit)
    else:
        raise InvalidInput(
            "Send the zip as multipart/form-data (field 'file') or as the body with Content-Type application/zip."
        )


@router.get("/imports")
async def list_imports(model_id: str, principal: CurrentUser, services: ServicesDep) -> JobsPublic:
    """The model's imports, newest first, with their reports."""
    await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
    jobs = await services.catalog.call(catalog_jobs.list_jobs, principal.id, model_id=model_id, kind="import")
    return JobsPublic(data=[job_public(j) for j in jobs], count=len(jobs))


@router.get("/dataset")
async def dataset_stats(model_id: str, principal: CurrentUser, services: ServicesDep) -> DatasetStatsPublic:
    """Counts per class and split, picture sizes, rejects, duplicates, and warnings in plain words."""
    stats = await services.catalog.call(catalog_stats.dataset_stats, principal.id, model_id)
    shape = await services.catalog.call(catalog_stats.dataset_shape, principal.id, model_id)
    policy = choose_policy(DatasetShape.from_infos(shape)) if shape else None
    return DatasetStatsPublic(
        **{name: getattr(stats, name) for name in DatasetStatsPublic.model_fields if hasattr(stats, name)},
        preprocessing=PolicyPublic(**policy.to_dict()) if policy else None,
    )


jobs_router = APIRouter(prefix="/jobs", tags=["jobs"])


@jobs_router.get("")
async def list_jobs(
    principal: CurrentUser,
    services: ServicesDep,
    model_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobsPublic:
    """Your recent background jobs."""
    jobs = await services.catalog.call(catalog_jobs.list_jobs, principal.id, model_id=model_id, limit=limit)
    return JobsPublic(data=[job_public(j) for j in jobs], count=len(jobs))


@jobs_router.get(
    "/{job_id}/results",
    response_class=Response,
    responses={200: {"content": {"application/json": {}, "text/csv": {}}, "description": "One row per file."}},
)
async def job_results(
    job_id: str,
    principal: CurrentUser,
    services: ServicesDep,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",  # noqa: A002
) -> Response:
    """The answers of a finished classify-batch job: per file its task, label, confidence and flags, or why it
    could not be classified."""
    job = await services.catalog.call(catalog_jobs.get_owned_job, principal.id, job_id)
    if job.kind != "classify_batch":
        raise NotFound(f"Job '{job_id}' is a {job.kind} job; only classify-batch jobs have results to download.")
    if job.status != "succeeded":
        raise NotReady(f"Job '{job_id}' is {job.status}; its results are ready when it has succeeded.")
    document = json.loads(await run_in_threadpool(services.blobs.get, results_key(job_id)))
    if format == "csv":
        filename = f"{job_id}.csv"
        return Response(
            results_csv(document),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return Response(json.dumps(document), media_type="application/json")


@jobs_router.get("/{job_id}")
async def get_job(job_id: str, principal: CurrentUser, services: ServicesDep) -> JobPublic:
    """A job's status and progress; its result (e.g. the import report) once it has finished."""
    return job_public(await services.catalog.call(catalog_jobs.get_owned_job, principal.id, job_id))
