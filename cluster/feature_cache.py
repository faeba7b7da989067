"""The feature cache: frozen-backbone features of every picture, computed once per (backbone, input size,
preprocessing, picture) by Ray tasks in batches, stored on the blob store, reused by every later training run
and every expansion of a model.

A cache is a folder of chunk files under `features/<key>/` on the blob store. A chunk holds the sha256 of the
pictures it covers, their features and the features of their mirror images (float16: half the bytes, and a
head trained on them is as accurate as on float32; a CNN base's mirrored rows repeat its plain ones, see
`_extract_batch`). Chunks are only ever added, each written under a new
name in one put, so readers never see half a chunk and two runs filling the same cache at once only cost a
duplicate row (the first row of a picture wins).
"""

from __future__ import annotations

import hashlib
import io
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import ray

from cluster.blobs import BlobStore
from cluster.resources import train_task_options
from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput
from pipelines.images import PreprocessingPolicy

logger = logging.getLogger("classifly.features")

CACHE_FORMAT = 1
EXTRACT_BATCH = 1024  # pictures per Ray task (one chunk file): amortises a task, still shows progress
INLINE_BATCH = 256  # pictures per chunk computed inside a trial: a stop is heard within seconds


class OutOfTime(Exception):
    """Feature extraction stopped because the caller's time was up."""


# Per worker process: loaded backbones and bases, reused by later tasks; the oldest go first in a long-lived
# process (the model updater loads a new base per update).
_EXTRACTORS: OrderedDict[tuple, object] = OrderedDict()
MAX_EXTRACTORS = 4
# Fewer missing pixels than this (pictures x side x side) are computed in the calling process, which is cheaper
# than starting Ray tasks that each load the network: ~10,000 MNIST-sized pictures, ~200 at 224 px.
INLINE_PIXELS = 8_000_000
PASS_PIXELS = 32 * 224 * 224


def feature_key(spec: CandidateSpec, policy: PreprocessingPolicy) -> str:
    """What decides a picture's features: the backbone, the side it sees, and how the picture was prepared."""
    if spec.backbone is None:
        raise InvalidInput(f"'{spec.title()}' has no pretrained backbone, so no cached features.")
    return f"{spec.backbone}-{spec.input_size}px-{policy.color}-{policy.image_size}px-{policy.resize}-v{CACHE_FORMAT}"


@dataclass(frozen=True, eq=False)
class CachedFeatures:
    """Features of some pictures in the order asked for, with those of their mirror images."""

    features: np.ndarray  # (pictures, dim) float16
    mirrored: np.ndarray  # (pictures, dim) float16


class FeatureCache:
    """One cache (one feature key) on a blob store."""

    def __init__(self, blobs: BlobStore, key: str):
        self.blobs = blobs
        self.key = key
        self.prefix = f"features/{key}/"

    def load(self, shas: Sequence[str]) -> tuple[np.ndarray, CachedFeatures | None]:
        """(found: bool per sha, the features of the found ones in order); None when nothing is cached."""
        wanted = {sha: row for row, sha in enumerate(shas)}
        found = np.zeros(len(shas), dtype=bool)
        features = mirrored = None
        for name in sorted(self.blobs.iter_keys(self.prefix)):
            if not name.endswith(".npz"):
                continue
            with np.load(io.BytesIO(self.blobs.get(name))) as chunk:
                chunk_shas = chunk["shas"]
                rows = [(wanted[sha], i) for i, sha in enumerate(chunk_shas.tolist()) if sha in wanted]
                rows = [(target, i) for target, i in rows if not found[target]]
                if not rows:
                    continue
                targets, sources = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
                if features is None:
                    dim = chunk["features"].shape[1]
                    features = np.zeros((len(shas), dim), np.float16)
                    mirrored = np.zeros((len(shas), dim), np.float16)
                features[targets] = chunk["features"][sources]
                mirrored[targets] = chunk["mirrored"][sources]
                found[targets] = True
        if features is None:
            return found, None
        return found, CachedFeatures(features, mirrored)

    def store(self, shas: Sequence[str], features: np.ndarray, mirrored: np.ndarray) -> None:
        if not (len(shas) == len(features) == len(mirrored)):
            raise InvalidInput("A feature chunk needs one sha, one feature row and one mirrored row per picture.")
        buffer = io.BytesIO()
        np.savez(
            buffer,
            shas=np.array(list(shas), dtype="U64"),
            features=features.astype(np.float16),
            mirrored=mirrored.astype(np.float16),
        )
        self.blobs.put(f"{self.prefix}{uuid.uuid4().hex}.npz", buffer.getvalue())


def _extractor(source: tuple, image_size: int, cache_dir: str):
    """The feature extractor a source names, loaded once per worker process: ("backbone", spec dict) for a
    pretrained backbone, ("base", blob root, blob key) for a stored feature base (a CNN cut before its head).
    """
    from pipelines.features import FeatureExtractor

    lookup = (*[str(part) for part in source], image_size)
    if lookup in _EXTRACTORS:
        _EXTRACTORS.move_to_end(lookup)
        return _EXTRACTORS[lookup]
    if ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None:
        from pipelines.training import configure_threads

        configure_threads(max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1))))
    if source[0] == "backbone":
        spec = CandidateSpec.from_dict(source[1])
        extractor = FeatureExtractor.for_spec(spec, image_size=image_size, cache_dir=cache_dir)
    else:
        import keras

        from cluster.blobs import open_blob_store

        with open_blob_store(source[1]).local_path(source[2]) as path:
            extractor = FeatureExtractor(keras.models.load_model(path))
    _EXTRACTORS[lookup] = extractor
    while len(_EXTRACTORS) > MAX_EXTRACTORS:
        _EXTRACTORS.popitem(last=False)
    return extractor


