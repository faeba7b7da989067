"""How the API classifies decoded pictures: through the Extractor and Heads deployments (a head on a shared
backbone) or the FullModels deployment (a whole model). Routes see only the `Classifier` protocol, so component
tests can give the API a fake one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from starlette.concurrency import run_in_threadpool

from cluster.blobs import BlobStore
from cluster.catalog.runs import VersionRecord
from cluster.serving import (
    ExtractorKey,
    FeatureRequest,
    FeatureViews,
    HeadRef,
    Lru,
    ServingPlan,
    load_ood,
    serving_plan,
)
from pipelines.errors import ClassiflyError, NotReady, Unavailable
from pipelines.ood import OodModel

PLAN_CACHE_SIZE = 1024  # manifests are a few hundred bytes and never change for a version
OOD_CACHE_SIZE = 256  # "none of the above" models: class centroids, a few KB to a few MB each


@dataclass(frozen=True)
class Scores:
    class_names: tuple[str, ...]
    probabilities: np.ndarray  # (pictures, classes), rows in the order the pictures were given
    # per picture, the share of the version's known validation pictures at least as unlike its classes
    # (pipelines.ood); None for a version published without a "none of the above" model
    known_share: np.ndarray | None = None


class Classifier(Protocol):
    async def classify(self, version: VersionRecord, images: list[np.ndarray]) -> Scores:
        """Class probabilities of pictures already made model input by `load_for_model` with the version's policy."""
        ...

    async def classify_together(self, targets: list[tuple[VersionRecord, np.ndarray]]) -> list[Scores | ClassiflyError]:
        """One picture for each of several versions (each made input by that version's policy): the versions on
        one feature model and policy share its forward pass. A version that cannot answer gets its error."""
        ...


