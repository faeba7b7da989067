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
from pipelines.heads import Head, HeadHistory, OnBest, OnEpoch, Resume, fit_head


def image_input(image_size: int, channels: int, *, name: str = "image") -> keras.KerasTensor:
    """The input every model takes: uint8 pictures as `preprocess` makes them."""
    if channels not in (1, 3):
        raise InvalidInput(f"Pictures must have 1 (gray) or 3 (RGB) channels, not {channels}.")
    return keras.Input(shape=(image_size, image_size, channels), dtype="uint8", name=name)


def to_backbone_input(
    images: keras.KerasTensor, input_size: int, *, mirror: bool = False, prefix: str = ""
) -> keras.KerasTensor:
    """uint8 pictures -> float RGB 0..255 at the backbone's side (optionally mirrored left-right first)."""
    _, image_size, width, channels = images.shape
    # Rescaling by 1 is a serializable cast to float32 (a Lambda would not load in Keras' safe mode).
    x = layers.Rescaling(1.0, name=f"{prefix}to_float")(images)
    if mirror:
        x = mirror_width(x, int(width), name=f"{prefix}mirror")
    if channels == 1:
        x = layers.Concatenate(name=f"{prefix}gray_to_rgb")([x, x, x])
    if input_size != image_size:
        x = layers.Resizing(input_size, input_size, interpolation="bilinear", name=f"{prefix}resize_to_backbone")(x)
    return x


def mirror_width(x: keras.KerasTensor, width: int, *, name: str) -> keras.KerasTensor:
    """Left-right mirror with built-in layers only (a saved model then loads anywhere without custom code):
    width moved last, multiplied by the anti-identity (exact: one 1.0 per column), moved back.
    """
    x = layers.Permute((1, 3, 2), name=f"{name}_width_last")(x)
    dense = layers.Dense(width, use_bias=False, trainable=False, name=f"{name}_reverse")
    x = dense(x)
    dense.set_weights([np.eye(width, dtype=np.float32)[::-1].copy()])
    return layers.Permute((1, 3, 2), name=f"{name}_width_back")(x)


def build_feature_model(backbone: keras.Model, *, image_size: int, channels: int) -> keras.Model:
    """Wrap `backbone` (RGB 0..255 at its own square side) to take policy-sized uint8 pictures."""
    inputs = image_input(image_size, channels)
    features = backbone(to_backbone_input(inputs, int(backbone.input_shape[1])), training=False)
    return keras.Model(inputs, features, name=f"{backbone.name}_features")


def split_backbone(backbone: keras.Model, top_blocks: int) -> tuple[keras.Model, keras.Model]:
    """(bottom: pictures -> (activations, features), top: activations -> features), cut before the last
    `top_blocks` blocks of an EfficientNet-Lite. Both share the backbone's layers, so training the top
    trains the backbone itself. Blocks join only at their ends, so such a cut has one tensor crossing it.
    """
    names = [layer.name for layer in backbone.layers]
    blocks = sorted({int(name[5:].split("_")[0]) for name in names if name.startswith("block")})
    if top_blocks < 1 or not blocks:
        raise InvalidInput(f"Cannot retrain the top {top_blocks} blocks of '{backbone.name}'.")
    first = blocks[-min(top_blocks, len(blocks))]
    if first == blocks[0]:
        cut_name = "stem_relu6"
    else:
        cut_name = next(n for n in (f"block{first - 1}_add", f"block{first - 1}_project_bn") if n in names)
    cut = backbone.get_layer(cut_name).output
    bottom = keras.Model(backbone.input, [cut, backbone.output], name=f"{backbone.name}_bottom")
    return bottom, keras.Model(cut, backbone.output, name=f"{backbone.name}_top")