def pass_size(image_size: int) -> int:
    """Pictures per forward pass: about PASS_PIXELS pixels (64 at 224 px, 512 for MNIST- or CIFAR-sized
    pictures): each pass pays a fixed overhead, so small pictures go in bigger passes."""
    return max(64, min(512, PASS_PIXELS // (image_size * image_size)))


def _extract_batch(pictures: np.ndarray, source: tuple, image_size: int, cache_dir: str) -> tuple[np.ndarray, ...]:
    """Features of a batch of prepared pictures and of their mirror images (a Ray task, or inline).

    A stored CNN base's heads never learn from mirror images (the CNN saw its own augmentation while it was
    trained), so its mirrored rows repeat the plain ones instead of costing a second pass.
    """
    extractor = _extractor(source, image_size, cache_dir)
    batch = pass_size(image_size)
    plain = extractor.extract(pictures, batch).astype(np.float16)
    mirrored = plain if source[0] == "base" else extractor.extract(pictures, batch, mirrored=True).astype(np.float16)
    return plain, mirrored


def base_feature_key(base_key: str, base_bytes: bytes, policy: PreprocessingPolicy) -> str:
    """The cache of a stored feature base: named by the base's content, so copies of it share one cache."""
    digest = hashlib.sha256(base_bytes).hexdigest()[:20]
    return f"base-{digest}-{policy.color}-{policy.image_size}px-{policy.resize}-v{CACHE_FORMAT}"


def cached_features(
    blobs: BlobStore,
    spec: CandidateSpec,
    policy: PreprocessingPolicy,
    shas: Sequence[str],
    pictures: np.ndarray | Callable[[np.ndarray], np.ndarray],
    *,
    backbone_cache_dir: str,
    parallelism: int | None = None,
    report: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CachedFeatures:
    """`features_from_cache` for a pretrained backbone candidate."""
    return features_from_cache(
        blobs,
        feature_key(spec, policy),
        ("backbone", spec.to_dict()),
        policy,
        shas,
        pictures,
        backbone_cache_dir=backbone_cache_dir,
        parallelism=parallelism,
        report=report,
        should_stop=should_stop,
    )


def features_from_cache(
    blobs: BlobStore,
    key: str,
    source: tuple,
    policy: PreprocessingPolicy,
    shas: Sequence[str],
    pictures: np.ndarray | Callable[[np.ndarray], np.ndarray],
    *,
    backbone_cache_dir: str,
    parallelism: int | None = None,
    report: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    inline_small: bool = False,
) -> CachedFeatures:
    """The features of `pictures` (identified by `shas`) from `source` (see `_extractor`): read from the cache
    `key`, the missing ones computed in batches and added to the cache batch by batch (work done before a stop is
    kept). `parallelism` Ray tasks compute at once; None computes here (inside a trial, on its CPUs), and so do
    a few missing pictures (`INLINE_PIXELS`) when `inline_small` is set.
    `pictures` are the prepared pictures, or a function giving those of some rows (then only the pictures
    whose features are missing are ever decoded). `should_stop` is asked between batches computed here;
    when it says so, `OutOfTime` is raised (the batches done so far stay cached).
    """
    if isinstance(pictures, np.ndarray):
        if len(shas) != len(pictures):
            raise InvalidInput(f"{len(shas)} picture ids for {len(pictures)} pictures.")
        prepared = pictures

        def load(rows: np.ndarray) -> np.ndarray:
            return prepared[rows]
    else:
        load = pictures
    cache = FeatureCache(blobs, key)
    found, cached = cache.load(shas)
    missing = np.flatnonzero(~found)
    done = int(found.sum())
    if report:
        report(done, len(shas))
    if len(missing) == 0 and cached is not None:
        return cached
    side = policy.image_size
    batches = [missing[start : start + EXTRACT_BATCH] for start in range(0, len(missing), EXTRACT_BATCH)]
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def keep(rows: np.ndarray, plain: np.ndarray, mirrored: np.ndarray) -> None:
        nonlocal done
        cache.store([shas[i] for i in rows], plain, mirrored)
        results.append((rows, plain, mirrored))
        done += len(rows)
        if report:
            report(done, len(shas))

    if parallelism is None or (inline_small and len(missing) * side * side <= INLINE_PIXELS):
        for start in range(0, len(missing), INLINE_BATCH):
            if should_stop is not None and should_stop():
                raise OutOfTime(f"Stopped after the features of {done:,} of {len(shas):,} pictures.")
            rows = missing[start : start + INLINE_BATCH]
            keep(rows, *_extract_batch(load(rows), source, side, backbone_cache_dir))
    else:
        task = ray.remote(max_retries=1, **train_task_options(1))(_extract_batch)
        queue = iter(batches)
        pending: dict[ray.ObjectRef, np.ndarray] = {}

        def submit() -> None:
            rows = next(queue, None)
            if rows is not None:
                pending[task.remote(load(rows), source, side, backbone_cache_dir)] = rows

        for _ in range(max(1, parallelism)):
            submit()
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            rows = pending.pop(ready[0])
            keep(rows, *ray.get(ready[0]))
            submit()
    dim = results[0][1].shape[1]
    features = cached.features if cached is not None else np.zeros((len(shas), dim), np.float16)
    mirrored_all = cached.mirrored if cached is not None else np.zeros((len(shas), dim), np.float16)
    for rows, plain, mirrored in results:
        features[rows] = plain
        mirrored_all[rows] = mirrored
    logger.info("features %s: %d cached, %d computed", cache.key, len(shas) - len(missing), len(missing))
    return CachedFeatures(features, mirrored_all)
