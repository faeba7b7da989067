"""The pictures of a model's dataset: upload, list, fetch, thumbnail, move, delete."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile, status
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cluster.blobs import sha256_hex
from cluster.catalog import images as catalog_images
from cluster.catalog import models as catalog_models
from cluster.catalog.images import ImageRecord, NewImage
from pipelines.errors import InvalidInput
from pipelines.images import inspect_image, make_thumbnail
from pipelines.zips import validate_class_name
from serve.deps import CurrentUser, ServicesDep, UploadRate, quota_of
from serve.routes.common import forget_pictures, request_model_update, thumbnail_key
from serve.routes.uploads import check_content_length, read_upload
from serve.schemas import MAX_OFFSET, FileOutcome, ImagePublic, ImagesDelete, ImagesPublic, ImageUpdate, UploadOut

router = APIRouter(prefix="/models/{model_id}/images", tags=["images"])

MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}
MAX_FILES_PER_UPLOAD = 1000


def image_public(record: ImageRecord) -> ImagePublic:
    base = f"/v1/models/{record.model_id}/images/{record.id}"
    stored = record.status == "accepted"
    return ImagePublic(
        **{name: getattr(record, name) for name in ImagePublic.model_fields if hasattr(record, name)},
        content_url=f"{base}/content" if stored else None,
        thumbnail_url=f"{base}/thumbnail" if stored else None,
    )


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[UploadRate])
async def upload_images(
    model_id: str,
    request: Request,
    response: Response,
    principal: CurrentUser,
    services: ServicesDep,
    label: Annotated[str, Form(description="Class of these pictures; created when new", examples=["daisy"])],
    files: Annotated[list[UploadFile], File(description="One or more picture files")],
    split: Annotated[Literal["train", "test"] | None, Form()] = None,
) -> UploadOut:
    """Add pictures to a class (one or many files); duplicates are skipped, unreadable files rejected.

    On a trained model, pictures of a new class (or more of an existing one) lead to a new version within
    seconds, without training: a new head on the cached features. The `Model-Update` header links to that
    job; several uploads close together become one version.
    """
    check_content_length(request, services.settings.max_upload_bytes)
    await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)  # before storing any blob
    clean_label = validate_class_name(label)
    if len(files) > MAX_FILES_PER_UPLOAD:
        raise InvalidInput(f"Send at most {MAX_FILES_PER_UPLOAD} files at once, or upload a zip to /imports.")
    offered = []
    for file in files:
        data = await read_upload(file, services.settings.max_image_bytes)
        offered.append(
            await run_in_threadpool(describe_picture, services, data, file.filename or "upload", clean_label, split)
        )
    offered = await _store_new_pictures(services, files, offered)
    outcomes = await services.catalog.call(
        catalog_images.add_images,
        principal.id,
        model_id,
        offered,
        quota_bytes=quota_of(services, principal.user),
        require_usable=True,
    )
    outcomes = outcomes.rows()
    results = [
        FileOutcome(name=o.original_name, status=o.status, image_id=o.image_id, split=o.split, reason=o.reason)
        for o in outcomes
    ]
    counts = {kind: sum(1 for o in outcomes if o.status == kind) for kind in ("accepted", "duplicate", "rejected")}
    if counts["accepted"]:
        reason = f"{counts['accepted']} pictures of '{clean_label}'"
        await request_model_update(services, principal.id, model_id, reason, response)
    return UploadOut(
        accepted=counts["accepted"],
        duplicates=counts["duplicate"],
        rejected=counts["rejected"],
        results=results,
    )


async def _store_new_pictures(services, files: list[UploadFile], offered: list[NewImage]) -> list[NewImage]:
    """Write the bytes of pictures the platform does not hold yet (blob first, rows second); point the rest at
    their existing copy. Files are read a second time from the server's spool rather than kept in memory."""
    shas = [image.sha256 for image in offered if image.sha256]
    stored = await services.catalog.call(catalog_images.blob_refs, shas) if shas else {}

    def write() -> list[NewImage]:
        result = []
        with services.blobs.pack_writer() as pack:
            for file, image in zip(files, offered, strict=True):
                if image.sha256 is None:
                    result.append(image)
                    continue
                ref = stored.get(image.sha256)
                if ref is None:
                    file.file.seek(0)
                    ref = pack.add(image.sha256, file.file.read())
                result.append(replace(image, ref=ref))
        return result

    return await run_in_threadpool(write)


