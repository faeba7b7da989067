"""Classifying a zip of pictures as a background job (`jobs.kind = 'classify_batch'`): the pictures are read
with the import's zip safety (pipelines.zips.list_pictures + EntryReader), made model input with the version's
policy, classified in chunks through the same classifier as the API (the serving deployments), and recorded as
tasks chunk by chunk; the answers are stored as one JSON blob that GET /v1/jobs/{id}/results returns as JSON or
CSV. The whole job answers with one version: the one active (or asked for) when it was submitted.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np

from cluster.blobs import BlobStore, open_blob_store, sha256_hex
from cluster.catalog import jobs as catalog_jobs
from cluster.catalog import tasks as catalog_tasks
from cluster.catalog.client import Catalog
from cluster.catalog.db import new_id
from cluster.catalog.tasks import NewTask
from cluster.config import Settings
from cluster.kept import keep_pictures
from pipelines.errors import ClassiflyError, InvalidInput
from pipelines.images import PreprocessingPolicy, load_for_model
from pipelines.ood import DEFAULT_NONE_BELOW
from pipelines.predictions import answers
from pipelines.zips import EntryReader, list_pictures

CHUNK = 32  # pictures classified (and tasks recorded) together
RESULT_COLUMNS = ("name", "task_id", "label", "confidence", "uncertain", "none_of_the_above", "top", "error")


def results_key(job_id: str) -> str:
    return f"batch-results/{job_id}.json"


async def run_batch(job, catalog: Catalog, blobs: BlobStore, settings: Settings, classifier, progress) -> dict:
    """Classify every picture of the job's zip; returns the job result (the rows go to `results_key`)."""
    started = time.time()
    params = job.params
    served = catalog.call_sync(catalog_tasks.version_to_serve, job.owner_id, job.model_id, params.get("version"))
    if not served.preprocessing:
        raise InvalidInput(f"Version {served.version} has no preprocessing policy recorded, so it cannot classify.")
    policy = PreprocessingPolicy.from_dict(served.preprocessing)
    none_below = float(served.model_options.get("none_of_the_above_below", DEFAULT_NONE_BELOW))
    threshold = params.get("uncertain_below")
    threshold = settings.uncertain_below if threshold is None else float(threshold)
    limits = settings.zip_limits
    rows: list[dict[str, Any]] = []
    with blobs.local_path(params["upload_key"]) as path:
        plan = list_pictures(path, limits)
        rows += [_failed(reject.name, reject.reason) for reject in plan.rejects]
        total = len(plan.entries)
        progress(0, total, f"Classifying {total:,} pictures")
        with EntryReader(path) as reader:
            for start in range(0, total, CHUNK):
                chunk_started = time.perf_counter()
                pictures: list[tuple[str, np.ndarray, str]] = []
                kept: list[tuple[str, bytes]] = []
                for entry in plan.entries[start : start + CHUNK]:
                    try:
                        data = reader.read(entry, limits)
                        image = load_for_model(data, entry.name, policy, max_pixels=settings.max_image_pixels)
                    except ClassiflyError as error:
                        rows.append(_failed(entry.name, error.detail))
                        continue
                    pictures.append((entry.name, image, sha256_hex(data)))
                    kept.append((pictures[-1][2], data))
                if pictures:
                    keep_pictures(blobs, kept, settings.keep_classified_days)
                    scores = await classifier.classify(served, [image for _, image, _ in pictures])
                    results = answers(
                        scores.probabilities,
                        scores.class_names,
                        top_k=int(params.get("top_k", 3)),
                        uncertain_below=threshold,
                        known_share=scores.known_share,
                        none_below=none_below,
                    )
                    latency_ms = round((time.perf_counter() - chunk_started) * 1000 / len(pictures), 2)
                    tasks = []
                    for (name, _, sha), result in zip(pictures, results, strict=True):
                        top = [{"label": label, "probability": p} for label, p in result.top]
                        task = NewTask(
                            new_id("tsk"), served.version, result.label, result.confidence, result.uncertain, top,
                            latency_ms, sha,
                        )  # fmt: skip
                        tasks.append(task)
                        rows.append(
                            {"name": name, "task_id": task.id, "label": result.label, "confidence": result.confidence,
                             "uncertain": result.uncertain, "none_of_the_above": result.none_of_the_above,
                             "top": top, "error": None}
                        )  # fmt: skip
                    catalog.call_sync(catalog_tasks.record_tasks, job.owner_id, job.model_id, tasks)
                done = min(start + CHUNK, total)
                progress(done, total, f"Classified {done:,} of {total:,} pictures")
    classified = [row for row in rows if row.get("task_id")]
    blobs.put(
        results_key(job.id),
        json.dumps({"model_id": job.model_id, "version": served.version, "results": rows}).encode(),
    )
    unsure = sum(1 for row in classified if row["none_of_the_above"])
    summary = (
        f"Classified {len(classified):,} pictures with version {served.version}"
        + (f"; {len(rows) - len(classified):,} could not be read" if len(rows) > len(classified) else "")
        + (f"; {unsure:,} look like none of the classes" if unsure else "")
        + "."
    )
    counts: dict[str, int] = {}
    for row in classified:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    return {
        "summary": summary,
        "version": served.version,
        "classified": len(classified),
        "failed": len(rows) - len(classified),
        "none_of_the_above": unsure,
        "per_label": counts,
        "results": f"/v1/jobs/{job.id}/results",
        "seconds": round(time.time() - started, 2),
    }


def _failed(name: str, reason: str) -> dict[str, Any]:
    return {**dict.fromkeys(RESULT_COLUMNS), "name": name, "top": [], "error": reason}


def results_csv(document: dict[str, Any]) -> str:
    """The results as CSV: one row per file; `top` as 'label:probability' pairs joined by '|'."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    for row in document["results"]:
        top = "|".join(f"{score['label']}:{score['probability']}" for score in row.get("top") or [])
        writer.writerow([row.get("name"), row.get("task_id"), row.get("label"), row.get("confidence"),
                         row.get("uncertain"), row.get("none_of_the_above"), top, row.get("error")])  # fmt: skip
    return out.getvalue()


def batch_driver(job_id: str, settings_json: str, app_name: str) -> None:
    """A Ray task: run one classify-batch job through the Serve app's deployments and record how it ended."""
    from ray import serve

    from cluster.catalog.actor import RayCatalog, get_catalog_actor
    from cluster.jobs import finish_whatever_happens
    from serve.classifier import ServeClassifier  # the API's own classification path (imported only here)

    settings = Settings.model_validate_json(settings_json)
    catalog: Catalog = RayCatalog(get_catalog_actor(settings.ray_namespace))
    blobs = open_blob_store(settings.blob_root)
    job = catalog.call_sync(catalog_jobs.start_job, job_id, message="Classifying")

    def progress(done: int, total: int, message: str) -> None:
        catalog.call_sync(catalog_jobs.report_progress, job_id, done, total, message)

    def work() -> dict[str, Any]:
        handles = [
            serve.get_deployment_handle(name, app_name=app_name) for name in ("Extractor", "Heads", "FullModels")
        ]
        classifier = ServeClassifier(blobs, *handles)
        return asyncio.run(run_batch(job, catalog, blobs, settings, classifier, progress))

    try:
        finish_whatever_happens(
            catalog,
            job_id,
            work,
            kind="classify-batch",
            unexpected="Classifying the zip stopped on an unexpected problem. Try again.",
        )
    finally:
        blobs.delete(job.params["upload_key"])
