"""Training one candidate: Keras fit for fine-tuned backbones and from-scratch CNNs, features + numpy head for
frozen backbones. `on_epoch(epoch, metrics) -> bool` reports every epoch and stops training when it returns
True (a scheduler's early stop, or the target reached); the caller (a Tune trainable) decides.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from pipelines.backbones import load_backbone
from pipelines.candidates import CandidateSpec
from pipelines.cnn import CLASSIFIER_LAYER, build_scratch_cnn
from pipelines.errors import InvalidInput
from pipelines.features import FeatureExtractor, FeatureSet, build_input_adapter, head_from_features
from pipelines.heads import Head

OnEpoch = Callable[[int, dict[str, float]], bool]


@dataclass(frozen=True, eq=False)
class TrainingData:
    """Pictures already preprocessed by the policy (uint8, N x side x side x channels) with class indices."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    class_names: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        for split in ("train", "val"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
                raise InvalidInput(f"{split} pictures must be uint8 (images, side, side, 1 or 3), got {images.shape}.")
            if labels.ndim != 1 or len(labels) != len(images) or len(labels) == 0:
                raise InvalidInput(f"{split}: {len(images)} pictures but labels of shape {labels.shape}.")
            if labels.min() < 0 or labels.max() >= len(self.class_names):
                raise InvalidInput(f"{split} labels must be class indices below {len(self.class_names)}.")
        if self.train_images.shape[1:] != self.val_images.shape[1:]:
            raise InvalidInput("Training and validation pictures must have the same shape.")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.train_images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(eq=False)
class TrainedCandidate:
    """A trained candidate: a whole Keras model, or a feature model + numpy head; and how training went."""

    spec: CandidateSpec
    class_names: tuple[str, ...]
    val_accuracy: float
    epochs_run: int
    seconds: float
    stopped_because: str
    history: list[dict[str, float]] = field(default_factory=list)
    model: keras.Model | None = None  # pictures -> probabilities (finetune, scratch_cnn)
    feature_model: keras.Model | None = None  # pictures -> features (frozen_head)
    head: Head | None = None

    @property
    def mirror_at_test(self) -> bool:
        """Frozen heads trained with mirrored rows average the features of both views at test time."""
        return self.head is not None and "flip" in self.spec.augmentation

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities for policy-preprocessed uint8 pictures, exactly as the platform serves them."""
        if self.head is None:
            return FeatureExtractor(self.model).extract(images, batch_size)
        extractor = FeatureExtractor(self.feature_model)
        features = extractor.extract(images, batch_size)
        if self.mirror_at_test:
            features = (features + extractor.extract(images, batch_size, mirrored=True)) * np.float32(0.5)
        return self.head.predict_proba(features)


def configure_threads(threads: int) -> None:
    """Match TensorFlow's thread pools to the CPUs a trial owns; call before any TF op of the process."""
    if threads < 1:
        raise InvalidInput(f"threads must be at least 1, not {threads}.")
    for getter, setter, value in (
        (tf.config.threading.get_intra_op_parallelism_threads, tf.config.threading.set_intra_op_parallelism_threads,
         threads),
        (tf.config.threading.get_inter_op_parallelism_threads, tf.config.threading.set_inter_op_parallelism_threads,
         min(threads, 2)),
    ):  # fmt: skip
        if getter() == value:
            continue
        try:
            setter(value)
        except RuntimeError:
            # A reused actor's TF is already initialized: the pools keep their size; nothing else to do.
            pass


def train_candidate(
    spec: CandidateSpec,
    data: TrainingData,
    *,
    on_epoch: OnEpoch | None = None,
    threads: int | None = None,
    backbone_cache_dir: str | os.PathLike | None = None,
) -> TrainedCandidate:
    """Train one candidate on `data`, reporting each epoch to `on_epoch`."""
    if threads is not None:
        configure_threads(threads)
    if spec.kind in ("frozen_head", "finetune") and backbone_cache_dir is None:
        raise InvalidInput(f"'{spec.title()}' needs backbone_cache_dir to load its pretrained weights.")
    keras.utils.set_random_seed(spec.seed)
    if spec.kind == "frozen_head":
        return _train_frozen_head(spec, data, on_epoch, backbone_cache_dir)
    if spec.kind == "scratch_cnn":
        model = build_scratch_cnn(spec, data.image_shape, data.num_classes)
    else:
        model = build_finetune_model(spec, data.image_shape, data.num_classes, backbone_cache_dir)
    return _fit_keras(spec, model, data, on_epoch)


def build_finetune_model(
    spec: CandidateSpec, image_shape: tuple[int, int, int], num_classes: int, cache_dir: str | os.PathLike
) -> keras.Model:
    """A pretrained backbone whose top `spec.finetune_blocks` blocks (and head conv) train, + a softmax layer.

    The backbone runs with `training=False`, so its batch norms keep their ImageNet statistics: with
    small batches on a CPU, updating them hurts more than it helps (keras-io's transfer-learning guide).
    """
    if spec.kind != "finetune":
        raise InvalidInput(f"'{spec.title()}' is not a fine-tune candidate.")
    backbone = load_backbone(spec.backbone, cache_dir, input_size=spec.input_size)
    block_indices = sorted(
        {int(layer.name[5:].split("_")[0]) for layer in backbone.layers if layer.name[:5] == "block"}
    )
    first_trained = block_indices[-min(spec.finetune_blocks, len(block_indices))]
    for layer in backbone.layers:
        index = int(layer.name[5:].split("_")[0]) if layer.name[:5] == "block" else None
        top = layer.name.startswith("head_") or (index is not None and index >= first_trained)
        layer.trainable = top and not isinstance(layer, layers.BatchNormalization)
    inputs, x = build_input_adapter(image_shape[0], image_shape[2], spec.input_size)
    x = backbone(x, training=False)
    x = layers.Dropout(spec.dropout, name="dropout")(x) if spec.dropout else x
    outputs = layers.Dense(num_classes, activation="softmax", name=CLASSIFIER_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"{spec.backbone}_finetuned")


