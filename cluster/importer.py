"""Dataset import: a zip becomes accepted, duplicate and rejected images in one atomic step, with a report.

Blobs are written while decoding; the catalog rows land in a single transaction at the end, so a failed or
interrupted import leaves the dataset exactly as it was (only unreferenced blobs, collected later).
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from cluster.blobs import BlobStore, PackWriter, sha256_hex
from cluster.catalog import images as catalog_images
from cluster.catalog import jobs as catalog_jobs
from cluster.catalog.client import Catalog
from cluster.catalog.images import ImageColumns, NewImage, Outcome
from cluster.catalog.stats import dataset_warnings
from pipelines.errors import ClassiflyError, InvalidInput
from pipelines.images import inspect_image
from pipelines.zips import EntryReader, ZipEntry, ZipLimits, ZipPlan, plan_zip, stratified_split

SPLIT_SEED = 20261123
REPORT_LIST_LIMIT = 500


@dataclass(frozen=True)
class DecodeBatch:
    """A slice of a zip's entries for one worker to read, hash, check and store."""

    blob_root: str
    upload_key: str
    entries: tuple[ZipEntry, ...]
    limits: ZipLimits
    max_pixels: int


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause Python's cycle collector around bulk work that makes many objects but no cycles.

    In a Ray worker every collection walks Ray's own large heap: 15 % of a decode task's time went there.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def decode_batch(batch: DecodeBatch) -> ImageColumns:
    """Read, hash, check and store one batch of zip entries; unreadable files become rejects with a reason."""
    from cluster.blobs import open_blob_store

    blobs = open_blob_store(batch.blob_root)
    with (
        paused_gc(),
        blobs.local_path(batch.upload_key) as path,
        EntryReader(path) as reader,
        blobs.pack_writer() as pack,
    ):
        return ImageColumns.of(
            decode_entry(reader, entry, pack, batch.limits, batch.max_pixels) for entry in batch.entries
        )


def decode_entry(
    reader: EntryReader, entry: ZipEntry, pack: PackWriter, limits: ZipLimits, max_pixels: int
) -> NewImage:
    """One entry of the zip as a NewImage: stored and described, or rejected with the reason."""
    try:
        data = reader.read(entry, limits)
        info = inspect_image(data, entry.name, max_pixels=max_pixels)
    except InvalidInput as error:
        return NewImage(entry.label, entry.name, entry.size, split=entry.split, reject_reason=error.detail)
    sha = sha256_hex(data)
    return NewImage(
        label=entry.label,
        original_name=entry.name,
        size_bytes=len(data),
        sha256=sha,
        split=entry.split,
        width=info.width,
        height=info.height,
        mode=info.mode,
        format=info.format,
        is_gray=info.is_gray,
        ref=pack.add(sha, data),
    )


Mapper = Callable[[Callable[[DecodeBatch], ImageColumns], list[DecodeBatch]], Iterator[ImageColumns]]


def serial_map(fn: Callable[[DecodeBatch], ImageColumns], batches: list[DecodeBatch]) -> Iterator[ImageColumns]:
    """Decode batches one after another in this process (tests, tiny uploads)."""
    for batch in batches:
        yield fn(batch)


@dataclass(frozen=True)
class ImportRequest:
    job_id: str
    owner_id: str
    model_id: str
    upload_key: str
    blob_root: str
    limits: ZipLimits
    max_pixels: int
    quota_bytes: int
    batch_size: int = 0  # 0: chosen from the entry count and `parallelism`
    parallelism: int = 2


def run_import(
    request: ImportRequest,
    catalog: Catalog,
    blobs: BlobStore,
    mapper: Mapper = serial_map,
    on_new_pictures: Callable[[ImportRequest], str | None] | None = None,
) -> dict:
    """Carry out one import job from start to report; the job row says how it went, whatever happens.
    `on_new_pictures` runs once pictures were added (e.g. to update a trained model); the URL it returns
    goes into the report as `model_update`.
    """
    started = time.perf_counter()
    try:
        with blobs.local_path(request.upload_key) as path:
            plan = plan_zip(path, request.limits)
        phases = {"plan": time.perf_counter() - started}
        catalog.call_sync(catalog_jobs.start_job, request.job_id, total=len(plan.entries), message="Reading pictures")
        with paused_gc():
            decoded = _decode_all(request, plan, catalog, mapper)
        phases["decode"] = time.perf_counter() - started - sum(phases.values())
        held = catalog.call_sync(
            catalog_images.known_shas,
            request.owner_id,
            request.model_id,
            sorted({image.sha256 for image in decoded if image.sha256}),
        )
        offered = _with_splits(decoded, held) + [
            NewImage(_reject_label(reject.name), reject.name, 0, reject_reason=reject.reason) for reject in plan.rejects
        ]
        catalog.call_sync(catalog_jobs.report_progress, request.job_id, len(plan.entries), len(plan.entries), "Saving")
        outcomes = catalog.call_sync(
            catalog_images.add_images,
            request.owner_id,
            request.model_id,
            ImageColumns.of(offered),
            quota_bytes=request.quota_bytes,
            job_id=request.job_id,
        )
        phases["save"] = time.perf_counter() - started - sum(phases.values())
        report = build_report(plan, outcomes.rows(), seconds=time.perf_counter() - started)
        report["phase_seconds"] = {name: round(value, 2) for name, value in phases.items()}
        if on_new_pictures is not None and any(o.status == "accepted" for o in outcomes.rows()):
            update = on_new_pictures(request)
            if update is not None:
                report["model_update"] = update
                report["summary"] += " The model is being updated with them (no training needed)."
        # Clean up before the job turns final, so whoever sees it finished also sees the upload gone.
        blobs.delete(request.upload_key)
        catalog.call_sync(
            catalog_jobs.finish_job,
            request.job_id,
            status="succeeded",
            message=report["summary"],
            result=report,
        )
        return report
    except ClassiflyError as error:
        blobs.delete(request.upload_key)
        _fail(
            catalog,
            request.job_id,
            error.detail,
            {"code": error.code, "title": error.title, "detail": error.detail},
        )
        raise
    except Exception as error:
        blobs.delete(request.upload_key)
        detail = "The import stopped on an unexpected problem. Nothing was added; try again or contact the operator."
        _fail(
            catalog,
            request.job_id,
            detail,
            {"code": "internal", "detail": detail, "type": type(error).__name__},
        )
        raise
    finally:
        blobs.delete(request.upload_key)