def describe_picture(services, data: bytes, name: str, label: str, split: str | None) -> NewImage:
    try:
        info = inspect_image(data, name, max_pixels=services.settings.max_image_pixels)
    except InvalidInput as error:
        return NewImage(label, name, len(data), reject_reason=error.detail)
    sha = sha256_hex(data)
    return NewImage(
        label,
        name,
        len(data),
        sha256=sha,
        split=split,
        width=info.width,
        height=info.height,
        mode=info.mode,
        format=info.format,
        is_gray=info.is_gray,
    )


@router.get("")
async def list_images(
    model_id: str,
    principal: CurrentUser,
    services: ServicesDep,
    label: Annotated[str | None, Query(description="Only this class")] = None,
    split: Annotated[Literal["train", "test"] | None, Query()] = None,
    status_: Annotated[Literal["accepted", "rejected"] | None, Query(alias="status")] = "accepted",
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ImagesPublic:
    """A page of the model's pictures; filter by class, split and status (rejected shows the reasons)."""
    records, total = await services.catalog.call(
        catalog_images.list_images,
        principal.id,
        model_id,
        label=label,
        split=split,
        status=status_,
        limit=limit,
        offset=offset,
    )
    return ImagesPublic(data=[image_public(r) for r in records], count=total)


@router.get("/{image_id}")
async def get_image(model_id: str, image_id: int, principal: CurrentUser, services: ServicesDep) -> ImagePublic:
    """One picture's details."""
    return image_public(await services.catalog.call(catalog_images.get_image, principal.id, model_id, image_id))


@router.get("/{image_id}/content", response_class=Response)
async def get_image_content(model_id: str, image_id: int, principal: CurrentUser, services: ServicesDep) -> Response:
    """The picture file exactly as uploaded."""
    record, ref = await services.catalog.call(catalog_images.image_blob, principal.id, model_id, image_id)
    data = await run_in_threadpool(services.blobs.read, ref)
    return Response(data, media_type=MEDIA_TYPES.get(record.format or "", "application/octet-stream"))


@router.get("/{image_id}/thumbnail", response_class=Response)
async def get_thumbnail(
    model_id: str,
    image_id: int,
    principal: CurrentUser,
    services: ServicesDep,
    size: Annotated[int, Query(ge=16, le=512)] = 128,
) -> Response:
    """A small preview of the picture (at most size × size pixels)."""
    record, ref = await services.catalog.call(catalog_images.image_blob, principal.id, model_id, image_id)
    key = thumbnail_key(record.sha256, size)

    def thumbnail() -> bytes:
        if services.blobs.exists(key):
            return services.blobs.get(key)
        data = make_thumbnail(
            services.blobs.read(ref), record.original_name, size=size, max_pixels=services.settings.max_image_pixels
        )
        services.blobs.put(key, data)
        return data

    data = await run_in_threadpool(thumbnail)
    media = "image/png" if data[:4] == b"\x89PNG" else "image/jpeg"
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=86400"})


@router.patch("/{image_id}")
async def update_image(
    model_id: str, image_id: int, body: ImageUpdate, principal: CurrentUser, services: ServicesDep
) -> ImagePublic:
    """Move a picture to another class (relabel) or to the other split."""
    record = await services.catalog.call(
        catalog_images.update_image, principal.id, model_id, image_id, label=body.label, split=body.split
    )
    return image_public(record)


@router.delete("/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_image(model_id: str, image_id: int, principal: CurrentUser, services: ServicesDep) -> None:
    """Delete one picture (or one reject entry)."""
    shas = await services.catalog.call(catalog_images.delete_images, principal.id, model_id, [image_id])
    await forget_pictures(services, shas)


@router.post("/delete", status_code=status.HTTP_204_NO_CONTENT)
async def delete_images(model_id: str, body: ImagesDelete, principal: CurrentUser, services: ServicesDep) -> None:
    """Delete several pictures at once (all or none)."""
    shas = await services.catalog.call(catalog_images.delete_images, principal.id, model_id, body.ids)
    await forget_pictures(services, shas)
