"""Classifying pictures with a model's published version; every answer is recorded as a task."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from cluster.blobs import sha256_hex
from cluster.catalog.db import new_id, utcnow
from cluster.catalog.runs import VersionRecord
from cluster.catalog.tasks import NewTask
from cluster.kept import keep_pictures
from cluster.services import Services
from pipelines.errors import ClassiflyError, InvalidInput, NotReady
from pipelines.images import PreprocessingPolicy, load_for_model
from pipelines.ood import DEFAULT_NONE_BELOW
from pipelines.predictions import Answer, answers
from serve.classifier import Scores
from serve.deps import CacheDep, ClassifierDep, CurrentUser, ServicesDep
from serve.problems import error_problem
from serve.routes.uploads import check_content_length, read_upload
from serve.schemas import ClassifyOut, ClassScore, FileClassification, ModelAnswer, ModelsClassifyOut
from serve.task_buffer import TaskBufferDep

router = APIRouter(tags=["classify"])

MAX_FILES_PER_CLASSIFY = 100
MAX_MODELS_PER_CLASSIFY = 20
TopK = Annotated[int, Query(ge=1, le=100, description="How many classes to list per answer")]
UncertainBelow = Annotated[
    float | None, Query(ge=0, le=1, description="Flag answers less probable than this; default 0.5")
]


@dataclass(frozen=True)
class Decoded:
    """One uploaded file made model input, or the reason it could not be."""

    name: str
    image: np.ndarray | None = None
    sha256: str | None = None
    error: ClassiflyError | None = None
    data: bytes | None = None  # kept for `add_to_dataset` (cluster/kept.py)


@router.post("/models/{model_id}/classify")
async def classify(
    model_id: str,
    request: Request,
    principal: CurrentUser,
    services: ServicesDep,
    classifier: ClassifierDep,
    cache: CacheDep,
    task_buffer: TaskBufferDep,
    files: Annotated[list[UploadFile], File(description="One or more pictures (form field 'files', repeated)")],
    top_k: TopK = 3,
    uncertain_below: UncertainBelow = None,
    version: Annotated[int | None, Query(ge=1, description="A published version; default: the active one")] = None,
) -> ClassifyOut:
    """Classify pictures: per file the top classes with probabilities, an 'uncertain' flag and a task id."""
    started = time.perf_counter()
    check_content_length(request, services.settings.max_upload_bytes)
    if len(files) > MAX_FILES_PER_CLASSIFY:
        raise InvalidInput(f"Send at most {MAX_FILES_PER_CLASSIFY} files in one request.", field="files")
    served = await cache.version_to_serve(principal.id, model_id, version)
    if not served.preprocessing:
        raise NotReady(f"Version {served.version} has no preprocessing policy recorded, so it cannot classify.")
    policy = PreprocessingPolicy.from_dict(served.preprocessing)
    decoded = await asyncio.gather(*(_decode(services, file, policy) for file in files))
    usable = [item for item in decoded if item.error is None]
    if not usable:
        raise _nothing_classified(decoded, request.url.path)

    kept = [(item.sha256, item.data) for item in usable if item.sha256 and item.data is not None]
    scores, _ = await asyncio.gather(
        classifier.classify(served, [item.image for item in usable if item.image is not None]),
        run_in_threadpool(keep_pictures, services.blobs, kept, services.settings.keep_classified_days),
    )
    threshold = services.settings.uncertain_below if uncertain_below is None else uncertain_below
    results = _answers(scores, served, top_k, threshold)
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    new_tasks = [
        _task(result, served.version, latency_ms, item.sha256) for item, result in zip(usable, results, strict=True)
    ]
    task_buffer.add(principal.id, {model_id: new_tasks})  # stored within ~0.2 s; the answer does not wait

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


@router.post("/classify")
async def classify_with_models(
    request: Request,
    principal: CurrentUser,
    services: ServicesDep,
    classifier: ClassifierDep,
    cache: CacheDep,
    task_buffer: TaskBufferDep,
    file: Annotated[UploadFile, File(description="One picture")],
    model_ids: Annotated[list[str], Form(description="The models to ask (form field 'model_ids', repeated)")],
    top_k: TopK = 3,
    uncertain_below: UncertainBelow = None,
) -> ModelsClassifyOut:
    """Classify one picture with several of your models; models on the same backbone share one forward pass."""
    started = time.perf_counter()
    check_content_length(request, services.settings.max_upload_bytes)
    wanted = list(dict.fromkeys(model_id.strip() for model_id in model_ids if model_id.strip()))
    if not 1 <= len(wanted) <= MAX_MODELS_PER_CLASSIFY:
        raise InvalidInput(f"Name 1 to {MAX_MODELS_PER_CLASSIFY} models in 'model_ids'.", field="model_ids")
    served = await asyncio.gather(
        *(cache.version_to_serve(principal.id, m) for m in wanted),
        return_exceptions=True,
    )
    name = file.filename or "upload"
    data = await read_upload(file, services.settings.max_image_bytes)
    pictures: dict[PreprocessingPolicy, np.ndarray] = {}  # decoded once per preprocessing
    outcomes: list[VersionRecord | ClassiflyError] = []
    for version in served:
        outcome = _usable(version)
        if isinstance(outcome, VersionRecord):
            policy = PreprocessingPolicy.from_dict(outcome.preprocessing or {})
            if policy not in pictures:
                pictures[policy] = await run_in_threadpool(
                    load_for_model, data, name, policy, max_pixels=services.settings.max_image_pixels
                )
        outcomes.append(outcome)
    asked = {o.model_id: o for o in outcomes if isinstance(o, VersionRecord)}
    answered = await classifier.classify_together(
        [(v, pictures[PreprocessingPolicy.from_dict(v.preprocessing or {})]) for v in asked.values()]
    )
    replies: dict[str, Scores | ClassiflyError] = dict(zip(asked, answered, strict=True))
    replies |= {m: o for m, o in zip(wanted, outcomes, strict=True) if isinstance(o, ClassiflyError)}
    threshold = services.settings.uncertain_below if uncertain_below is None else uncertain_below
    latency_ms = round((time.perf_counter() - started) * 1000, 2)
    results: list[ModelAnswer] = []
    tasks: dict[str, list[NewTask]] = {}
    errors: list[ClassiflyError] = []
    for model_id in wanted:
        scores = replies[model_id]
        if isinstance(scores, ClassiflyError):
            errors.append(scores)
            results.append(ModelAnswer(model_id=model_id, error=error_problem(scores, request.url.path)))
            continue
        (result,) = _answers(scores, asked[model_id], top_k, threshold)
        task = _task(result, asked[model_id].version, latency_ms, sha256_hex(data))
        tasks[model_id] = [task]
        results.append(ModelAnswer(model_id=model_id, **_answer_fields(task, result)))
    if not tasks:
        raise _nothing_answered(results, errors[0])
    await run_in_threadpool(
        keep_pictures, services.blobs, [(sha256_hex(data), data)], services.settings.keep_classified_days
    )
    task_buffer.add(principal.id, tasks)
    return ModelsClassifyOut(
        name=name,
        answered=len(tasks),
        failed=len(results) - len(tasks),
        uncertain_below=threshold,
        latency_ms=latency_ms,
        results=results,
    )


def _usable(version: VersionRecord | BaseException) -> VersionRecord | ClassiflyError:
    """A version ready to answer, or the reason its model cannot (other errors are the server's: raised)."""
    if isinstance(version, ClassiflyError):
        return version
    if isinstance(version, BaseException):
        raise version
    if not version.preprocessing:
        return NotReady(f"Version {version.version} has no preprocessing policy recorded, so it cannot classify.")
    return version


def _answers(scores: Scores, served: VersionRecord, top_k: int, uncertain_below: float) -> list[Answer]:
    none_below = float(served.model_options.get("none_of_the_above_below", DEFAULT_NONE_BELOW))
    return answers(
        scores.probabilities,
        scores.class_names,
        top_k=top_k,
        uncertain_below=uncertain_below,
        known_share=scores.known_share,
        none_below=none_below,
    )


def _answer_fields(task: NewTask, result: Answer) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "version": task.version,
        "label": result.label,
        "confidence": result.confidence,
        "uncertain": result.uncertain,
        "none_of_the_above": result.none_of_the_above,
        "none_of_the_above_reason": result.reason,
        "top": [ClassScore(label=label, probability=p) for label, p in result.top],
    }


