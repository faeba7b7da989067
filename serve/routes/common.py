"""Helpers shared by routes: converting records to public shapes and forgetting deleted pictures."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool

from cluster.catalog import jobs as catalog_jobs
from cluster.catalog import models as catalog_models
from cluster.catalog.jobs import JobRecord
from cluster.catalog.models import ModelRecord
from cluster.services import Services
from pipelines.ood import DEFAULT_NONE_BELOW
from serve.schemas import JobPublic, ModelPublic, Progress


def model_public(record: ModelRecord) -> ModelPublic:
    if record.active_version is not None:
        state = "ready"
    elif record.num_classes >= 2 and record.num_images > 0:
        state = "ready_to_train"
    else:
        state = "needs_data"
    return ModelPublic(
        **{name: getattr(record, name) for name in ModelPublic.model_fields if hasattr(record, name)},
        status=state,
        has_sample_image=record.sample_sha256 is not None,
        auto_retrain=bool(record.options.get("auto_retrain", False)),
        none_of_the_above_below=float(record.options.get("none_of_the_above_below", DEFAULT_NONE_BELOW)),
    )


def job_public(job: JobRecord) -> JobPublic:
    fraction = (
        job.progress_done / job.progress_total if job.progress_total else (1.0 if job.status == "succeeded" else 0.0)
    )
    return JobPublic(
        id=job.id,
        kind=job.kind,
        status=job.status,
        model_id=job.model_id,
        progress=Progress(done=job.progress_done, total=job.progress_total, fraction=round(fraction, 4)),
        message=job.message,
        result=job.result,
        error=job.error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        url=f"/v1/jobs/{job.id}",
    )


def thumbnail_key(sha256: str, size: int) -> str:
    return f"thumbnails/{sha256[:2]}/{sha256}/{size}"


async def forget_pictures(services: Services, shas: list[str]) -> None:
    """Drop cached thumbnails of pictures that are no longer stored (their bytes go with the next compaction)."""

    def drop() -> None:
        for sha in shas:
            for key in list(services.blobs.iter_keys(f"thumbnails/{sha[:2]}/{sha}")):
                services.blobs.delete(key)

    if shas:
        await run_in_threadpool(drop)


MODEL_UPDATE_HEADER = "Model-Update"


async def request_model_update(
    services: Services, owner_id: str, model_id: str, reason: str, response=None
) -> JobRecord | None:
    """After a change to a trained model's data: ask for a new head on the data as it is now (changes made
    close together share one job). The job's URL goes into the `Model-Update` header of `response`.
    Models without a trained version have nothing to update; None then.
    """
    model = await services.catalog.call(catalog_models.get_owned_model, owner_id, model_id)
    if model.active_version is None:
        return None
    job, created = await services.catalog.call(catalog_jobs.request_expansion, owner_id, model_id, reason)
    if created:
        await run_in_threadpool(services.jobs.submit_expansion, job.id, model_id)
    if response is not None:
        response.headers[MODEL_UPDATE_HEADER] = f"/v1/jobs/{job.id}"
    return job
