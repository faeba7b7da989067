"""Export a trained classifier as one self-contained file: `.keras` (Keras 3) or `.tflite` (LiteRT).

Input contract of every export: a batch of pictures as `pipelines.images.preprocess` makes them with the
model's policy (uint8, policy side x side, 1 channel for gray or 3 for RGB; the policy's resize mode and
side are recorded in the file). Everything after that (casting, gray to RGB, resizing to the backbone,
rescaling, mirrored views, the head) is inside the graph, which outputs class probabilities. The `.keras`
file also holds `classifly.json` (class names, policy, contract), which Keras itself ignores.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from pipelines.errors import InvalidInput
from pipelines.features import image_input, to_backbone_input
from pipelines.heads import Head
from pipelines.images import PreprocessingPolicy

METADATA_FILE = "classifly.json"
CONTRACT = (
    "Input: uint8 array (batch, {side}, {side}, {channels}): each picture decoded upright, converted to "
    "{color}, and made square by '{resize}' to {side}x{side} pixels (pipelines.images.preprocess). "
    "Output: float32 (batch, {classes}) class probabilities in the order of class_names."
)


def head_classifier(feature_model: keras.Model, head: Head, *, mirror: bool) -> keras.Model:
    """One Keras model from pictures to probabilities: a frozen-backbone feature model with its numpy head
    as Dense layers (features of the mirror image averaged in when the head was trained with them).
    """
    backbone = _inner_backbone(feature_model)
    _, side, _, channels = feature_model.input_shape
    inputs = image_input(int(side), int(channels))
    input_size = int(backbone.input_shape[1])
    features = backbone(to_backbone_input(inputs, input_size), training=False)
    if mirror:
        mirrored = backbone(to_backbone_input(inputs, input_size, mirror=True, prefix="mirrored_"), training=False)
        features = layers.Average(name="mirror_average")([features, mirrored])
    if features.shape[-1] != head.feature_dim:
        raise InvalidInput(f"The head expects {head.feature_dim} features but the backbone gives {features.shape[-1]}.")
    x = features
    hidden = None
    if head.hidden_weights is not None:
        hidden = layers.Dense(head.hidden_weights.shape[1], activation="relu", name="head_hidden")
        x = hidden(x)
    classifier = layers.Dense(head.num_classes, activation="softmax", name="head_classifier")
    outputs = classifier(x)
    if hidden is not None:
        hidden.set_weights([head.hidden_weights, head.hidden_bias])
    classifier.set_weights([head.weights, head.bias])
    return keras.Model(inputs, outputs, name="classifier")


def export_metadata(model: keras.Model, class_names: tuple[str, ...], policy: PreprocessingPolicy) -> dict[str, Any]:
    """What a user of the file needs besides the graph: class names, the policy and the input contract."""
    _, side, _, channels = model.input_shape
    if (side, channels) != (policy.image_size, 1 if policy.color == "gray" else 3):
        raise InvalidInput(f"The model takes {side}x{side}x{channels} pictures, which policy {policy} does not make.")
    if model.output_shape[-1] != len(class_names):
        raise InvalidInput(f"The model has {model.output_shape[-1]} outputs for {len(class_names)} class names.")
    contract = CONTRACT.format(
        side=side, channels=channels, color=policy.color, resize=policy.resize, classes=len(class_names)
    )
    return {"format": 1, "class_names": list(class_names), "policy": policy.to_dict(), "input_contract": contract}


def export_keras(
    model: keras.Model, path: str | os.PathLike, *, class_names: tuple[str, ...], policy: PreprocessingPolicy
) -> Path:
    """Save `model` as one `.keras` file that `keras.models.load_model` opens in safe mode, with metadata."""
    path = Path(path)
    if path.suffix != ".keras":
        raise InvalidInput(f"A Keras export must end in .keras, not '{path.name}'.")
    metadata = export_metadata(model, tuple(class_names), policy)
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(METADATA_FILE, json.dumps(metadata, indent=2))
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The class names, policy and input contract stored in an exported `.keras` file."""
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(METADATA_FILE))


def export_tflite(model: keras.Model, path: str | os.PathLike) -> Path:
    """Convert `model` to a `.tflite` flatbuffer (float32 weights, uint8 picture input, dynamic batch)."""
    path = Path(path)
    _, side, _, channels = model.input_shape
    signature = [tf.TensorSpec([None, side, side, channels], tf.uint8, name="image")]
    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / "saved_model"
        model.export(saved, format="tf_saved_model", verbose=False, input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        path.write_bytes(converter.convert())
    return path


def tflite_predict(path: str | os.PathLike, images: np.ndarray) -> np.ndarray:
    """Run an exported `.tflite` file on uint8 pictures (one at a time: the reference way to check it)."""
    interpreter = tf.lite.Interpreter(model_path=str(path))
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]
    rows = []
    for image in np.asarray(images):
        interpreter.resize_tensor_input(input_index, (1, *image.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(input_index, image[np.newaxis])
        interpreter.invoke()
        rows.append(interpreter.get_tensor(output_index)[0].copy())
    return np.stack(rows)


def _inner_backbone(feature_model: keras.Model) -> keras.Model:
    inner = [layer for layer in feature_model.layers if isinstance(layer, keras.Model)]
    if len(inner) != 1:
        raise InvalidInput(f"'{feature_model.name}' is not a feature model made by pipelines.features.")
    return inner[0]
