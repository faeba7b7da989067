"""Training one candidate: frozen backbone + numpy head, fine-tuned backbone top, or from-scratch CNN.

`on_epoch(epoch, metrics) -> bool` reports every epoch and stops training when it returns True (a
scheduler's early stop, the target reached, a cancel); the caller (a Tune trainable) decides. `on_best(candidate)`
sees the candidate at each epoch that is its best so far (to checkpoint it), and `start` continues an earlier
attempt from such a checkpoint. Fine-tuning
runs the frozen part of the backbone once and trains the top blocks on its cached activations: on a CPU
that makes an epoch several times cheaper than passing every picture through the whole network again.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import keras
import numpy as np
import tensorflow as tf
from keras import layers

from pipelines.backbones import load_backbone
from pipelines.candidates import CandidateSpec
from pipelines.cnn import CLASSIFIER_LAYER, build_scratch_cnn
from pipelines.errors import InvalidInput
from pipelines.features import (
    FeatureExtractor,
    FeatureSet,
    head_from_features,
    image_input,
    split_backbone,
    to_backbone_input,
)
from pipelines.heads import Head, Resume, fit_head

OnEpoch = Callable[[int, dict[str, float]], bool]
OnBest = Callable[["TrainedCandidate"], None]

# The warm-start head of a fine-tune: fitted on frozen features first, so that fine-tuning starts from a
# good classifier instead of pushing random gradients into the pretrained blocks.
_WARM_START = {"learning_rate": 1e-3, "batch_size": 64, "max_epochs": 60, "weight_decay": 1e-3, "dropout": 0.0}


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
        side, width, channels = self.train_images.shape[1:]
        return int(side), int(width), int(channels)

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


@dataclass(frozen=True, eq=False)
class StartFrom:
    """An earlier attempt's best epoch to continue from (a trial retried after its machine was lost): training
    goes on at the epoch after `epochs_done`, learning-rate schedule included (optimizer moments start afresh),
    and keeps these weights unless a later epoch beats `val_accuracy`."""

    epochs_done: int
    val_accuracy: float
    head: Head | None = None  # a frozen-backbone candidate's head
    weights: list[np.ndarray] | None = None  # the whole Keras model's weights (`model.get_weights()` order)

    def __post_init__(self) -> None:
        if (self.head is None) == (self.weights is None):
            raise InvalidInput("Continue training from either a head or a Keras model's weights.")
        if self.epochs_done < 1:
            raise InvalidInput(f"Continue training after at least one epoch, not {self.epochs_done}.")


def configure_threads(threads: int) -> None:
    """Match TensorFlow's thread pools to the CPUs a trial owns; call before any TF op of the process."""
    if threads < 1:
        raise InvalidInput(f"threads must be at least 1, not {threads}.")
    threading = tf.config.threading
    for get, set_, value in (
        (threading.get_intra_op_parallelism_threads, threading.set_intra_op_parallelism_threads, threads),
        (threading.get_inter_op_parallelism_threads, threading.set_inter_op_parallelism_threads, min(threads, 2)),
    ):
        if get() == value:
            continue
        try:
            set_(value)
        except RuntimeError:
            pass  # a reused actor's TF is already initialized: its pools keep their size


def train_candidate(
    spec: CandidateSpec,
    data: TrainingData,
    *,
    on_epoch: OnEpoch | None = None,
    threads: int | None = None,
    backbone_cache_dir: str | os.PathLike | None = None,
    features: tuple[FeatureSet, FeatureSet] | None = None,
    on_best: OnBest | None = None,
    start: StartFrom | None = None,
) -> TrainedCandidate:
    """Train one candidate on `data`, reporting each epoch to `on_epoch`.

    A frozen-backbone candidate given `features` (train, validation; e.g. from the feature cache) fits its
    head on them without running the backbone; the result then has no feature model (store its head).

    `on_best(candidate)` is called, before `on_epoch`, at each epoch whose validation accuracy is the best so
    far, with the candidate as it is then (`epochs_run` is that epoch; no feature model): its Keras model is the
    live one being trained, so save it at once and keep no reference. `start` continues an earlier attempt.
    """
    if threads is not None:
        configure_threads(threads)
    if spec.kind != "scratch_cnn" and backbone_cache_dir is None:
        raise InvalidInput(f"'{spec.title()}' needs backbone_cache_dir to load its pretrained weights.")
    keras.utils.set_random_seed(spec.seed)
    started = time.perf_counter()
    if start is not None and (start.head is None) != (spec.kind != "frozen_head"):
        raise InvalidInput(f"'{spec.title()}' cannot continue from a checkpoint of another kind of model.")
    progress = _Progress(on_epoch, on_best, start)
    if spec.kind == "frozen_head" and features is not None:
        trained = _head_on_features(spec, data.class_names, *features, progress=progress)
    elif spec.kind == "frozen_head":
        trained = _train_frozen_head(spec, data, progress, backbone_cache_dir)
    elif spec.kind == "finetune":
        trained = _train_finetune(spec, data, progress, backbone_cache_dir)
    else:
        trained = _train_scratch_cnn(spec, data, progress)
    trained.seconds = time.perf_counter() - started
    return trained


