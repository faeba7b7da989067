"""The training benchmark's baselines, each run as ``python -m bench.peers SYSTEM ...`` in a process of its own.

The training benchmark (bench/training_bench.py) starts one of these per dataset and system with a hard
timeout, so a baseline that hangs cannot hang the benchmark. Each reads the same train/test zip Classifly
imports, trains within the wall-clock budget (counted from the moment the parent started the process, so the
interpreter, TensorFlow's import and the decoding of the pictures are inside it, as the platform's own
picture preparation is inside its run), evaluates on the test split and writes one JSON result. Every
epoch's validation accuracy goes to an events file (JSON lines) as it happens, so a killed baseline still
leaves its curve behind.

Systems:

- ``autokeras``: AutoKeras 3 ``ImageClassifier`` with its default search (``max_trials=100``), validated on
  a seeded stratified 20 % of the training pictures (AutoKeras' own default fraction; its own split takes
  the last 20 % unshuffled). AutoKeras 3.0.0 fails on Keras 3.15 (``units`` receives a numpy integer from
  ``autokeras.utils.data_utils.dataset_shape``); that one function is patched here to return plain ints.
  When AutoKeras cannot be imported at all, KerasTuner Hyperband over a small CNN (what AutoKeras is built
  on) stands in, and the result says so.
- ``keras-tuner``: that Hyperband search, chosen explicitly.
- ``handwritten``: what a competent Keras user writes in 30 lines: frozen EfficientNet-Lite0 (ImageNet,
  loaded with ``pipelines.backbones.load_backbone`` as BACKBONES.md describes) + a Dense softmax head,
  ``model.fit`` with Adam, early stopping on a seeded 10 % validation split (see HANDWRITTEN_SOURCE).

Neither search knows about wall-clock budgets; a callback stops training at the deadline (checked after
every batch) and tells the tuner's oracle to start no further trial. A batch or validation pass that is
already running when the deadline passes finishes first (validation is cut short 10 % of the budget later),
so a baseline may end somewhat after its budget; the parent's hard timeout is the last resort.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import traceback
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SYSTEMS = ("autokeras", "keras-tuner", "handwritten")
SEED = 0
AUTOML_VALIDATION_FRACTION = 0.2
HANDWRITTEN_VALIDATION_FRACTION = 0.1
TINY_SIDE = 64  # pictures at most this big are upsampled to HANDWRITTEN_TINY_INPUT for the ImageNet backbone
HANDWRITTEN_TINY_INPUT = 96
HANDWRITTEN_INPUT = 224


@dataclass
class Arrays:
    """A train/test zip decoded into uint8 arrays (N, side, side, channels) with class indices."""

    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def side(self) -> int:
        return int(self.x_train.shape[1])


def load_zip_arrays(path: str | os.PathLike[str], *, side: int | None, color: str) -> Arrays:
    """Decode every ``train/<class>/<file>`` and ``test/<class>/<file>`` of a zip with Pillow.

    `color` is a Pillow mode ("L" or "RGB"); `side`, when given, stretches every picture to side x side
    (bilinear, as ``keras.utils.image_dataset_from_directory`` does); without it all pictures must already
    share one size. Classes are numbered in sorted order of their folder names.
    """
    from PIL import Image

    pictures: dict[str, list[np.ndarray]] = {"train": [], "test": []}
    labels: dict[str, list[str]] = {"train": [], "test": []}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            parts = info.filename.split("/")
            if len(parts) != 3 or parts[0] not in pictures:
                raise ValueError(
                    f"{Path(path).name}: unexpected entry {info.filename!r} (want train|test/<class>/<file>)"
                )
            with Image.open(io.BytesIO(archive.read(info))) as opened:
                image = opened.convert(color)
                if side is not None and image.size != (side, side):
                    image = image.resize((side, side), Image.Resampling.BILINEAR)
                pixels = np.asarray(image, dtype=np.uint8)
            pictures[parts[0]].append(pixels[:, :, None] if pixels.ndim == 2 else pixels)
            labels[parts[0]].append(parts[1])
    class_names = sorted(set(labels["train"]) | set(labels["test"]))
    index = {name: i for i, name in enumerate(class_names)}

    def stacked(split: str) -> tuple[np.ndarray, np.ndarray]:
        if not pictures[split]:
            raise ValueError(f"{Path(path).name} has no {split}/ pictures")
        return np.stack(pictures[split]), np.array([index[name] for name in labels[split]], dtype=np.int64)

    x_train, y_train = stacked("train")
    x_test, y_test = stacked("test")
    return Arrays(class_names, x_train, y_train, x_test, y_test)


def holdout(x: np.ndarray, y: np.ndarray, fraction: float, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """(x_fit, y_fit, x_val, y_val): a seeded, stratified validation share, both parts shuffled."""
    from pipelines.zips import stratified_split

    parts = np.array(stratified_split([str(label) for label in y], test_fraction=fraction, seed=seed))
    rng = np.random.default_rng(seed)
    fit = rng.permutation(np.flatnonzero(parts == "train"))
    val = rng.permutation(np.flatnonzero(parts == "test"))
    if len(val) == 0:  # too few pictures per class for a split: validate on a few training pictures
        val = fit[: max(1, len(fit) // 10)]
    return x[fit], y[fit], x[val], y[val]


class Clock:
    """Seconds since the parent started this process, the deadline, and the events file."""

    def __init__(self, started: float, budget_s: float, events: Path | None):
        self.started, self.budget_s, self.events = started, budget_s, events
        self.deadline = started + budget_s
        self.trial = 0

    def now(self) -> float:
        return time.time() - self.started

    def past_deadline(self, grace_s: float = 0.0) -> bool:
        return time.time() > self.deadline + grace_s

    def event(self, **values: Any) -> None:
        if self.events is None:
            return
        row = {"t": round(self.now(), 2), **values}
        with open(self.events, "a") as file:
            file.write(json.dumps(row) + "\n")


# The tuner's oracle, for the deadline callback: Keras Tuner deep-copies callbacks into every trial, so a
# callback must not hold the tuner itself.
_ORACLE: Any = None
_CLOCK: Clock | None = None


def _callbacks() -> list[Any]:
    """Keras callbacks: stop at the deadline (and start no new trial), log every epoch to the events file."""
    import keras

    class DeadlineAndLog(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            assert _CLOCK is not None
            _CLOCK.trial += 1
            self.epoch_started = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.time()

        def on_train_batch_end(self, batch, logs=None):
            assert _CLOCK is not None
            if _CLOCK.past_deadline():
                self.model.stop_training = True
                if _ORACLE is not None and _ORACLE.trials:
                    _ORACLE.max_trials = len(_ORACLE.trials)  # the oracle starts no further trial

        def on_test_batch_end(self, batch, logs=None):
            assert _CLOCK is not None
            # A validation pass that began before the deadline may finish, up to 10 % of the budget later.
            if _CLOCK.past_deadline(grace_s=max(10.0, 0.1 * _CLOCK.budget_s)):
                self.model.stop_evaluating = True

        def on_epoch_end(self, epoch, logs=None):
            assert _CLOCK is not None
            logs = logs or {}
            _CLOCK.event(
                trial=_CLOCK.trial,
                epoch=epoch + 1,
                val_accuracy=_float(logs.get("val_accuracy")),
                accuracy=_float(logs.get("accuracy")),
                epoch_seconds=round(time.time() - self.epoch_started, 2),
                stopped_by_deadline=bool(self.model.stop_training and _CLOCK.past_deadline()),
            )

    return [DeadlineAndLog()]


def _float(value: Any) -> float | None:
    return None if value is None else round(float(value), 5)


def _plain_int_shapes(dataset: Any) -> Any:
    """`autokeras.utils.data_utils.dataset_shape` returning Python ints: Keras 3.15 refuses numpy integers
    as layer sizes (``Received an invalid value for units ... units=10``)."""
    import tree

    return tree.map_structure(lambda x: np.array([int(d) for d in x.shape], dtype=object), dataset)


def run_autokeras(data: Arrays, clock: Clock, work_dir: Path, quick: bool) -> dict[str, Any]:
    global _ORACLE
    import autokeras as ak
    from autokeras.utils import data_utils

    data_utils.dataset_shape = _plain_int_shapes
    x_fit, y_fit, x_val, y_val = holdout(data.x_train, data.y_train, AUTOML_VALIDATION_FRACTION)
    max_trials = 1 if quick else 100  # 100: AutoKeras' default
    classifier = ak.ImageClassifier(
        max_trials=max_trials, directory=str(work_dir / "autokeras"), overwrite=True, seed=SEED
    )
    _ORACLE = classifier.tuner.oracle
    fit_started = clock.now()
    classifier.fit(x_fit, y_fit, validation_data=(x_val, y_val), callbacks=_callbacks(), verbose=0)
    fit_seconds = clock.now() - fit_started
    trials = len(_ORACLE.trials)
    eval_started = clock.now()
    _, accuracy = classifier.evaluate(data.x_test, data.y_test, verbose=0)
    model = classifier.export_model()
    return {
        "peer": f"AutoKeras {ak.__version__} ImageClassifier (max_trials={max_trials}, seed={SEED})",
        "test_accuracy": float(accuracy),
        "fit_seconds": fit_seconds,
        "eval_seconds": clock.now() - eval_started,
        "trials": trials,
        "best_model": f"{model.name}, {model.count_params():,} parameters",
        "patched": "autokeras.utils.data_utils.dataset_shape returns plain ints (Keras 3.15)",
    }


def run_keras_tuner(data: Arrays, clock: Clock, work_dir: Path, quick: bool) -> dict[str, Any]:
    """KerasTuner Hyperband over a small CNN: 1-3 conv blocks, filters, dropout, learning rate."""
    global _ORACLE
    import keras
    import keras_tuner as kt
    from keras import layers

    x_fit, y_fit, x_val, y_val = holdout(data.x_train, data.y_train, AUTOML_VALIDATION_FRACTION)
    classes = len(data.class_names)

    def build(hp):
        inputs = keras.Input(shape=data.x_train.shape[1:])
        x = layers.Rescaling(1 / 255)(inputs)
        for block in range(hp.Int("blocks", 1, 3)):
            x = layers.Conv2D(hp.Choice(f"filters_{block}", [32, 64, 128]), 3, padding="same", activation="relu")(x)
            x = layers.BatchNormalization()(x)
            if x.shape[1] >= 4:
                x = layers.MaxPooling2D()(x)
        x = layers.GlobalAveragePooling2D()(x) if hp.Boolean("global_pool") else layers.Flatten()(x)
        x = layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.25))(x)
        outputs = layers.Dense(classes, activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile(
            optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", [1e-3, 3e-4])),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        return model

    tuner = kt.Hyperband(
        build,
        objective="val_accuracy",
        max_epochs=2 if quick else 30,
        seed=SEED,
        directory=str(work_dir / "keras-tuner"),
        overwrite=True,
    )
    _ORACLE = tuner.oracle
    fit_started = clock.now()
    tuner.search(x_fit, y_fit, validation_data=(x_val, y_val), callbacks=_callbacks(), verbose=0)
    fit_seconds = clock.now() - fit_started
    best = tuner.get_best_models(1)[0]
    eval_started = clock.now()
    _, accuracy = best.evaluate(data.x_test, data.y_test, verbose=0, batch_size=256)
    return {
        "peer": f"KerasTuner {kt.__version__} Hyperband over a small CNN (max_epochs={tuner.oracle.max_epochs})",
        "test_accuracy": float(accuracy),
        "fit_seconds": fit_seconds,
        "eval_seconds": clock.now() - eval_started,
        "trials": len(tuner.oracle.trials),
        "best_model": f"{best.count_params():,} parameters",
    }


# The hand-written baseline, as a user would write it (the function below runs exactly this recipe).
HANDWRITTEN_SOURCE = """
base = load_backbone("efficientnet_lite0", cache_dir, input_size=size)   # pipelines.backbones
base.trainable = False
inputs = keras.Input(shape=x_train.shape[1:])
x = layers.Rescaling(1.0)(inputs)                                        # uint8 -> float 0..255
if x_train.shape[-1] == 1:
    x = layers.Concatenate()([x, x, x])                                  # gray -> RGB
