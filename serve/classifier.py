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
from cluster.serving import FeatureRequest, HeadRef, Lru, ServingPlan, serving_plan
from pipelines.errors import ClassiflyError, NotReady, Unavailable

PLAN_CACHE_SIZE = 1024  # manifests are a few hundred bytes and never change for a version


@dataclass(frozen=True)
class Scores:
    class_names: tuple[str, ...]
    probabilities: np.ndarray  # (pictures, classes), rows in the order the pictures were given


class Classifier(Protocol):
    async def classify(self, version: VersionRecord, images: list[np.ndarray]) -> Scores:
        """Class probabilities of pictures already made model input by `load_for_model` with the version's policy."""
        ...


class ServeClassifier:
    """Classifies through the serving deployments; one call per picture to the batching ones, so pictures of
    concurrent requests (and of several files in one request) share forward passes.
    """

    def __init__(self, blobs: BlobStore, extractor, heads, full_models):
        self.blobs = blobs
        self.extractor, self.heads, self.full_models = extractor, heads, full_models
        self.plans: Lru[ServingPlan] = Lru(PLAN_CACHE_SIZE)

    async def classify(self, version: VersionRecord, images: list[np.ndarray]) -> Scores:
        plan = await self.plan(version)
        try:
            if plan.extractor is not None and plan.head_file is not None:
                requests = [FeatureRequest(plan.extractor, image, plan.mirror) for image in images]
                features = await asyncio.gather(*(self.extractor.extract.remote(r) for r in requests))
                ref = HeadRef(version.model_id, version.version, plan.artifact_uri, plan.head_file)
                probabilities = await self.heads.predict.remote(ref, np.stack(features))
            else:
                handle = self.full_models.options(multiplexed_model_id=plan.artifact_uri)
                probabilities = np.stack(await asyncio.gather(*(handle.predict.remote(image) for image in images)))
        except Exception as error:  # noqa: BLE001 - Ray wraps a replica's exception; ours are unwrapped
            raise _ours(error) from None
        return Scores(plan.class_names, np.asarray(probabilities))

    async def plan(self, version: VersionRecord) -> ServingPlan:
        if not version.artifact_uri:
            raise NotReady(f"Version {version.version} has no stored model to classify with.")
        plan = self.plans.get(version.artifact_uri)
        if plan is None:
            plan = await run_in_threadpool(serving_plan, self.blobs, version.artifact_uri)
            self.plans.put(version.artifact_uri, plan)
        return plan


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
