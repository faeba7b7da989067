"""Classifier heads on frozen features: numpy weights with class names, numpy inference, and a numpy trainer.

A head never needs TensorFlow, so a serving replica that only classifies cached or shipped features stays
small. Feature standardization is folded into the first layer's weights when training ends, so
`predict_proba` takes raw backbone features.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pipelines.errors import InvalidInput

if TYPE_CHECKING:
    # Only for annotations: candidates imports the backbones (Keras), and a replica that serves heads stays
    # numpy-only (~125 MB instead of 400-700 MB with TensorFlow).
    from pipelines.candidates import CandidateSpec

OnEpoch = Callable[[int, dict[str, float]], bool]
OnBest = Callable[[int, float, "Head"], None]

_STD_FLOOR = 1e-6
_ADAM_BETAS = (0.9, 0.999)
_ADAM_EPSILON = 1e-8


@dataclass(frozen=True, eq=False)
class Head:
    """Softmax regression (`weights`, `bias`) or one hidden ReLU layer before it (`hidden_*`)."""

    weights: np.ndarray  # (inputs of the last layer, classes)
    bias: np.ndarray  # (classes,)
    class_names: tuple[str, ...]
    hidden_weights: np.ndarray | None = None  # (features, hidden units)
    hidden_bias: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(str(name) for name in self.class_names))
        if self.weights.ndim != 2 or self.bias.shape != (self.weights.shape[1],):
            raise InvalidInput(f"Head weights {self.weights.shape} and bias {self.bias.shape} do not fit together.")
        if len(self.class_names) != self.weights.shape[1]:
            raise InvalidInput(f"The head has {self.weights.shape[1]} outputs but {len(self.class_names)} class names.")
        if (self.hidden_weights is None) != (self.hidden_bias is None):
            raise InvalidInput("A hidden layer needs both its weights and its bias.")
        if self.hidden_weights is not None and (
            self.hidden_weights.shape[1] != self.weights.shape[0] or self.hidden_bias.shape != (self.weights.shape[0],)
        ):
            raise InvalidInput(f"Hidden layer {self.hidden_weights.shape} does not feed weights {self.weights.shape}.")

    @property
    def kind(self) -> str:
        return "softmax" if self.hidden_weights is None else "mlp"

    @property
    def feature_dim(self) -> int:
        return (self.weights if self.hidden_weights is None else self.hidden_weights).shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def logits(self, features: np.ndarray) -> np.ndarray:
        features = self._check(features)
        if self.hidden_weights is not None:
            features = np.maximum(features @ self.hidden_weights + self.hidden_bias, 0.0)
        return features @ self.weights + self.bias

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (images, classes), float32, rows summing to 1."""
        return softmax(self.logits(features))

    def predict_proba_views(self, features: np.ndarray, mirrored: np.ndarray | None = None) -> np.ndarray:
        """Class probabilities from the pictures' features, first averaged with their mirror images' when given
        (how a head that learned from mirrored pictures was evaluated; see `FeatureSet.test_rows`).
        """
        if mirrored is not None:
            features, mirrored = self._check(features), self._check(mirrored)
            if mirrored.shape != features.shape:
                raise InvalidInput(f"Mirrored features {mirrored.shape} must match the features {features.shape}.")
            features = (features + mirrored) * np.float32(0.5)
        return self.predict_proba(features)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The most probable class index per row."""
        return np.argmax(self.logits(features), axis=1)

    def to_bytes(self) -> bytes:
        """An .npz file in memory (no pickles), readable with `Head.from_bytes`."""
        arrays = {"weights": self.weights, "bias": self.bias, "class_names": np.asarray(self.class_names, dtype=str)}
        if self.hidden_weights is not None:
            arrays |= {"hidden_weights": self.hidden_weights, "hidden_bias": self.hidden_bias}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Head:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (OSError, ValueError) as error:
            raise InvalidInput(f"These bytes are not a saved classifier head ({error}).") from error
        missing = {"weights", "bias", "class_names"} - set(arrays)
        if missing:
            raise InvalidInput(f"The saved head lacks {', '.join(sorted(missing))}.")
        return cls(
            weights=arrays["weights"].astype(np.float32),
            bias=arrays["bias"].astype(np.float32),
            class_names=tuple(arrays["class_names"].tolist()),
            hidden_weights=_optional(arrays.get("hidden_weights")),
            hidden_bias=_optional(arrays.get("hidden_bias")),
        )

    def _check(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise InvalidInput(
                f"The head expects features of shape (images, {self.feature_dim}), got {features.shape}: "
                "were they computed with another backbone?"
            )
        return features


@dataclass
class HeadHistory:
    """What happened while fitting a head: one metrics row per epoch, the best epoch and why it stopped."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0  # the epoch's number (an epoch of an earlier attempt when a resumed one never beat it)
    stopped_because: str = ""
    seconds: float = 0.0
    best_val_accuracy: float = 0.0


