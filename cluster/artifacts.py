"""Trained models as blob-store artifacts: a manifest plus a numpy head (frozen backbone) or a Keras file."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cluster.blobs import BlobStore
from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput
from pipelines.heads import Head
from pipelines.images import PreprocessingPolicy

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ArtifactManifest:
    spec: dict[str, Any]
    policy: dict[str, Any]
    class_names: list[str]
    files: dict[str, str]  # role -> file name under the artifact prefix

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, indent=2).encode()


def save_trained(blobs: BlobStore, prefix: str, trained, policy: PreprocessingPolicy) -> str:
    """Store a TrainedCandidate under `prefix`; returns the prefix (the artifact's URI in the catalog)."""
    files: dict[str, str] = {}
    if trained.head is not None:
        blobs.put(f"{prefix}/head.npz", trained.head.to_bytes())
        files["head"] = "head.npz"
    else:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.keras"
            trained.model.save(path)
            blobs.put_file(f"{prefix}/model.keras", path)
        files["model"] = "model.keras"
    manifest = ArtifactManifest(trained.spec.to_dict(), policy.to_dict(), list(trained.class_names), files)
    blobs.put(f"{prefix}/{MANIFEST}", manifest.to_json())
    return prefix


OOD_FILE = "ood.npz"


def add_ood(blobs: BlobStore, prefix: str, ood) -> None:
    """Store a version's "none of the above" model (pipelines.ood.OodModel) next to its head and list it in the
    manifest (written last, so a reader never sees it listed before it is stored)."""
    manifest = ArtifactManifest(**json.loads(blobs.get(f"{prefix}/{MANIFEST}")))
    blobs.put(f"{prefix}/{OOD_FILE}", ood.to_bytes())
    blobs.put(f"{prefix}/{MANIFEST}", replace(manifest, files={**manifest.files, "ood": OOD_FILE}).to_json())


class LoadedModel:
    """A stored model ready to predict on policy-preprocessed uint8 pictures."""

    def __init__(self, manifest: ArtifactManifest, head: Head | None, keras_model, feature_model):
        self.manifest = manifest
        self.spec = CandidateSpec.from_dict(manifest.spec)
        self.policy = PreprocessingPolicy.from_dict(manifest.policy)
        self.class_names = tuple(manifest.class_names)
        self.head = head
        self.keras_model = keras_model
        self.feature_model = feature_model

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        from pipelines.features import FeatureExtractor

        if self.head is None:
            return FeatureExtractor(self.keras_model).extract(images, batch_size)
        extractor = FeatureExtractor(self.feature_model)
        features = extractor.extract(images, batch_size)
        if "flip" in self.spec.augmentation:
            features = (features + extractor.extract(images, batch_size, mirrored=True)) * np.float32(0.5)
        return self.head.predict_proba(features)

    @property
    def mirror(self) -> bool:
        """Whether the model averages its view of each picture with the mirror image's."""
        return "flip" in self.spec.augmentation

    def feature_extractor(self):
        """Pictures -> the features this model decides on: the frozen backbone's, the from-scratch CNN's
        feature layer, or the fine-tuned backbone's. Out-of-fold heads and new heads are fitted on these.
        """
        import keras

        from pipelines.cnn import split_features
        from pipelines.features import FeatureExtractor, build_feature_model

        if self.head is not None:
            return FeatureExtractor(self.feature_model)
        if self.spec.kind == "scratch_cnn":
            base, _ = split_features(self.keras_model, self.class_names)
            return FeatureExtractor(base)
        inner = [layer for layer in self.keras_model.layers if isinstance(layer, keras.Model)]
        if len(inner) != 1:
            raise InvalidInput(f"Cannot find the backbone of the '{self.spec.title()}' model.")
        channels = 1 if self.policy.color == "gray" else 3
        return FeatureExtractor(build_feature_model(inner[0], image_size=self.policy.image_size, channels=channels))

    def features(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """(features, features of the mirror images or None when the model does not use them)."""
        extractor = self.feature_extractor()
        mirrored = extractor.extract(images, batch_size, mirrored=True) if self.mirror else None
        return extractor.extract(images, batch_size), mirrored

    def export_model(self):
        """One Keras model from policy-preprocessed uint8 pictures to class probabilities."""
        from pipelines.export import head_classifier

        if self.head is None:
            return self.keras_model
        return head_classifier(self.feature_model, self.head, mirror=self.mirror)


EXPORT_FORMATS = {"keras": "model.keras", "tflite": "model.tflite"}


def export_artifact(blob_root: str, prefix: str, fmt: str, backbone_cache_dir: str) -> str:
    """Write the artifact at `prefix` as one self-contained file in `fmt` (kept for later downloads);
    returns its blob key. Runs where TensorFlow may run (a Ray task), never in the API process.
    """
    from cluster.blobs import open_blob_store
    from pipelines import export

    if fmt not in EXPORT_FORMATS:
        raise InvalidInput(f"Export format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}.", field="format")
    blobs = open_blob_store(blob_root)
    key = f"exports/{prefix}/{EXPORT_FORMATS[fmt]}"
    if blobs.exists(key):
        return key
    model = load_trained(blobs, prefix, backbone_cache_dir)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / EXPORT_FORMATS[fmt]
        graph = model.export_model()
        if fmt == "keras":
            export.export_keras(graph, path, class_names=model.class_names, policy=model.policy)
        else:
            export.export_tflite(graph, path)
        blobs.put_file(key, path)  # copied to a temporary name, then renamed: never seen half-written
    return key


def load_trained(blobs: BlobStore, prefix: str, backbone_cache_dir: str | os.PathLike) -> LoadedModel:
    """Load a stored model (rebuilding the frozen backbone from its spec when the artifact is a head)."""
    import keras

    from pipelines.features import FeatureExtractor

    manifest = ArtifactManifest(**json.loads(blobs.get(f"{prefix}/{MANIFEST}")))
    if "base" in manifest.files and "head" in manifest.files:  # a CNN's feature base with a refitted head
        from pipelines.cnn import join_features

        head = Head.from_bytes(blobs.get(f"{prefix}/{manifest.files['head']}"))
        with blobs.local_path(f"{prefix}/{manifest.files['base']}") as path:
            base = keras.models.load_model(path)
        return LoadedModel(manifest, None, join_features(base, head), None)
    if "head" in manifest.files:
        head = Head.from_bytes(blobs.get(f"{prefix}/{manifest.files['head']}"))
        spec = CandidateSpec.from_dict(manifest.spec)
        policy = PreprocessingPolicy.from_dict(manifest.policy)
        extractor = FeatureExtractor.for_spec(spec, image_size=policy.image_size, cache_dir=backbone_cache_dir)
        return LoadedModel(manifest, head, None, extractor.model)
    with blobs.local_path(f"{prefix}/{manifest.files['model']}") as path:
        model = keras.models.load_model(path)
    return LoadedModel(manifest, None, model, None)


def trained_weights(blobs: BlobStore, prefix: str) -> tuple[Head | None, list[np.ndarray] | None]:
    """(head, None) or (None, the Keras model's weights) of a stored model, without loading any backbone: what
    a training continued from this artifact (a trial checkpoint) starts from."""
    import keras

    manifest = ArtifactManifest(**json.loads(blobs.get(f"{prefix}/{MANIFEST}")))
    if "head" in manifest.files:
        return Head.from_bytes(blobs.get(f"{prefix}/{manifest.files['head']}")), None
    with blobs.local_path(f"{prefix}/{manifest.files['model']}") as path:
        return None, keras.models.load_model(path).get_weights()


def copy_artifact(source: BlobStore, source_prefix: str, target: BlobStore, prefix: str) -> str:
    """Copy the model `save_trained` stored at `source_prefix` to `prefix` of `target`, file by file, the manifest
    last (a reader never sees a manifest whose files are missing); returns `prefix`."""
    manifest = source.get(f"{source_prefix}/{MANIFEST}")
    for name in ArtifactManifest(**json.loads(manifest)).files.values():
        with source.local_path(f"{source_prefix}/{name}") as path:
            target.put_file(f"{prefix}/{name}", path)
    target.put(f"{prefix}/{MANIFEST}", manifest)
    return prefix
