"""The serving deployments behind the Ingress, each a thin adapter over cluster.serving:

- `Extractor`: the frozen pretrained backbones, shared by every model on them; `@serve.batch` turns the
  pictures of many requests (and many models) into one forward pass per feature model.
- `Heads`: numpy heads in an LRU keyed by (model, version); numpy only, so the replica stays small.
- `FullModels`: whole Keras models (from-scratch CNNs, fine-tuned backbones), multiplexed by artifact and batched.

This module imports no TensorFlow: the TF replicas load it on their first picture, so an idle platform starts
fast and pays the memory only when something is classified. `build_app` (serve/app.py) sets the options.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import asdict

import numpy as np
from ray import serve

from cluster.blobs import open_blob_store
from cluster.serving import (
    ExtractorKey,
    FeatureRequest,
    FeatureViews,
    HeadRef,
    Lru,
    features_for_requests,
    load_extractor,
    load_full_model,
    load_head,
    tensorflow_threads,
)
from pipelines.heads import Head

MODELS_PER_REPLICA = 4  # whole models kept loaded by one FullModels replica (a decorator argument in Serve)


class Extractor:
    """Pictures -> the features their heads decide on, batched across requests."""

    def __init__(self, backbone_dir: str, threads: int, max_batch_size: int, batch_wait_s: float):
        self.backbone_dir = backbone_dir
        self.threads = threads
        self.extractors: dict[ExtractorKey, object] = {}  # few: one per backbone, input size, colour, side
        self.passes: Counter[str] = Counter()
        self.extract.set_max_batch_size(max_batch_size)
        self.extract.set_batch_wait_timeout_s(batch_wait_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def extract(self, requests: list[FeatureRequest]) -> list[FeatureViews]:
        # Off the event loop, so requests keep arriving (and the next batch fills) during the pass.
        return await asyncio.to_thread(features_for_requests, requests, self._extractor)

    def _extractor(self, key: ExtractorKey):
        self.passes[key.backbone] += 1
        if key not in self.extractors:
            tensorflow_threads(self.threads)
            self.extractors[key] = load_extractor(key, self.backbone_dir)
        return self.extractors[key]

    def stats(self) -> dict[str, object]:
        """Forward passes per backbone and the feature models loaded (for tests and the admin page)."""
        return {"passes": dict(self.passes), "loaded": [asdict(key) for key in self.extractors]}


class Heads:
    """Features -> class probabilities with a version's numpy head."""

    def __init__(self, blob_root: str, cache_size: int):
        self.blobs = open_blob_store(blob_root)
        self.heads: Lru[Head] = Lru(cache_size)

    async def predict(self, ref: HeadRef, features: np.ndarray, mirrored: np.ndarray | None = None) -> np.ndarray:
        return (await self.warm(ref)).predict_proba_views(features, mirrored)

    async def warm(self, ref: HeadRef) -> Head:
        """The version's head, loaded into the LRU when missing (also called when a version is activated)."""
        key = (ref.model_id, ref.version)
        head = self.heads.get(key)
        if head is None:
            head = await asyncio.to_thread(load_head, self.blobs, ref)
            self.heads.put(key, head)
        return head


class FullModels:
    """Pictures -> class probabilities with a whole model, chosen by the request's multiplexed id (its artifact)."""

    def __init__(self, blob_root: str, backbone_dir: str, threads: int, max_batch_size: int, batch_wait_s: float):
        self.blobs = open_blob_store(blob_root)
        self.backbone_dir = backbone_dir
        self.threads = threads
        self.predict.set_max_batch_size(max_batch_size)
        self.predict.set_batch_wait_timeout_s(batch_wait_s)

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def model(self, artifact_uri: str):
        tensorflow_threads(self.threads)
        return await asyncio.to_thread(load_full_model, self.blobs, artifact_uri, self.backbone_dir)

    async def warm(self) -> None:
        """Load the request's model (its multiplexed id) before it answers."""
        await self.model(serve.get_multiplexed_model_id())

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        # Serve splits a batch by multiplexed id, so every picture here is for the same model.
        model = await self.model(serve.get_multiplexed_model_id())
        probabilities = await asyncio.to_thread(model.extract, np.stack(images))
        return list(probabilities)