@dataclass(frozen=True)
class _Progress:
    """What a training function reports to and where it starts (the arguments of `train_candidate`)."""

    on_epoch: OnEpoch | None = None
    on_best: OnBest | None = None
    start: StartFrom | None = None

    @property
    def epochs_done(self) -> int:
        return self.start.epochs_done if self.start is not None else 0


def augmenter(augmentation: Sequence[str], seed: int) -> keras.Sequential | None:
    """Keras random layers for the spec's augmentation names (float 0..255 in and out); None for none."""
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
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    *,
    batch_size: int,
    shuffle: bool,
    augmentation: Sequence[str] = (),
    seed: int = 0,
) -> tf.data.Dataset:
    """Batches of (inputs, one-hot labels). uint8 pictures may be augmented (rounded back to uint8);
    other arrays (cached float16 activations) are cast to float32.
    """
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32)))
    if shuffle:
        dataset = dataset.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    augment = augmenter(augmentation, seed) if images.dtype == np.uint8 else None

    def prepare(batch_inputs: tf.Tensor, batch_labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if augment is not None:
            moved = augment(tf.cast(batch_inputs, tf.float32), training=True)
            batch_inputs = tf.cast(tf.clip_by_value(tf.round(moved), 0, 255), tf.uint8)
        elif batch_inputs.dtype != tf.uint8:
            batch_inputs = tf.cast(batch_inputs, tf.float32)
        return batch_inputs, tf.one_hot(batch_labels, num_classes)

    return dataset.map(prepare, num_parallel_calls=1).prefetch(2)


class EpochReporter(keras.callbacks.Callback):
    """At each epoch end: metrics to `on_epoch` (True stops), best weights kept (and `on_best(epoch, accuracy)`
    called), stop after `patience` epochs without a better validation accuracy. `val_accuracy`, when given,
    replaces Keras' own figure. With `start`, the weights the model has when training begins are the best so
    far, from epoch `start.epochs_done` at `start.val_accuracy` (fit from `initial_epoch=start.epochs_done`).
    """

    def __init__(
        self,
        on_epoch: OnEpoch | None,
        patience: int,
        val_accuracy: Callable[[], float] | None = None,
        *,
        on_best: Callable[[int, float], None] | None = None,
        start: StartFrom | None = None,
    ):
        super().__init__()
        self.on_epoch, self.patience, self.val_accuracy, self.on_best = on_epoch, patience, val_accuracy, on_best
        self.rows: list[dict[str, float]] = []
        self.best_epoch, self.best_weights, self.stopped_because = 0, None, "reached the epoch limit"
        self.best_val = 0.0
        if start is not None:
            self.best_epoch, self.best_val = start.epochs_done, start.val_accuracy
        self._started = time.perf_counter()

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.best_epoch and self.best_weights is None:
            self.best_weights = self.model.get_weights()  # the earlier attempt's best, until an epoch beats it

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        val = self.val_accuracy() if self.val_accuracy else float(logs.get("val_accuracy", 0.0))
        metrics = {
            "epoch": float(epoch + 1),
            "val_accuracy": val,
            "train_accuracy": float(logs.get("accuracy", 0.0)),
            "loss": float(logs.get("loss", 0.0)),
            "seconds": time.perf_counter() - self._started,
        }
        self.rows.append(metrics)
        if self.best_epoch == 0 or val > self.best_val:
            self.best_epoch, self.best_val, self.best_weights = epoch + 1, val, self.model.get_weights()
            if self.on_best is not None:
                self.on_best(epoch + 1, val)
        if self.on_epoch is not None and self.on_epoch(epoch + 1, dict(metrics)):
            self.stopped_because, self.model.stop_training = "asked to stop", True
        elif epoch + 1 - self.best_epoch >= self.patience:
            self.stopped_because = f"no better validation accuracy for {self.patience} epochs"
            self.model.stop_training = True

    def restore_best(self) -> float:
        """Put the best epoch's weights back; returns its validation accuracy."""
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        return self.best_val

    @property
    def last_epoch(self) -> int:
        """The number of the last epoch trained (counting an earlier attempt's)."""
        return int(self.rows[-1]["epoch"]) if self.rows else self.best_epoch


def compile_for(spec: CandidateSpec, model: keras.Model, steps_per_epoch: int, epochs_done: int = 0) -> None:
    """AdamW with a one-epoch warm-up then cosine decay over the epoch budget; label-smoothed cross-entropy.
    `epochs_done` (a resumed training) moves the schedule on to where those epochs had left it."""
    total = spec.max_epochs * steps_per_epoch
    warmup = min(steps_per_epoch, total // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total - warmup), warmup_target=spec.learning_rate, warmup_steps=warmup
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=spec.weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=spec.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=False,  # XLA on CPU is far slower here (BACKBONES.md)
    )
    if epochs_done:
        optimizer.iterations.assign(epochs_done * steps_per_epoch)


def _patience(spec: CandidateSpec) -> int:
    # Cosine decay improves late: stop early only after half the budget (at least 4 epochs) without progress.
    return max(4, spec.max_epochs // 2)


def _train_scratch_cnn(spec: CandidateSpec, data: TrainingData, progress: _Progress) -> TrainedCandidate:
    model = build_scratch_cnn(spec, data.image_shape, data.num_classes)
    if progress.start is not None:
        model.set_weights(progress.start.weights)
    compile_for(spec, model, -(-len(data.train_labels) // spec.batch_size), progress.epochs_done)
    train = make_dataset(
        data.train_images,
        data.train_labels,
        data.num_classes,
        batch_size=spec.batch_size,
        shuffle=True,
        augmentation=sorted(spec.augmentation),
        seed=spec.seed,
    )
    val = make_dataset(data.val_images, data.val_labels, data.num_classes, batch_size=256, shuffle=False)
    reporter = _reporter(spec, data, progress, model)
    model.fit(
        train,
        validation_data=val,
        epochs=spec.max_epochs,
        initial_epoch=progress.epochs_done,
        callbacks=[reporter],
        verbose=0,
        shuffle=False,
    )
    return _result(spec, data, reporter, model=model)


def _reporter(
    spec: CandidateSpec,
    data: TrainingData,
    progress: _Progress,
    model: keras.Model,
    val_accuracy: Callable[[], float] | None = None,
) -> EpochReporter:
    """The epoch callback of a Keras candidate whose whole model (what gets stored) is `model`."""
    on_best = None
    if progress.on_best is not None:

        def on_best(epoch: int, accuracy: float) -> None:
            progress.on_best(_candidate(spec, data.class_names, epoch, accuracy, model=model))

    return EpochReporter(progress.on_epoch, _patience(spec), val_accuracy, on_best=on_best, start=progress.start)


def _candidate(spec: CandidateSpec, class_names, epoch: int, accuracy: float, **model) -> TrainedCandidate:
    """The candidate at its best epoch so far, for `on_best`."""
    return TrainedCandidate(spec, tuple(class_names), accuracy, epoch, 0.0, "best epoch so far", **model)


def _train_frozen_head(
    spec: CandidateSpec, data: TrainingData, progress: _Progress, cache_dir: str | os.PathLike
) -> TrainedCandidate:
    extractor = FeatureExtractor.for_spec(spec, image_size=data.image_shape[0], cache_dir=cache_dir)
    mirror = "flip" in spec.augmentation
    train = FeatureSet.compute(extractor, data.train_images, data.train_labels, mirror=mirror)
    val = FeatureSet.compute(extractor, data.val_images, data.val_labels, mirror=mirror)
    trained = _head_on_features(spec, data.class_names, train, val, progress=progress)
    trained.feature_model = extractor.model
    return trained


def _head_on_features(
    spec: CandidateSpec,
    class_names: tuple[str, ...],
    train: FeatureSet,
    val: FeatureSet,
    *,
    progress: _Progress,
) -> TrainedCandidate:
    start = progress.start
    resume = None if start is None else Resume(start.head, start.epochs_done, start.val_accuracy)
    on_best = None
    if progress.on_best is not None:

        def on_best(epoch: int, accuracy: float, head: Head) -> None:
            progress.on_best(_candidate(spec, class_names, epoch, accuracy, head=head))

    head, history = head_from_features(
        spec, train, val, class_names, on_epoch=progress.on_epoch, resume=resume, on_best=on_best
    )
    return TrainedCandidate(
        spec=spec,
        class_names=class_names,
        val_accuracy=history.best_val_accuracy,
        epochs_run=int(history.epochs[-1]["epoch"]) if history.epochs else progress.epochs_done,
        seconds=history.seconds,
        stopped_because=history.stopped_because,
        history=history.epochs,
        head=head,
    )


def _train_finetune(
    spec: CandidateSpec, data: TrainingData, progress: _Progress, cache_dir: str | os.PathLike
) -> TrainedCandidate:
    """Cache the frozen part's activations once, warm-start a head on frozen features, then train the top
    blocks + head on the cached activations (mirrored copies as extra rows and test-time averaging with
    "flip"; BN statistics stay frozen). The result is one Keras model from pictures to probabilities.
    """
    backbone = load_backbone(spec.backbone, cache_dir, input_size=spec.input_size)
    bottom, top = split_backbone(backbone, spec.finetune_blocks)
    side, _, channels = data.image_shape
    inputs = image_input(side, channels)
    frozen = FeatureExtractor(keras.Model(inputs, bottom(to_backbone_input(inputs, spec.input_size), training=False)))
    mirror = "flip" in spec.augmentation
    train_views = [frozen.extract_all(data.train_images, dtype=np.float16)]
    val_views = [frozen.extract_all(data.val_images, dtype=np.float16)]
    if mirror:
        train_views.append(frozen.extract_all(data.train_images, mirrored=True, dtype=np.float16))
        val_views.append(frozen.extract_all(data.val_images, mirrored=True, dtype=np.float16))
    activations = np.concatenate([view[0] for view in train_views])
    features = np.concatenate([view[1] for view in train_views]).astype(np.float32)
    labels = np.concatenate([data.train_labels] * len(train_views))
    for layer in top.layers:
        layer.trainable = not isinstance(layer, layers.BatchNormalization)
    dropout = layers.Dropout(spec.dropout, name="dropout")
    classifier = layers.Dense(data.num_classes, activation="softmax", name=CLASSIFIER_LAYER)
    cached = keras.Input(shape=activations.shape[1:], name="activations")
    trainer = keras.Model(cached, classifier(dropout(top(cached, training=False))))
    # The stored model, built now: it shares its layers with the trainer, so it is what on_best saves.
    model = _mirror_averaged(inputs, lambda view: classifier(dropout(backbone(view, training=False))), spec, mirror)
    if progress.start is not None:
        model.set_weights(progress.start.weights)
    else:
        val_features = np.mean([view[1].astype(np.float32) for view in val_views], axis=0)
        warm, _ = fit_head(
            features, labels, val_features, data.val_labels, replace(spec, **_WARM_START), class_names=data.class_names
        )
        classifier.set_weights([warm.weights, warm.bias])
    compile_for(spec, trainer, -(-len(labels) // spec.batch_size), progress.epochs_done)
    predict = tf.function(lambda batch: trainer(batch, training=False), jit_compile=False)

    def val_accuracy() -> float:
        proba = np.mean([_batched(predict, view[0]) for view in val_views], axis=0)
        return float(np.mean(proba.argmax(axis=1) == data.val_labels))

    reporter = _reporter(spec, data, progress, model, val_accuracy)
    train = make_dataset(activations, labels, data.num_classes, batch_size=spec.batch_size, shuffle=True)
    trainer.fit(
        train,
        epochs=spec.max_epochs,
        initial_epoch=progress.epochs_done,
        callbacks=[reporter],
        verbose=0,
        shuffle=False,
    )
    return _result(spec, data, reporter, model=model)


def _mirror_averaged(inputs, probabilities, spec: CandidateSpec, mirror: bool) -> keras.Model:
    """pictures -> probabilities, averaged with the mirror images' when the candidate learned from them."""
    outputs = probabilities(to_backbone_input(inputs, spec.input_size))
    if mirror:
        mirrored = probabilities(to_backbone_input(inputs, spec.input_size, mirror=True, prefix="mirrored_"))
        outputs = layers.Average(name="mirror_average")([outputs, mirrored])
    return keras.Model(inputs, outputs, name=f"{spec.backbone}_finetuned")


def _batched(function, arrays: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate(
        [
            function(tf.constant(arrays[i : i + batch_size], tf.float32)).numpy()
            for i in range(0, len(arrays), batch_size)
        ]
    )


def _result(
    spec: CandidateSpec, data: TrainingData, reporter: EpochReporter, *, model: keras.Model
) -> TrainedCandidate:
    val_accuracy = reporter.restore_best()
    return TrainedCandidate(
        spec=spec,
        class_names=data.class_names,
        val_accuracy=val_accuracy,
        epochs_run=reporter.last_epoch,
        seconds=0.0,
        stopped_because=reporter.stopped_because,
        history=reporter.rows,
        model=model,
    )