@dataclass(frozen=True, eq=False)
class Resume:
    """Where an earlier attempt of the same training left off: its best head so far, the epochs it had run
    and that head's validation accuracy (e.g. from a checkpoint of a trial whose machine was lost)."""

    head: Head
    epochs_done: int
    val_accuracy: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def fit_head(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray | None,
    val_labels: np.ndarray | None,
    spec: CandidateSpec,
    *,
    class_names: Sequence[str] | None = None,
    on_epoch: OnEpoch | None = None,
    patience: int | None = None,
    start: Head | None = None,
    resume: Resume | None = None,
    on_best: OnBest | None = None,
) -> tuple[Head, HeadHistory]:
    """Train the head `spec` describes with mini-batch Adam, keeping the epoch with the best val accuracy.

    `start` is an earlier head on the same features (a model update): training begins from its weights for
    the classes it knows (new classes begin at zero), so a few epochs reach what a cold start needs many for.
    `resume` continues an interrupted fit on the same data: from its head, at the epoch after `epochs_done`
    (the learning-rate schedule too), keeping its head unless a later epoch beats its validation accuracy.

    `spec.weight_decay` is the L2 strength on the standardized features; `spec.label_smoothing`,
    `spec.class_balanced` (each class weighs the same), `spec.dropout` (mlp) and a cosine learning-rate
    decay over `spec.max_epochs` apply. `on_epoch(epoch, metrics)` returning True stops training (a
    scheduler's early stop, or the target reached). Without validation data every epoch runs and the last
    one is kept. `on_best(epoch, val_accuracy, head)` is called with that epoch's head at each epoch that is the best so
    far, before `on_epoch` (e.g. to write a checkpoint).
    """
    x, y = _check_data(train_features, train_labels, "training")
    num_classes = len(class_names) if class_names is not None else int(y.max()) + 1
    if y.max() >= num_classes:
        raise InvalidInput(f"Label {int(y.max())} is out of range for {num_classes} classes.")
    names = tuple(class_names) if class_names is not None else tuple(str(index) for index in range(num_classes))
    has_val = val_features is not None and val_labels is not None and len(val_labels) > 0
    vx, vy = _check_data(val_features, val_labels, "validation") if has_val else (None, None)
    if vx is not None and vx.shape[1] != x.shape[1]:
        raise InvalidInput(f"Validation features have {vx.shape[1]} columns, training features {x.shape[1]}.")
    mean, std = x.mean(axis=0), np.maximum(x.std(axis=0), _STD_FLOOR)
    trainer = _Trainer(spec, x.shape[1], num_classes, (x - mean) / std, y)
    if resume is not None:
        start = resume.head
    if start is not None:
        trainer.begin_from(_unfolded_params(start, mean, std, names))
    vx = None if vx is None else (vx - mean) / std
    patience = patience if patience is not None else max(8, spec.max_epochs // 5)
    history = HeadHistory()
    if resume is not None:
        history.best_epoch, history.best_val_accuracy = resume.epochs_done, resume.val_accuracy
    best = trainer.params()
    started = time.perf_counter()
    first = 1 + (resume.epochs_done if resume is not None else 0)
    for epoch in range(first, spec.max_epochs + 1):
        epoch_started = time.perf_counter()
        loss, train_accuracy = trainer.run_epoch(epoch)
        metrics = {"epoch": float(epoch), "loss": loss, "train_accuracy": train_accuracy}
        if vx is not None:
            metrics["val_accuracy"] = float(np.mean(trainer.predict(vx) == vy))
        metrics["seconds"] = time.perf_counter() - epoch_started
        history.epochs.append(metrics)
        improved = vx is None or metrics["val_accuracy"] > history.best_val_accuracy or history.best_epoch == 0
        if improved:
            history.best_epoch, best = epoch, trainer.params()
            history.best_val_accuracy = metrics.get("val_accuracy", 0.0)
            if on_best is not None:
                on_best(epoch, history.best_val_accuracy, _folded_head(best, mean, std, names))
        if on_epoch is not None and on_epoch(epoch, dict(metrics)):
            history.stopped_because = "asked to stop"
            break
        if vx is not None and epoch - history.best_epoch >= patience:
            history.stopped_because = f"no better validation accuracy for {patience} epochs"
            break
    else:
        history.stopped_because = "reached the epoch limit"
    history.seconds = time.perf_counter() - started
    return _folded_head(best, mean, std, names), history


class _Trainer:
    """Mini-batch Adam on standardized features; parameters are (weights, bias[, hidden...]) float32."""

    def __init__(self, spec: CandidateSpec, num_features: int, num_classes: int, x: np.ndarray, y: np.ndarray):
        self.spec, self.x, self.y = spec, x.astype(np.float32), y
        self.rng = np.random.default_rng(spec.seed)
        self.steps_per_epoch = math.ceil(len(y) / spec.batch_size)
        if spec.head == "mlp":
            scale = math.sqrt(2.0 / num_features)
            self.hidden = [
                (self.rng.standard_normal((num_features, spec.hidden_units)) * scale).astype(np.float32),
                np.zeros(spec.hidden_units, np.float32),
            ]
            last_inputs = spec.hidden_units
        else:
            self.hidden = []
            last_inputs = num_features
        self.last = [np.zeros((last_inputs, num_classes), np.float32), np.zeros(num_classes, np.float32)]
        self.moments = [(np.zeros_like(p), np.zeros_like(p)) for p in self.hidden + self.last]
        self.step = 0
        smoothing = spec.label_smoothing
        self.targets = np.full((num_classes, num_classes), smoothing / num_classes, np.float32)
        self.targets[np.diag_indices(num_classes)] += 1.0 - smoothing
        counts = np.bincount(y, minlength=num_classes).astype(np.float32)
        balanced = len(y) / (num_classes * np.maximum(counts, 1.0))
        self.sample_weights = balanced[y] if spec.class_balanced else np.ones(len(y), np.float32)

    def params(self) -> list[np.ndarray]:
        return [p.copy() for p in self.hidden + self.last]

    def begin_from(self, params: list[np.ndarray]) -> None:
        current = self.hidden + self.last
        if len(params) != len(current) or any(p.shape != c.shape for p, c in zip(params, current, strict=True)):
            raise InvalidInput("The earlier head has another shape (kind or hidden units) than this one.")
        for target, value in zip(current, params, strict=True):
            target[...] = value

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self._forward(x, train=False)[0], axis=1)

    def _forward(self, x: np.ndarray, *, train: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        hidden = mask = None
        if self.hidden:
            hidden = np.maximum(x @ self.hidden[0] + self.hidden[1], 0.0)
            if train and self.spec.dropout > 0:
                keep = 1.0 - self.spec.dropout
                mask = (self.rng.random(hidden.shape, dtype=np.float32) < keep) / np.float32(keep)
                hidden = hidden * mask
            inputs = hidden
        else:
            inputs = x
        return inputs @ self.last[0] + self.last[1], inputs, mask

    def run_epoch(self, epoch: int) -> tuple[float, float]:
        spec = self.spec
        # Cosine decay over the epoch budget: large steps first, fine ones near the end.
        rate = spec.learning_rate * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / spec.max_epochs))
        order = self.rng.permutation(len(self.y))
        total_loss = correct = 0.0
        for start in range(0, len(order), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            x, y, w = self.x[batch], self.y[batch], self.sample_weights[batch]
            logits, inputs, mask = self._forward(x, train=True)
            proba = softmax(logits)
            targets = self.targets[y]
            total_loss += float(-(w * (targets * np.log(proba + 1e-12)).sum(axis=1)).sum())
            correct += float((np.argmax(logits, axis=1) == y).sum())
            grad_logits = (proba - targets) * (w / w.sum())[:, None]
            grads = self._backward(x, inputs, mask, grad_logits)
            self._adam(grads, rate)
        return total_loss / len(self.y), correct / len(self.y)

    def _backward(self, x, inputs, mask, grad_logits) -> list[np.ndarray]:
        decay = self.spec.weight_decay
        grads_last = [inputs.T @ grad_logits + decay * self.last[0], grad_logits.sum(axis=0)]
        if not self.hidden:
            return grads_last
        grad_hidden = (grad_logits @ self.last[0].T) * (inputs > 0)
        if mask is not None:
            grad_hidden *= mask
        return [x.T @ grad_hidden + decay * self.hidden[0], grad_hidden.sum(axis=0)] + grads_last

    def _adam(self, grads: list[np.ndarray], rate: float) -> None:
        self.step += 1
        beta1, beta2 = _ADAM_BETAS
        correction = math.sqrt(1 - beta2**self.step) / (1 - beta1**self.step)
        for param, grad, (m, v) in zip(self.hidden + self.last, grads, self.moments, strict=True):
            m *= beta1
            m += (1 - beta1) * grad
            v *= beta2
            v += (1 - beta2) * grad * grad
            param -= (rate * correction) * m / (np.sqrt(v) + _ADAM_EPSILON)


def _folded_head(params: list[np.ndarray], mean: np.ndarray, std: np.ndarray, names: tuple[str, ...]) -> Head:
    """Fold (x - mean) / std into the first layer, so the head takes raw features."""
    first_weights, first_bias = params[0], params[1]
    folded_weights = (first_weights / std[:, None]).astype(np.float32)
    folded_bias = (first_bias - (mean / std) @ first_weights).astype(np.float32)
    if len(params) == 2:
        return Head(weights=folded_weights, bias=folded_bias, class_names=names)
    return Head(
        weights=params[2].astype(np.float32),
        bias=params[3].astype(np.float32),
        class_names=names,
        hidden_weights=folded_weights,
        hidden_bias=folded_bias,
    )


def _unfolded_params(head: Head, mean: np.ndarray, std: np.ndarray, names: tuple[str, ...]) -> list[np.ndarray]:
    """`head`'s parameters for standardized inputs (x - mean) / std, its columns placed at `names` (the inverse
    of `_folded_head`: the same logits on every raw feature vector); classes it does not know get zero weights
    and the mean bias, so they start as likely as an average known class."""
    if head.feature_dim != len(mean):
        raise InvalidInput(f"The earlier head takes {head.feature_dim} features, these pictures have {len(mean)}.")
    first_weights = head.weights if head.hidden_weights is None else head.hidden_weights
    first_bias = head.bias if head.hidden_bias is None else head.hidden_bias
    unfolded = [first_weights * std[:, None], first_bias + mean @ first_weights]
    if head.hidden_weights is not None:
        unfolded += [head.weights, head.bias]
    known = {name: index for index, name in enumerate(head.class_names)}
    last_weights, last_bias = unfolded[-2], unfolded[-1]
    weights = np.zeros((last_weights.shape[0], len(names)), np.float32)
    bias = np.full(len(names), float(last_bias.mean()), np.float32)
    for column, name in enumerate(names):
        if name in known:
            weights[:, column], bias[column] = last_weights[:, known[name]], last_bias[known[name]]
    return [p.astype(np.float32) for p in unfolded[:-2]] + [weights, bias]


def _check_data(features: np.ndarray | None, labels: np.ndarray | None, what: str) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels) or len(labels) == 0:
        raise InvalidInput(
            f"The {what} features {features.shape} and labels {labels.shape} must be (images, features) and "
            "(images,) with the same number of images, at least one."
        )
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise InvalidInput(f"The {what} labels must be class indices (whole numbers from 0).")
    if not np.isfinite(features).all():
        raise InvalidInput(f"The {what} features contain NaN or infinite values.")
    return features, labels.astype(np.int64)


def _optional(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else array.astype(np.float32)
