"""Frozen-backbone features: the Keras model from policy-sized uint8 pictures to feature vectors, and a
compiled extractor that runs it in batches (never `model.predict` per call, which costs ~95 ms each here).

The feature model takes the pictures exactly as `pipelines.images.preprocess` makes them (uint8, the
policy's side, 1 or 3 channels): gray is repeated to RGB and the side resized to the backbone's input size
inside the graph, so a frozen head, a fine-tuned model and an export all share one input contract.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from pipelines.backbones import BACKBONES, load_backbone
from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput
from pipelines.heads import Head, HeadHistory, OnEpoch, fit_head


def build_input_adapter(image_size: int, channels: int, input_size: int, *, name: str = "image") -> tuple:
    """(input, float RGB 0..255 tensor at `input_size`): the shared front of every pretrained model."""
    if channels not in (1, 3):
        raise InvalidInput(f"Pictures must have 1 (gray) or 3 (RGB) channels, not {channels}.")
    inputs = keras.Input(shape=(image_size, image_size, channels), dtype="uint8", name=name)
    # Rescaling by 1 is a serializable cast to float32 (a Lambda would not load in Keras' safe mode).
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    if channels == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if input_size != image_size:
        x = layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize_to_backbone")(x)
    return inputs, x


def build_feature_model(backbone: keras.Model, *, image_size: int, channels: int) -> keras.Model:
    """Wrap `backbone` (RGB 0..255 at its own square side) to take policy-sized uint8 pictures."""
    input_size = int(backbone.input_shape[1])
    inputs, x = build_input_adapter(image_size, channels, input_size)
    features = backbone(x, training=False)
    return keras.Model(inputs, features, name=f"{backbone.name}_features")


class FeatureExtractor:
    """Computes backbone features for batches of uint8 pictures with one compiled graph per direction."""

    def __init__(self, feature_model: keras.Model):
        self.model = feature_model
        _, self.image_size, _, self.channels = (int(d) if d else None for d in feature_model.input_shape)
        self.feature_dim = int(feature_model.output_shape[-1])
        signature = [tf.TensorSpec([None, self.image_size, self.image_size, self.channels], tf.uint8)]

        @tf.function(input_signature=signature, jit_compile=False)  # XLA on CPU is ~10x slower here
        def plain(images: tf.Tensor) -> tf.Tensor:
            return self.model(images, training=False)

        @tf.function(input_signature=signature, jit_compile=False)
        def mirrored(images: tf.Tensor) -> tf.Tensor:
            return self.model(tf.reverse(images, axis=[2]), training=False)

        self._plain, self._mirrored = plain, mirrored

    @classmethod
    def for_spec(cls, spec: CandidateSpec, *, image_size: int, cache_dir: str | os.PathLike) -> FeatureExtractor:
        """The extractor of a backbone candidate, for pictures preprocessed to `image_size` in `spec.color`."""
        if spec.backbone not in BACKBONES:
            raise InvalidInput(f"Candidate '{spec.title()}' has no pretrained backbone to extract features with.")
        backbone = load_backbone(spec.backbone, cache_dir, input_size=spec.input_size)
        channels = 1 if spec.color == "gray" else 3
        return cls(build_feature_model(backbone, image_size=image_size, channels=channels))

    def extract(self, images: np.ndarray, batch_size: int = 64, *, mirrored: bool = False) -> np.ndarray:
        """float32 features (images, feature_dim); `mirrored` computes them for the left-right mirror images."""
        images = self._check(images)
        function = self._mirrored if mirrored else self._plain
        out = np.empty((len(images), self.feature_dim), np.float32)
        for start in range(0, len(images), batch_size):
            out[start : start + batch_size] = function(tf.constant(images[start : start + batch_size])).numpy()
        return out

    def extract_with_mirror(self, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Features of the pictures and of their mirror images (extra training rows; averaged at test time)."""
        return self.extract(images, batch_size), self.extract(images, batch_size, mirrored=True)

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise InvalidInput(f"Pictures must be uint8 arrays (as preprocess makes them), not {images.dtype}.")
        expected = (self.image_size, self.image_size, self.channels)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise InvalidInput(
                f"Pictures must have shape (images, {', '.join(map(str, expected))}), got {images.shape}."
            )
        return images


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """Features of some pictures (and of their mirror images, when the candidate uses "flip"), with labels."""

    features: np.ndarray
    labels: np.ndarray
    mirrored: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.features) != len(self.labels) or (
            self.mirrored is not None and self.mirrored.shape != self.features.shape
        ):
            raise InvalidInput("Features, mirrored features and labels must describe the same pictures.")

    @classmethod
    def compute(
        cls, extractor: FeatureExtractor, images: np.ndarray, labels: np.ndarray, *, mirror: bool, batch_size: int = 64
    ) -> FeatureSet:
        mirrored = extractor.extract(images, batch_size, mirrored=True) if mirror else None
        return cls(extractor.extract(images, batch_size), np.asarray(labels), mirrored)

    def training_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """The rows a head trains on: the features, plus the mirrored ones as extra rows with the same labels."""
        if self.mirrored is None:
            return self.features, self.labels
        return np.concatenate([self.features, self.mirrored]), np.concatenate([self.labels, self.labels])

    def test_rows(self) -> np.ndarray:
        """The rows a head predicts from: the mean of both views when mirrored features exist."""
        if self.mirrored is None:
            return self.features
        return (self.features + self.mirrored) * np.float32(0.5)


def head_from_features(
    spec: CandidateSpec,
    train: FeatureSet,
    val: FeatureSet | None,
    class_names: Sequence[str],
    *,
    on_epoch: OnEpoch | None = None,
) -> tuple[Head, HeadHistory]:
    """Fit the head of a frozen-backbone candidate on (possibly cached) features."""
    mirror = "flip" in spec.augmentation
    if mirror and (train.mirrored is None or (val is not None and val.mirrored is None)):
        raise InvalidInput(f"'{spec.title()}' learns from mirrored pictures: compute the features with mirror=True.")
    if not mirror:
        train = FeatureSet(train.features, train.labels)
        val = None if val is None else FeatureSet(val.features, val.labels)
    features, labels = train.training_rows()
    val_features = None if val is None else val.test_rows()
    val_labels = None if val is None else val.labels
    return fit_head(features, labels, val_features, val_labels, spec, class_names=class_names, on_epoch=on_epoch)
