"""Classifying pictures with a model's published version; every answer is recorded as a task."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from cluster.blobs import sha256_hex
from cluster.catalog import tasks as catalog_tasks
from cluster.catalog.db import new_id
from cluster.catalog.tasks import NewTask
from cluster.services import Services
from pipelines.errors import ClassiflyError, InvalidInput, NotReady
from pipelines.images import PreprocessingPolicy, load_for_model
from pipelines.predictions import Answer, answers
from serve.deps import ClassifierDep, CurrentUser, ServicesDep
from serve.problems import error_problem
from serve.routes.uploads import check_content_length, read_upload
from serve.schemas import ClassifyOut, ClassScore, FileClassification

router = APIRouter(tags=["classify"])

MAX_FILES_PER_CLASSIFY = 100


@dataclass(frozen=True)
class Decoded:
    """One uploaded file made model input, or the reason it could not be."""

    name: str
    image: np.ndarray | None = None
    sha256: str | None = None
    error: ClassiflyError | None = None


@router.post("/models/{model_id}/classify")
async def classify(
    model_id: str,
    request: Request,
    principal: CurrentUser,
    services: ServicesDep,
    classifier: ClassifierDep,
    files: Annotated[list[UploadFile], File(description="One or more pictures (form field 'files', repeated)")],
    top_k: Annotated[int, Query(ge=1, le=100, description="How many classes to list per picture")] = 3,
    uncertain_below: Annotated[
        float | None, Query(ge=0, le=1, description="Flag answers less probable than this; default 0.5")
    ] = None,
    version: Annotated[int | None, Query(ge=1, description="A published version; default: the active one")] = None,
) -> ClassifyOut:
    """Classify pictures: per file the top classes with probabilities, an 'uncertain' flag and a task id."""
    started = time.perf_counter()
    check_content_length(request, services.settings.max_upload_bytes)
    if len(files) > MAX_FILES_PER_CLASSIFY:
        raise InvalidInput(f"Send at most {MAX_FILES_PER_CLASSIFY} files in one request.", field="files")
    served = await services.catalog.call(catalog_tasks.version_to_serve, principal.id, model_id, version)
    if not served.preprocessing:
        raise NotReady(f"Version {served.version} has no preprocessing policy recorded, so it cannot classify.")
    policy = PreprocessingPolicy.from_dict(served.preprocessing)
    decoded = await asyncio.gather(*(_decode(services, file, policy) for file in files))
    usable = [item for item in decoded if item.error is None]
    if not usable:
        raise _nothing_classified(decoded, request.url.path)

    scores = await classifier.classify(served, [item.image for item in usable])
    threshold = services.settings.uncertain_below if uncertain_below is None else uncertain_below
    results = answers(scores.probabilities, scores.class_names, top_k=top_k, uncertain_below=threshold)
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    new_tasks = [_task(item, result, served.version, latency_ms) for item, result in zip(usable, results, strict=True)]
    await services.catalog.call(catalog_tasks.record_tasks, principal.id, model_id, new_tasks)

    answered = iter(zip(new_tasks, results, strict=True))  # in upload order, skipping the files that failed
    out = [_outcome(item, None if item.error else next(answered), request.url.path) for item in decoded]
    return ClassifyOut(
        model_id=model_id,
        version=served.version,
        classified=len(usable),
        failed=len(decoded) - len(usable),
        uncertain_below=threshold,
        latency_ms=latency_ms,
        results=out,
    )


async def _decode(services: Services, file: UploadFile, policy: PreprocessingPolicy) -> Decoded:
    name = file.filename or "upload"
    try:
        data = await read_upload(file, services.settings.max_image_bytes)
        image = await run_in_threadpool(
            load_for_model, data, name, policy, max_pixels=services.settings.max_image_pixels
        )
    except ClassiflyError as error:
        return Decoded(name, error=error)
    return Decoded(name, image, sha256_hex(data))


def _task(item: Decoded, result: Answer, version: int, latency_ms: float) -> NewTask:
    top = [{"label": label, "probability": probability} for label, probability in result.top]
    return NewTask(
        new_id("tsk"), version, result.label, result.confidence, result.uncertain, top, latency_ms, item.sha256
    )


def _outcome(item: Decoded, answered: tuple[NewTask, Answer] | None, instance: str) -> FileClassification:
    if answered is None:
        return FileClassification(name=item.name, error=error_problem(item.error, instance))
    task, result = answered
    return FileClassification(
        name=item.name,
        task_id=task.id,
        version=task.version,
        label=result.label,
        confidence=result.confidence,
        uncertain=result.uncertain,
        top=[ClassScore(label=label, probability=p) for label, p in result.top],
    )


def _nothing_classified(decoded: list[Decoded], instance: str) -> ClassiflyError:
    """The first file's error (its status and words), listing every file's problem when there were several."""
    first = decoded[0].error
    if len(decoded) == 1:
        return first
    detail = f"None of the {len(decoded)} files could be classified (see 'files'). The first: {first.detail}"
    files = [{"name": item.name, "error": error_problem(item.error, instance)} for item in decoded]
    return type(first)(detail, field=first.field, extra={**first.extra, "files": files})