def _nothing_answered(results: list[ModelAnswer], first: ClassiflyError) -> ClassiflyError:
    """The first model's error; with several models, saying so and listing each one's problem."""
    if len(results) == 1:
        return first
    detail = f"None of the {len(results)} models could answer (see 'models'). The first: {first.detail}"
    models = [{"model_id": r.model_id, "error": r.error} for r in results]
    return type(first)(detail, field=first.field, extra={**first.extra, "models": models})


async def _decode(services: Services, file: UploadFile, policy: PreprocessingPolicy) -> Decoded:
    name = file.filename or "upload"
    try:
        data = await read_upload(file, services.settings.max_image_bytes)
        image = await run_in_threadpool(
            load_for_model, data, name, policy, max_pixels=services.settings.max_image_pixels
        )
    except ClassiflyError as error:
        return Decoded(name, error=error)
    return Decoded(name, image, sha256_hex(data), data=data)


def _task(result: Answer, version: int, latency_ms: float, sha256: str | None) -> NewTask:
    top = [{"label": label, "probability": probability} for label, probability in result.top]
    return NewTask(
        new_id("tsk"), version, result.label, result.confidence, result.uncertain, top, latency_ms, sha256, utcnow()
    )


def _outcome(item: Decoded, answered: tuple[NewTask, Answer] | None, instance: str) -> FileClassification:
    if item.error is not None or answered is None:
        error = item.error or NotReady(f"'{item.name}' was not classified.")
        return FileClassification(name=item.name, error=error_problem(error, instance))
    task, result = answered
    return FileClassification(name=item.name, **_answer_fields(task, result))


def _nothing_classified(decoded: list[Decoded], instance: str) -> ClassiflyError:
    """The first file's error (its status and words), listing every file's problem when there were several."""
    failed = [(item.name, item.error) for item in decoded if item.error is not None]
    first = failed[0][1]
    if len(decoded) == 1:
        return first
    detail = f"None of the {len(decoded)} files could be classified (see 'files'). The first: {first.detail}"
    files = [{"name": name, "error": error_problem(error, instance)} for name, error in failed]
    return type(first)(detail, field=first.field, extra={**first.extra, "files": files})
