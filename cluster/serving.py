"""How a published version is served: its plan (read from the artifact's manifest), the plain requests that
cross between serving replicas, and the loaders each replica uses. TensorFlow is imported only by the loaders
that need it, so the API and the heads replica stay numpy-only.

A head artifact is served as a frozen backbone's features (shared by every model on the same backbone, input
size, colour and picture size) followed by its numpy head; any other artifact is a whole Keras model.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from cluster.blobs import BlobStore
from pipelines.errors import InvalidInput, NotFound, NotReady
from pipelines.heads import Head
from pipelines.images import PreprocessingPolicy
from pipelines.ood import OodModel

MANIFEST = "manifest.json"  # as written by cluster.artifacts.save_trained
V = TypeVar("V")


@dataclass(frozen=True)
class ExtractorKey:
    """One frozen feature model: a backbone at its input size, fed pictures of one colour and side."""

    backbone: str
    input_size: int
    color: str
    image_size: int


@dataclass(frozen=True)
class ServingPlan:
    artifact_uri: str
    class_names: tuple[str, ...]
    policy: PreprocessingPolicy
    extractor: ExtractorKey | None  # None: a whole Keras model, served by itself
    mirror: bool  # the head decides on the mean of a picture's features and its mirror image's
    head_file: str | None
    ood_file: str | None = None  # "none of the above" (pipelines.ood), absent in versions made before it


@dataclass(frozen=True)
class FeatureRequest:
    """One picture (uint8, as load_for_model made it) for the shared extractor; `mirror` asks for the mirror
    image's features too."""

    key: ExtractorKey
    image: np.ndarray
    mirror: bool


@dataclass(frozen=True, eq=False)
class FeatureViews:
    """A picture's features, and its mirror image's when they were asked for."""

    features: np.ndarray
    mirrored: np.ndarray | None = None


@dataclass(frozen=True)
class HeadRef:
    """Which head to apply: cached by (model_id, version), loaded from the artifact when missing."""

    model_id: str
    version: int
    artifact_uri: str
    head_file: str


def serving_plan(blobs: BlobStore, artifact_uri: str) -> ServingPlan:
    """Read the artifact's manifest (plain JSON; no model is loaded)."""
    try:
        manifest = json.loads(blobs.get(f"{artifact_uri}/{MANIFEST}"))
    except NotFound:
        raise NotReady(
            f"The stored model of this version ('{artifact_uri}') is missing, so it cannot classify. Activate "
            "another version or train the model again."
        ) from None
    spec: dict[str, Any] = manifest["spec"]
    policy = PreprocessingPolicy.from_dict(manifest["policy"])
    head_file = manifest["files"].get("head")
    if "base" in manifest["files"]:
        head_file = None  # a from-scratch CNN's base with a refitted head: served as one whole model
    extractor = None
    if head_file is not None:
        extractor = ExtractorKey(spec["backbone"], int(spec["input_size"]), spec["color"], policy.image_size)
    return ServingPlan(
        artifact_uri=artifact_uri,
        class_names=tuple(manifest["class_names"]),
        policy=policy,
        extractor=extractor,
        mirror=head_file is not None and "flip" in spec.get("augmentation", ()),
        head_file=head_file,
        ood_file=manifest["files"].get("ood"),
    )


def load_head(blobs: BlobStore, ref: HeadRef) -> Head:
    """A version's numpy head."""
    return Head.from_bytes(blobs.get(f"{ref.artifact_uri}/{ref.head_file}"))


def load_ood(blobs: BlobStore, plan: ServingPlan) -> OodModel | None:
    """A version's "none of the above" model, or None when it was published without one."""
    if plan.ood_file is None:
        return None
    try:
        return OodModel.from_bytes(blobs.get(f"{plan.artifact_uri}/{plan.ood_file}"))
    except NotFound:
        return None


def load_extractor(key: ExtractorKey, backbone_cache_dir: str | os.PathLike):
    """The compiled feature extractor for `key` (the pretrained backbone wrapped as training wrapped it)."""
    from pipelines.backbones import load_backbone
    from pipelines.features import FeatureExtractor, build_feature_model

    backbone = load_backbone(key.backbone, backbone_cache_dir, input_size=key.input_size)
    channels = 1 if key.color == "gray" else 3
    return FeatureExtractor(build_feature_model(backbone, image_size=key.image_size, channels=channels))


def load_full_model(blobs: BlobStore, artifact_uri: str, backbone_cache_dir: str | os.PathLike):
    """A whole stored Keras model as a compiled pictures -> probabilities extractor."""
    from cluster.artifacts import load_trained
    from pipelines.features import FeatureExtractor

    if serving_plan(blobs, artifact_uri).extractor is not None:
        raise InvalidInput(f"'{artifact_uri}' is a head on a shared backbone, not a whole model.")
    return FeatureExtractor(load_trained(blobs, artifact_uri, backbone_cache_dir).keras_model)


def features_for_requests(
    requests: Sequence[FeatureRequest], extractor_for: Callable[[ExtractorKey], Any]
) -> list[FeatureViews]:
    """The features of every request, in order: one pass per feature model for all of its pictures (plus one
    for those whose mirror image is asked for), however many models and requests they came from.
    """
    from pipelines.features import extract_views

    results: dict[int, FeatureViews] = {}
    groups: dict[ExtractorKey, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.key, []).append(index)
    for key, indexes in groups.items():
        images = np.stack([requests[i].image for i in indexes])
        flags = [requests[i].mirror for i in indexes]
        features, mirrored = extract_views(extractor_for(key), images, np.array(flags))
        mirrored_rows = iter(mirrored)
        for i, row, flag in zip(indexes, features, flags, strict=True):
            results[i] = FeatureViews(row, next(mirrored_rows) if flag else None)
    return [results[i] for i in range(len(requests))]


def tensorflow_threads(threads: int) -> None:
    """Size TensorFlow's thread pools for a serving replica (Ray's OMP setting does not reach TF)."""
    from pipelines.training import configure_threads

    configure_threads(threads)


class Lru(Generic[V]):
    """A small least-recently-used cache (its users load what is missing and `put` it)."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise InvalidInput(f"A cache needs room for at least one entry, not {capacity}.")
        self.capacity = capacity
        self.entries: OrderedDict[Hashable, V] = OrderedDict()

    def get(self, key: Hashable) -> V | None:
        value = self.entries.get(key)
        if value is not None:
            self.entries.move_to_end(key)
        return value

    def put(self, key: Hashable, value: V) -> None:
        self.entries[key] = value
        self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self.entries)