def _fail(catalog: Catalog, job_id: str, message: str, error: dict[str, Any]) -> None:
    catalog.call_sync(catalog_jobs.finish_job, job_id, status="failed", message=message, error=error)


def _reject_label(name: str) -> str:
    """The class folder a rejected entry sat in, when it is a sensible name; '' otherwise."""
    parts = [part for part in name.replace("\\", "/").split("/") if part]
    label = parts[-2] if len(parts) >= 2 else ""
    return "" if label in (".", "..") or ":" in label else label


def batch_size_for(entries: int, parallelism: int) -> int:
    """About three batches per worker: fewer means idle workers at the end, more means per-task overhead
    (scheduling, opening the zip, one pack fsync each) that cost 2.5 s of 7.5 on MNIST with 28 batches."""
    return max(256, min(10_000, math.ceil(entries / max(1, parallelism * 3))))


def _decode_all(request: ImportRequest, plan: ZipPlan, catalog: Catalog, mapper: Mapper) -> list[NewImage]:
    size = request.batch_size or batch_size_for(len(plan.entries), request.parallelism)
    batches = [
        DecodeBatch(
            request.blob_root,
            request.upload_key,
            plan.entries[start : start + size],
            request.limits,
            request.max_pixels,
        )
        for start in range(0, len(plan.entries), size)
    ]
    done, parts = 0, []
    last_report = time.monotonic()
    for batch_result in mapper(decode_batch, batches):
        parts.append(batch_result)
        done += len(batch_result)
        if time.monotonic() - last_report > 0.5:
            catalog.call_sync(catalog_jobs.report_progress, request.job_id, done, len(plan.entries), "Reading pictures")
            last_report = time.monotonic()
    order = {entry.name: position for position, entry in enumerate(plan.entries)}
    results = ImageColumns.concat(parts).rows()
    results.sort(key=lambda image: order[image.original_name])
    return results


def _with_splits(decoded: list[NewImage], held: set[str]) -> list[NewImage]:
    """Give readable images without a split (class-folder layout) a stratified, seeded 80/20 split.

    Only pictures that will really be added take part: the first copy of each picture in the zip, and none
    the dataset already holds (those become duplicates or conflicts and would leave holes in the split).
    """
    seen = set(held)
    unsplit = []
    for index, image in enumerate(decoded):
        if image.split is None and image.reject_reason is None and image.sha256 not in seen:
            seen.add(image.sha256)
            unsplit.append(index)
    if not unsplit:
        return decoded
    splits = stratified_split([decoded[i].label for i in unsplit], test_fraction=0.2, seed=SPLIT_SEED)
    result = list(decoded)
    for index, split in zip(unsplit, splits, strict=True):
        image = result[index]
        result[index] = replace(image, split=split)
    return result


def build_report(plan: ZipPlan, outcomes: Iterable[Outcome], *, seconds: float) -> dict:
    """The import report a user reads: accepted per class and split, duplicates, rejects with reasons."""
    per_class: dict[str, Counter] = defaultdict(Counter)
    duplicates, rejects = [], []
    for outcome in outcomes:
        if outcome.status == "accepted":
            per_class[outcome.label][outcome.split] += 1
        elif outcome.status == "duplicate":
            duplicates.append(outcome.original_name)
        else:
            rejects.append({"name": outcome.original_name, "reason": outcome.reason})
    classes = [
        {
            "name": name,
            "train": counts["train"],
            "test": counts["test"],
            "total": counts["train"] + counts["test"],
        }
        for name, counts in sorted(per_class.items())
    ]
    accepted = sum(c["total"] for c in classes)
    reasons = Counter(reject["reason"] for reject in rejects)
    warnings = dataset_warnings(classes) if classes else []
    warnings += [f"Folder '{name}' had no pictures, so no class was made for it." for name in plan.empty_classes]
    summary = f"Added {accepted} pictures in {len(classes)} classes"
    if duplicates:
        summary += f", skipped {len(duplicates)} duplicates"
    if rejects:
        summary += f", rejected {len(rejects)} files (see the reasons)"
    return {
        "summary": summary + ".",
        "layout": plan.layout,
        "split_seed": SPLIT_SEED if plan.layout == "class_folders" else None,
        "accepted": accepted,
        "classes": classes,
        "duplicates": len(duplicates),
        "duplicate_names": duplicates[:REPORT_LIST_LIMIT],
        "rejected": len(rejects),
        "rejects": rejects[:REPORT_LIST_LIMIT],
        "rejects_by_reason": [{"reason": r, "count": n} for r, n in reasons.most_common()],
        "empty_folders": list(plan.empty_classes),
        "ignored_files": plan.ignored,
        "warnings": warnings,
        "seconds": round(seconds, 2),
    }
