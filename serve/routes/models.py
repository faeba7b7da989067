"""Models and their classes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Query, UploadFile, status
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cluster.blobs import BlobRef, sha256_hex
from cluster.catalog import images as catalog_images
from cluster.catalog import models as catalog_models
from cluster.catalog.models import ModelSpec
from pipelines.errors import InvalidInput
from pipelines.images import inspect_image
from serve.deps import CurrentUser, ServicesDep, UploadRate
from serve.routes.common import forget_pictures, model_public, request_model_update
from serve.routes.uploads import read_upload
from serve.schemas import (
    MAX_OFFSET,
    ClassCreate,
    ClassesPublic,
    ClassPublic,
    ClassUpdate,
    ModelCreate,
    ModelPublic,
    ModelsPublic,
    ModelUpdate,
)

router = APIRouter(prefix="/models", tags=["models"])
MODEL_OPTIONS = ("auto_retrain", "none_of_the_above_below")  # kept in the model's `options`


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_model(body: ModelCreate, principal: CurrentUser, services: ServicesDep) -> ModelPublic:
    """Create an empty model; add classes and pictures next."""
    options: dict = {"auto_retrain": body.auto_retrain}
    if body.none_of_the_above_below is not None:
        options["none_of_the_above_below"] = body.none_of_the_above_below
    spec = ModelSpec(body.name, body.description, body.target_accuracy, body.time_budget_s, options=options)
    return model_public(await services.catalog.call(catalog_models.create_model, principal.id, spec))


@router.get("")
async def list_models(
    principal: CurrentUser,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> ModelsPublic:
    """Your models, newest first."""
    records, total = await services.catalog.call(catalog_models.list_models, principal.id, limit=limit, offset=offset)
    return ModelsPublic(data=[model_public(r) for r in records], count=total)


@router.get("/{model_id}")
async def get_model(model_id: str, principal: CurrentUser, services: ServicesDep) -> ModelPublic:
    """One of your models."""
    return model_public(await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id))


@router.patch("/{model_id}")
async def update_model(model_id: str, body: ModelUpdate, principal: CurrentUser, services: ServicesDep) -> ModelPublic:
    """Rename a model or change its description, target accuracy, time budget, automatic retraining or its
    "none of the above" threshold (`none_of_the_above_below`; null goes back to the default)."""
    changes = body.model_dump(exclude_unset=True)
    option_changes = {name: changes.pop(name) for name in MODEL_OPTIONS if name in changes}
    if option_changes:
        current = await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
        options = dict(current.options)
        for name, value in option_changes.items():
            if value is None:
                options.pop(name, None)  # back to the default
            else:
                options[name] = value
        changes["options"] = options
    record = await services.catalog.call(catalog_models.update_model, principal.id, model_id, changes)
    return model_public(record)


@router.delete("/{model_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_model(model_id: str, principal: CurrentUser, services: ServicesDep) -> None:
    """Delete a model with all its pictures and versions. This cannot be undone."""
    shas = await services.catalog.call(catalog_models.delete_model, principal.id, model_id)
    await forget_pictures(services, shas)


@router.put("/{model_id}/sample", dependencies=[UploadRate])
async def set_sample_image(
    model_id: str, principal: CurrentUser, services: ServicesDep, file: Annotated[UploadFile, File()]
) -> ModelPublic:
    """Set the picture shown for this model in lists."""
    await services.catalog.call(catalog_models.get_owned_model, principal.id, model_id)
    data = await read_upload(file, services.settings.max_image_bytes)
    name = file.filename or "sample"
    await run_in_threadpool(inspect_image, data, name, max_pixels=services.settings.max_image_pixels)
    sha = sha256_hex(data)

    def store() -> BlobRef:
        with services.blobs.pack_writer() as pack:
            return pack.add(sha, data)

    ref = (await services.catalog.call(catalog_images.blob_refs, [sha])).get(sha) or await run_in_threadpool(store)
    record = await services.catalog.call(catalog_models.set_sample_image, principal.id, model_id, sha, ref)
    return model_public(record)


@router.get("/{model_id}/sample", response_class=Response)
async def get_sample_image(model_id: str, principal: CurrentUser, services: ServicesDep) -> Response:
    """The model's sample picture."""
    ref = await services.catalog.call(catalog_models.sample_blob, principal.id, model_id)
    data = await run_in_threadpool(services.blobs.read, ref)
    return Response(data, media_type="application/octet-stream")


def _class_public(record) -> ClassPublic:
    return ClassPublic(
        name=record.name,
        train_images=record.train_images,
        test_images=record.test_images,
        total_images=record.train_images + record.test_images,
        created_at=record.created_at,
    )


@router.get("/{model_id}/classes")
async def list_classes(model_id: str, principal: CurrentUser, services: ServicesDep) -> ClassesPublic:
    """The model's classes with their picture counts."""
    records = await services.catalog.call(catalog_models.list_classes, principal.id, model_id)
    return ClassesPublic(data=[_class_public(r) for r in records], count=len(records))


@router.post("/{model_id}/classes", status_code=status.HTTP_201_CREATED)
async def create_class(model_id: str, body: ClassCreate, principal: CurrentUser, services: ServicesDep) -> ClassPublic:
    """Add an empty class; upload its pictures to /v1/models/{model_id}/images."""
    return _class_public(await services.catalog.call(catalog_models.create_class, principal.id, model_id, body.name))


@router.get("/{model_id}/classes/{class_name}")
async def get_class(model_id: str, class_name: str, principal: CurrentUser, services: ServicesDep) -> ClassPublic:
    """One class of the model."""
    return _class_public(await services.catalog.call(catalog_models.get_class, principal.id, model_id, class_name))


@router.patch("/{model_id}/classes/{class_name}")
async def rename_class(
    model_id: str, class_name: str, body: ClassUpdate, principal: CurrentUser, services: ServicesDep
) -> ClassPublic:
    """Rename a class; its pictures follow."""
    record = await services.catalog.call(catalog_models.rename_class, principal.id, model_id, class_name, body.name)
    return _class_public(record)


@router.delete("/{model_id}/classes/{class_name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_class(
    model_id: str, class_name: str, principal: CurrentUser, services: ServicesDep, response: Response
) -> None:
    """Delete a class and its pictures. On a trained model a new version without the class follows within
    seconds (a new head on the remaining classes); the `Model-Update` header links to that job."""
    if not class_name.strip():
        raise InvalidInput("Name the class to delete.")
    shas = await services.catalog.call(catalog_models.delete_class, principal.id, model_id, class_name)
    await forget_pictures(services, shas)
    await request_model_update(services, principal.id, model_id, f"class '{class_name}' deleted", response)
