"""Helpers shared by routes: converting records to public shapes and collecting freed blobs."""

from __future__ import annotations

from cluster.catalog import images as catalog_images
from cluster.catalog.jobs import JobRecord
from cluster.catalog.models import ModelRecord
from cluster.services import Services
from serve.schemas import JobPublic, ModelPublic, Progress

BLOB_GRACE_SECONDS = 60.0


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


async def collect_blobs(services: Services, shas: list[str]) -> None:
    """Delete image blobs no row refers to any more (blob last, so no row ever points at nothing)."""
    for sha in await services.catalog.call(catalog_images.unreferenced, shas):
        # An upload of the same picture may be between writing the blob and its row; leave fresh blobs
        # to the next 'classifly doctor --repair'.
        services.blobs.delete_image(sha, idle_seconds=BLOB_GRACE_SECONDS)