if x_train.shape[1] != size:
    x = layers.Resizing(size, size)(x)                                   # 96 px for tiny pictures, else 224
x = base(x, training=False)
outputs = layers.Dense(num_classes, activation="softmax")(x)
model = keras.Model(inputs, outputs)
model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
model.fit(x_fit, y_fit, validation_data=(x_val, y_val), epochs=20, batch_size=32,
          callbacks=[keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=3,
                                                   restore_best_weights=True)])
test_accuracy = model.evaluate(x_test, y_test)[1]
"""


def run_handwritten(data: Arrays, clock: Clock, cache_dir: Path, quick: bool) -> dict[str, Any]:
    import keras
    from keras import layers

    from pipelines.backbones import load_backbone

    size = HANDWRITTEN_TINY_INPUT if data.side <= TINY_SIDE else HANDWRITTEN_INPUT
    x_fit, y_fit, x_val, y_val = holdout(data.x_train, data.y_train, HANDWRITTEN_VALIDATION_FRACTION)
    fit_started = clock.now()
    base = load_backbone("efficientnet_lite0", cache_dir, input_size=size)
    base.trainable = False
    inputs = keras.Input(shape=data.x_train.shape[1:])
    x = layers.Rescaling(1.0)(inputs)
    if data.x_train.shape[-1] == 1:
        x = layers.Concatenate()([x, x, x])
    if data.side != size:
        x = layers.Resizing(size, size)(x)
    x = base(x, training=False)
    outputs = layers.Dense(len(data.class_names), activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=3, restore_best_weights=True)
    history = model.fit(
        x_fit,
        y_fit,
        validation_data=(x_val, y_val),
        epochs=2 if quick else 20,
        batch_size=32,
        callbacks=[stop, *_callbacks()],
        verbose=0,
    )
    fit_seconds = clock.now() - fit_started
    eval_started = clock.now()
    _, accuracy = model.evaluate(data.x_test, data.y_test, verbose=0, batch_size=128)
    return {
        "peer": f"frozen EfficientNet-Lite0 at {size} px + Dense softmax, Adam 1e-3, batch 32, early stopping",
        "test_accuracy": float(accuracy),
        "fit_seconds": fit_seconds,
        "eval_seconds": clock.now() - eval_started,
        "trials": 1,
        "epochs": len(history.history.get("loss", [])),
        "input_size": size,
    }


def configure_tensorflow(threads: int) -> None:
    """TensorFlow's thread pools sized to the CPUs the benchmark grants (before any TF op)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=SYSTEMS)
    parser.add_argument("--zip", required=True, help="train/ + test/ zip of class folders")
    parser.add_argument("--side", type=int, default=None, help="stretch pictures to this square side")
    parser.add_argument("--color", choices=("L", "RGB"), default="RGB")
    parser.add_argument("--budget", type=float, required=True, help="wall-clock seconds from --started")
    parser.add_argument("--started", type=float, default=None, help="time.time() when the parent started us")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", required=True, help="scratch folder (tuner trials)")
    parser.add_argument("--cache", required=True, help="folder for converted backbone weights")
    parser.add_argument("--out", required=True, help="result JSON")
    parser.add_argument("--events", default=None, help="JSON lines, one per epoch")
    parser.add_argument("--quick", action="store_true", help="smoke sizes: one trial, two epochs")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global _CLOCK
    args = parse_args(argv)
    clock = _CLOCK = Clock(args.started or time.time(), args.budget, Path(args.events) if args.events else None)
    result: dict[str, Any] = {"system": args.system, "status": "error", "budget_s": args.budget}
    code = 1
    try:
        configure_tensorflow(args.threads)
        import keras

        keras.utils.set_random_seed(SEED)
        result["tensorflow_ready_seconds"] = clock.now()
        data = load_zip_arrays(args.zip, side=args.side, color=args.color)
        result["load_seconds"] = clock.now() - result["tensorflow_ready_seconds"]
        result["train_images"], result["test_images"] = len(data.y_train), len(data.y_test)
        work = Path(args.work)
        work.mkdir(parents=True, exist_ok=True)
        system = args.system
        if system == "autokeras":
            try:
                import autokeras  # noqa: F401
            except ImportError as error:
                result["fallback"] = f"autokeras could not be imported ({error}); KerasTuner Hyperband instead"
                system = "keras-tuner"
        if system == "keras-tuner":
            try:
                import keras_tuner  # noqa: F401
            except ImportError as error:
                raise RuntimeError(
                    f"no AutoML library: {error}. `make bench` installs them (pip install -e '.[bench]')."
                ) from error
        if system == "autokeras":
            result.update(run_autokeras(data, clock, work, args.quick))
        elif system == "keras-tuner":
            result.update(run_keras_tuner(data, clock, work, args.quick))
        else:
            result.update(run_handwritten(data, clock, Path(args.cache), args.quick))
        result["status"] = "ok"
        code = 0
    except Exception as error:  # noqa: BLE001 - the parent reads the reason from the result file
        result["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    result["seconds"] = clock.now()
    result["finished_after_budget"] = clock.past_deadline()
    out = Path(args.out)
    temp = out.with_name(f".{out.name}.tmp")
    temp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    os.replace(temp, out)
    print(json.dumps({k: v for k, v in result.items() if k in ("system", "status", "test_accuracy", "seconds")}))
    return code


if __name__ == "__main__":
    sys.exit(main())
