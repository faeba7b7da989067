"""From-scratch CNN templates for pictures that ImageNet features fit poorly (tiny, gray, symbols).

A template is `spec.cnn_depth` stages, each a 3x3 convolution without padding (batch norm, ReLU) with
`spec.cnn_width * 2**i` filters followed by 2x2 max pooling; then the map is flattened when it is small
(where things are matters for digits and letters) or averaged when large; an optional hidden layer of
`spec.hidden_units` (batch norm, ReLU) is the named feature layer, then dropout and a softmax classifier.
The model takes the pictures as `preprocess` makes them (uint8, the policy's side), so the rescaling lives
in the graph; `split_features` cuts a trained model into feature base + numpy head.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput
from pipelines.heads import Head

FEATURE_LAYER = "features"
CLASSIFIER_LAYER = "classifier"
FLATTEN_MAX_SIDE = 6  # maps up to 6x6 are flattened (1,600 values for MNIST's 5x5x64); larger ones averaged


def build_scratch_cnn(spec: CandidateSpec, input_shape: tuple[int, int, int], num_classes: int) -> keras.Model:
    """The CNN template of `spec` for uint8 pictures of `input_shape` (side, side, channels)."""
    if spec.kind != "scratch_cnn":
        raise InvalidInput(f"'{spec.title()}' is not a from-scratch CNN candidate.")
    side, _, channels = _check_shape(input_shape)
    if num_classes < 2:
        raise InvalidInput(f"A classifier needs at least 2 classes, not {num_classes}.")
    final_side = spec.input_size
    for _ in range(spec.cnn_depth):
        final_side = (final_side - 2) // 2
    if final_side < 1:
        raise InvalidInput(
            f"{spec.cnn_depth} stages would shrink a {spec.input_size}-pixel picture to nothing: use fewer stages."
        )
    inputs = keras.Input(shape=(side, side, channels), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    if spec.input_size != side:
        x = layers.Resizing(spec.input_size, spec.input_size, interpolation="bilinear", name="resize")(x)
    for stage in range(spec.cnn_depth):
        name = f"stage{stage}"
        x = layers.Conv2D(spec.cnn_width * 2**stage, 3, use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.ReLU(name=f"{name}_relu")(x)
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    pooled_name = FEATURE_LAYER if not spec.hidden_units else "pooled"
    if final_side <= FLATTEN_MAX_SIDE:
        x = layers.Flatten(name=pooled_name)(x)
    else:
        x = layers.GlobalAveragePooling2D(name=pooled_name)(x)
    if spec.hidden_units:
        x = layers.Dense(spec.hidden_units, use_bias=False, name="hidden")(x)
        x = layers.BatchNormalization(name="hidden_bn")(x)
        x = layers.ReLU(name=FEATURE_LAYER)(x)
    x = layers.Dropout(spec.dropout, name="dropout")(x) if spec.dropout else x
    outputs = layers.Dense(num_classes, activation="softmax", name=CLASSIFIER_LAYER)(x)
    return keras.Model(inputs, outputs, name="scratch_cnn")


def split_features(model: keras.Model, class_names: tuple[str, ...]) -> tuple[keras.Model, Head]:
    """Cut a trained template into its feature base (pictures -> features) and a numpy `Head`."""
    try:
        features = model.get_layer(FEATURE_LAYER).output
        classifier = model.get_layer(CLASSIFIER_LAYER)
    except ValueError as error:
        raise InvalidInput(f"Model '{model.name}' has no '{FEATURE_LAYER}' and '{CLASSIFIER_LAYER}' layers.") from error
    kernel, bias = (np.asarray(weight, dtype=np.float32) for weight in classifier.get_weights())
    base = keras.Model(model.inputs, features, name=f"{model.name}_base")
    return base, Head(weights=kernel, bias=bias, class_names=tuple(class_names))


def join_features(base: keras.Model, head: Head) -> keras.Model:
    """The inverse of `split_features`: a feature base and a numpy head (e.g. refitted for new classes) as
    one Keras model from pictures to probabilities, with the same layer names (so it can be split again).
    """
    if int(base.output_shape[-1]) != head.feature_dim:
        raise InvalidInput(f"The head expects {head.feature_dim} features but the base gives {base.output_shape[-1]}.")
    x = base.output
    hidden = None
    if head.hidden_weights is not None:
        hidden = layers.Dense(head.hidden_weights.shape[1], activation="relu", name="head_hidden")
        x = hidden(x)
    classifier = layers.Dense(head.num_classes, activation="softmax", name=CLASSIFIER_LAYER)
    model = keras.Model(base.inputs, classifier(x), name="scratch_cnn")
    if hidden is not None:
        hidden.set_weights([head.hidden_weights, head.hidden_bias])
    classifier.set_weights([head.weights, head.bias])
    return model


def _check_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3 or input_shape[0] != input_shape[1] or input_shape[2] not in (1, 3):
        raise InvalidInput(f"Pictures must be square with 1 or 3 channels, not of shape {tuple(input_shape)}.")
    return int(input_shape[0]), int(input_shape[1]), int(input_shape[2])