class FeatureExtractor:
    """Runs a pictures -> vectors model (features, or class probabilities) in batches with compiled graphs,
    one for the pictures as they are and one for their mirror images.
    """

    def __init__(self, model: keras.Model):
        self.model = model
        _, self.image_size, _, self.channels = (int(d) if d else None for d in model.input_shape)
        self.output_shapes = [tuple(shape[1:]) for shape in _output_shapes(model)]
        self.feature_dim = int(self.output_shapes[0][-1])
        signature = [tf.TensorSpec([None, self.image_size, self.image_size, self.channels], tf.uint8)]

        @tf.function(input_signature=signature, jit_compile=False)  # XLA on CPU is ~10x slower here
        def plain(images: tf.Tensor) -> list[tf.Tensor]:
            return tf.nest.flatten(self.model(images, training=False))

        @tf.function(input_signature=signature, jit_compile=False)
        def mirrored(images: tf.Tensor) -> list[tf.Tensor]:
            return tf.nest.flatten(self.model(tf.reverse(images, axis=[2]), training=False))

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
        """float32 outputs (images, feature_dim); `mirrored` computes them for the left-right mirror images."""
        return self.extract_all(images, batch_size, mirrored=mirrored)[0]

    def extract_all(
        self, images: np.ndarray, batch_size: int = 64, *, mirrored: bool = False, dtype: type = np.float32
    ) -> list[np.ndarray]:
        """Every output of the model (e.g. inner activations and features) for all pictures, stored as `dtype`."""
        images = self._check(images)
        function = self._mirrored if mirrored else self._plain
        outs = [np.empty((len(images), *shape), dtype) for shape in self.output_shapes]
        for start in range(0, len(images), batch_size):
            results = function(tf.constant(images[start : start + batch_size]))
            for out, result in zip(outs, results, strict=True):
                out[start : start + batch_size] = result.numpy()
        return outs

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


def extract_views(extractor: FeatureExtractor, images: np.ndarray, mirror: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(features of every picture, features of the mirror images of the pictures where `mirror` is set, in order):
    one pass for all, one more for those to mirror. Heads that learned from mirrored pictures decide on the mean
    of both views (`Head.predict_proba_views`); several heads on one backbone share both passes.
    """
    mirror = np.asarray(mirror, dtype=bool)
    if mirror.shape != (len(images),):
        raise InvalidInput(f"Give one mirror flag per picture ({len(images)}), not {mirror.shape}.")
    features = extractor.extract(images)
    rows = np.flatnonzero(mirror)
    mirrored = extractor.extract(images[rows], mirrored=True) if len(rows) else features[:0]
    return features, mirrored


def head_from_features(
    spec: CandidateSpec,
    train: FeatureSet,
    val: FeatureSet | None,
    class_names: Sequence[str],
    *,
    on_epoch: OnEpoch | None = None,
    start: Head | None = None,
    patience: int | None = None,
    resume: Resume | None = None,
    on_best: OnBest | None = None,
) -> tuple[Head, HeadHistory]:
    """Fit the head of a frozen-backbone candidate on (possibly cached) features (from `start`'s weights, or
    continuing `resume`, when given: see `fit_head`)."""
    mirror = "flip" in spec.augmentation
    if mirror and (train.mirrored is None or (val is not None and val.mirrored is None)):
        raise InvalidInput(f"'{spec.title()}' learns from mirrored pictures: compute the features with mirror=True.")
    if not mirror:
        train = FeatureSet(train.features, train.labels)
        val = None if val is None else FeatureSet(val.features, val.labels)
    features, labels = train.training_rows()
    val_features = None if val is None else val.test_rows()
    val_labels = None if val is None else val.labels
    return fit_head(
        features,
        labels,
        val_features,
        val_labels,
        spec,
        class_names=class_names,
        on_epoch=on_epoch,
        patience=patience,
        start=start,
        resume=resume,
        on_best=on_best,
    )


def _output_shapes(model: keras.Model) -> list[tuple]:
    shapes = model.output_shape
    return list(shapes) if isinstance(shapes, list) else [shapes]