def augmenter(augmentation: Sequence[str], seed: int) -> keras.Sequential | None:
    """Keras random layers for the spec's augmentation names (float 0..255 in, float out); None for none."""
    factories = {
        "flip": lambda: layers.RandomFlip("horizontal", seed=seed),
        "shift": lambda: layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed),
        "rotate": lambda: layers.RandomRotation(0.04, fill_mode="constant", seed=seed),
        "zoom": lambda: layers.RandomZoom((-0.15, 0.15), fill_mode="constant", seed=seed),
        "contrast": lambda: layers.RandomContrast(0.2, value_range=(0, 255), seed=seed),
    }
    chosen = [factories[name]() for name in sorted(augmentation)]
    return keras.Sequential(chosen, name="augmentation") if chosen else None


def make_dataset(
    images: np.ndarray, labels: np.ndarray, num_classes: int, *, batch_size: int, shuffle: bool,
    augmentation: Sequence[str] = (), seed: int = 0,
) -> tf.data.Dataset:  # fmt: skip
    """Batches of (uint8 pictures, one-hot labels); augmented copies are rounded back to uint8."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    augment = augmenter(augmentation, seed)

    def prepare(batch_images: tf.Tensor, batch_labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if augment is not None:
            moved = augment(tf.cast(batch_images, tf.float32), training=True)
            batch_images = tf.cast(tf.clip_by_value(tf.round(moved), 0, 255), tf.uint8)
        return batch_images, tf.one_hot(batch_labels, num_classes)

    return dataset.map(prepare, num_parallel_calls=1).prefetch(2)


class EpochReporter(keras.callbacks.Callback):
    """Calls `on_epoch(epoch, metrics)` at each epoch end and stops training when it returns True."""

    def __init__(self, on_epoch: OnEpoch | None):
        super().__init__()
        self.on_epoch, self.rows, self.stopped_by_caller = on_epoch, [], False
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        metrics = {
            "epoch": float(epoch + 1),
            "val_accuracy": float(logs.get("val_accuracy", 0.0)),
            "train_accuracy": float(logs.get("accuracy", 0.0)),
            "loss": float(logs.get("loss", 0.0)),
            "val_loss": float(logs.get("val_loss", 0.0)),
            "seconds": time.perf_counter() - self._started,
        }
        self.rows.append(metrics)
        if self.on_epoch is not None and self.on_epoch(epoch + 1, dict(metrics)):
            self.stopped_by_caller = True
            self.model.stop_training = True


def _fit_keras(
    spec: CandidateSpec, model: keras.Model, data: TrainingData, on_epoch: OnEpoch | None
) -> TrainedCandidate:
    steps_per_epoch = -(-len(data.train_labels) // spec.batch_size)
    warmup = min(steps_per_epoch, spec.max_epochs * steps_per_epoch // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=spec.max_epochs * steps_per_epoch - warmup, warmup_target=spec.learning_rate,
        warmup_steps=warmup,
    )  # fmt: skip
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=spec.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=spec.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=False,  # XLA on CPU is far slower here (BACKBONES.md)
    )
    train = make_dataset(
        data.train_images, data.train_labels, data.num_classes, batch_size=spec.batch_size, shuffle=True,
        augmentation=sorted(spec.augmentation), seed=spec.seed,
    )  # fmt: skip
    val = make_dataset(data.val_images, data.val_labels, data.num_classes, batch_size=256, shuffle=False)
    reporter = EpochReporter(on_epoch)
    best = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=max(3, spec.max_epochs // 4), restore_best_weights=True, mode="max"
    )
    started = time.perf_counter()
    model.fit(train, validation_data=val, epochs=spec.max_epochs, callbacks=[reporter, best], verbose=0)
    rows = reporter.rows
    if reporter.stopped_by_caller:
        because = "asked to stop"
    elif len(rows) < spec.max_epochs:
        because = f"no better validation accuracy for {best.patience} epochs"
    else:
        because = "reached the epoch limit"
    return TrainedCandidate(
        spec=spec,
        class_names=data.class_names,
        val_accuracy=max((row["val_accuracy"] for row in rows), default=0.0),
        epochs_run=len(rows),
        seconds=time.perf_counter() - started,
        stopped_because=because,
        history=rows,
        model=model,
    )


def _train_frozen_head(
    spec: CandidateSpec, data: TrainingData, on_epoch: OnEpoch | None, cache_dir: str | os.PathLike
) -> TrainedCandidate:
    started = time.perf_counter()
    extractor = FeatureExtractor.for_spec(spec, image_size=data.image_shape[0], cache_dir=cache_dir)
    mirror = "flip" in spec.augmentation
    train = FeatureSet.compute(extractor, data.train_images, data.train_labels, mirror=mirror)
    val = FeatureSet.compute(extractor, data.val_images, data.val_labels, mirror=mirror)
    head, history = head_from_features(spec, train, val, data.class_names, on_epoch=on_epoch)
    return TrainedCandidate(
        spec=spec,
        class_names=data.class_names,
        val_accuracy=history.best_val_accuracy,
        epochs_run=len(history.epochs),
        seconds=time.perf_counter() - started,
        stopped_because=history.stopped_because,
        history=history.epochs,
        feature_model=extractor.model,
        head=head,
    )