class ServeClassifier:
    """Classifies through the serving deployments; one call per picture to the batching ones, so pictures of
    concurrent requests (and of several files in one request) share forward passes.
    """

    def __init__(self, blobs: BlobStore, extractor, heads, full_models):
        self.blobs = blobs
        self.extractor, self.heads, self.full_models = extractor, heads, full_models
        self.plans: Lru[ServingPlan] = Lru(PLAN_CACHE_SIZE)
        self.oods: Lru[tuple[OodModel | None]] = Lru(OOD_CACHE_SIZE)

    async def classify(self, version: VersionRecord, images: list[np.ndarray]) -> Scores:
        plan = await self.plan(version)
        try:
            if plan.extractor is None:
                return await self._scores(plan, await self._whole_model(plan, images))
            views = await asyncio.gather(*(self._features(plan.extractor, image, plan.mirror) for image in images))
            return await self._scores(plan, await self._head(version, plan, views), views)
        except Exception as error:  # noqa: BLE001 - Ray wraps a replica's exception; ours are unwrapped
            raise _ours(error) from None

    async def classify_together(self, targets: list[tuple[VersionRecord, np.ndarray]]) -> list[Scores | ClassiflyError]:
        plans = await asyncio.gather(*(self.plan(version) for version, _ in targets), return_exceptions=True)
        mirror: dict[tuple, bool] = {}
        for plan in plans:
            if isinstance(plan, ServingPlan) and plan.extractor is not None:
                mirror[_shared(plan)] = mirror.get(_shared(plan), False) or plan.mirror
        passes: dict[tuple, asyncio.Future] = {}
        for (_, image), plan in zip(targets, plans, strict=True):
            if isinstance(plan, ServingPlan) and plan.extractor is not None and _shared(plan) not in passes:
                group = _shared(plan)
                passes[group] = asyncio.ensure_future(self._features(plan.extractor, image, mirror[group]))

        async def one(version: VersionRecord, image: np.ndarray, plan: ServingPlan | BaseException):
            try:
                if isinstance(plan, BaseException):
                    raise plan
                if plan.extractor is None:
                    return await self._scores(plan, await self._whole_model(plan, [image]))
                views = await passes[_shared(plan)]
                return await self._scores(plan, await self._head(version, plan, [views]), [views])
            except Exception as error:  # noqa: BLE001 - one version's failure is its own answer
                converted = _ours(error)
                if isinstance(converted, ClassiflyError):
                    return converted
                raise converted from None

        return await asyncio.gather(*(one(v, image, plan) for (v, image), plan in zip(targets, plans, strict=True)))

    async def plan(self, version: VersionRecord) -> ServingPlan:
        if not version.artifact_uri:
            raise NotReady(f"Version {version.version} has no stored model to classify with.")
        plan = self.plans.get(version.artifact_uri)
        if plan is None:
            plan = await run_in_threadpool(serving_plan, self.blobs, version.artifact_uri)
            self.plans.put(version.artifact_uri, plan)
        return plan

    async def warm(self, version: VersionRecord) -> None:
        """Load a version's plan, "none of the above" model and head (or whole model) before it answers."""
        plan = await self.plan(version)
        await self._scores(plan, np.ones((0, len(plan.class_names))))
        if plan.extractor is None:
            await self.full_models.options(multiplexed_model_id=plan.artifact_uri).warm.remote()
        else:
            ref = HeadRef(version.model_id, version.version, plan.artifact_uri, plan.head_file or "")
            await self.heads.warm.remote(ref)

    async def _scores(self, plan: ServingPlan, probabilities: np.ndarray, views: list[FeatureViews] | None = None):
        """The probabilities with each picture's "none of the above" share: from the features the head saw
        (centroid distance) or, for a whole model, from its best probability."""
        cached = self.oods.get(plan.artifact_uri)
        if cached is None:
            cached = (await run_in_threadpool(load_ood, self.blobs, plan),)
            self.oods.put(plan.artifact_uri, cached)
        ood = cached[0]
        if ood is None:
            return Scores(plan.class_names, probabilities)
        if ood.kind == "centroid":
            if views is None:
                return Scores(plan.class_names, probabilities)
            distances = ood.distances(features=np.stack([view.features for view in views]))
        else:
            distances = ood.distances(probabilities=probabilities)
        return Scores(plan.class_names, probabilities, ood.known_share(distances))

    async def _features(self, key: ExtractorKey, image: np.ndarray, mirror: bool) -> FeatureViews:
        return await self.extractor.extract.remote(FeatureRequest(key, image, mirror))

    async def _head(self, version: VersionRecord, plan: ServingPlan, views: list[FeatureViews]) -> np.ndarray:
        ref = HeadRef(version.model_id, version.version, plan.artifact_uri, plan.head_file or "")
        features = np.stack([view.features for view in views])
        mirrored = np.stack([view.mirrored for view in views]) if plan.mirror else None
        return np.asarray(await self.heads.predict.remote(ref, features, mirrored))

    async def _whole_model(self, plan: ServingPlan, images: list[np.ndarray]) -> np.ndarray:
        handle = self.full_models.options(multiplexed_model_id=plan.artifact_uri)
        return np.stack(await asyncio.gather(*(handle.predict.remote(image) for image in images)))


def _shared(plan: ServingPlan) -> tuple:
    """Versions with the same feature model and preprocessing see the same features for the same upload."""
    return (plan.extractor, plan.policy)


def _ours(error: Exception) -> Exception:
    """Our own error when a replica raised one (Ray wraps it as the `cause`); Unavailable when Serve is
    overloaded or a replica is gone; anything else unchanged (an opaque 500 with an error id)."""
    from ray import exceptions as ray_exceptions
    from ray.serve import exceptions as serve_exceptions

    cause = getattr(error, "cause", None)
    if isinstance(cause, ClassiflyError):
        return cause
    if isinstance(error, ClassiflyError):
        return error
    busy = (
        serve_exceptions.BackPressureError,
        serve_exceptions.DeploymentUnavailableError,
        serve_exceptions.ReplicaUnavailableError,
    )
    if isinstance(error, busy + (ray_exceptions.RayActorError,)):
        return Unavailable("Classification is busy or restarting. Try again in a few seconds.")
    return error
