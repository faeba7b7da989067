"""How good a classifier is, in numpy: accuracy, per-class precision/recall/F1, confusion matrix, calibration,
the misclassified pictures, and the pictures whose given label an out-of-fold model strongly disputes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput
from pipelines.heads import fit_head


@dataclass(frozen=True)
class ClassScores:
    name: str
    precision: float
    recall: float
    f1: float
    support: int  # test pictures of this class


@dataclass(frozen=True)
class CalibrationBin:
    low: float  # confidence range [low, high)
    high: float
    count: int
    confidence: float  # mean top-class probability in the bin (0 when empty)
    accuracy: float  # fraction correct in the bin (0 when empty)


@dataclass(frozen=True)
class Calibration:
    expected_error: float  # ECE: |accuracy - confidence| averaged over bins, weighted by count
    bins: tuple[CalibrationBin, ...]


@dataclass(frozen=True)
class Mistake:
    """One picture the model gets wrong, or whose label it disputes."""

    image_id: str
    given: int
    predicted: int
    confidence: float  # probability of `predicted`
    given_probability: float  # probability the model gives the labelled class


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    classes: tuple[ClassScores, ...]
    confusion: np.ndarray  # rows: true class, columns: predicted class
    calibration: Calibration


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = _check_pair(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes x num_classes): row = true class, column = predicted class."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    if max(y_true.max(), y_pred.max()) >= num_classes:
        raise InvalidInput(f"A class index is out of range for {num_classes} classes.")
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def per_class_scores(confusion: np.ndarray, class_names: Sequence[str]) -> tuple[ClassScores, ...]:
    """Precision, recall and F1 per class from a confusion matrix (0 where undefined)."""
    if confusion.shape != (len(class_names), len(class_names)):
        raise InvalidInput(f"Confusion matrix {confusion.shape} does not fit {len(class_names)} class names.")
    true_positive = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros_like(true_positive), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros_like(true_positive), where=actual > 0)
    total = precision + recall
    f1 = np.divide(2 * precision * recall, total, out=np.zeros_like(total), where=total > 0)
    return tuple(
        ClassScores(str(name), float(p), float(r), float(f), int(n))
        for name, p, r, f, n in zip(class_names, precision, recall, f1, actual, strict=True)
    )


def calibration(y_true: np.ndarray, proba: np.ndarray, num_bins: int = 10) -> Calibration:
    """Reliability bins of the top-class confidence and the expected calibration error (ECE)."""
    proba = _check_proba(proba, y_true)
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=False), 0, num_bins - 1)
    bins, error = [], 0.0
    for b in range(num_bins):
        members = index == b
        count = int(members.sum())
        mean_confidence = float(confidence[members].mean()) if count else 0.0
        mean_accuracy = float(correct[members].mean()) if count else 0.0
        error += count * abs(mean_accuracy - mean_confidence)
        bins.append(CalibrationBin(float(edges[b]), float(edges[b + 1]), count, mean_confidence, mean_accuracy))
    return Calibration(expected_error=error / len(y_true), bins=tuple(bins))


def evaluate(y_true: np.ndarray, proba: np.ndarray, class_names: Sequence[str], num_bins: int = 10) -> Evaluation:
    """Everything the evaluation page shows, from test labels and predicted probabilities."""
    proba = _check_proba(proba, y_true)
    if proba.shape[1] != len(class_names):
        raise InvalidInput(f"Probabilities have {proba.shape[1]} columns but there are {len(class_names)} classes.")
    y_pred = proba.argmax(axis=1)
    confusion = confusion_matrix(y_true, y_pred, len(class_names))
    return Evaluation(
        accuracy=accuracy(y_true, y_pred),
        classes=per_class_scores(confusion, class_names),
        confusion=confusion,
        calibration=calibration(y_true, proba, num_bins),
    )


def misclassified(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray, ids: Sequence[str]) -> list[Mistake]:
    """The pictures predicted wrong, most confident mistakes first."""
    y_true, y_pred = _check_pair(y_true, y_pred)
    proba = _check_proba(proba, y_true)
    _check_ids(ids, y_true)
    rows = np.flatnonzero(y_true != y_pred)
    mistakes = [_mistake(ids[i], int(y_true[i]), int(y_pred[i]), proba[i]) for i in rows]
    return sorted(mistakes, key=lambda m: (-m.confidence, m.image_id))


def possible_label_mistakes(
    out_of_fold_proba: np.ndarray, labels: np.ndarray, ids: Sequence[str], threshold: float = 0.9
) -> list[Mistake]:
    """Pictures whose given class an out-of-fold model strongly disputes: it puts at least `threshold`
    probability on one other class. Most disputed first. Out-of-fold, so a model never judges a picture it
    learned from (it would just repeat the label).
    """
    if not 0.0 < threshold < 1.0:
        raise InvalidInput(f"The threshold must be between 0 and 1, not {threshold}.")
    labels = np.asarray(labels)
    proba = _check_proba(out_of_fold_proba, labels)
    _check_ids(ids, labels)
    predicted = proba.argmax(axis=1)
    disputed = np.flatnonzero((predicted != labels) & (proba.max(axis=1) >= threshold))
    found = [_mistake(ids[i], int(labels[i]), int(predicted[i]), proba[i]) for i in disputed]
    return sorted(found, key=lambda m: (m.given_probability, -m.confidence, m.image_id))


def out_of_fold_head_proba(
    features: np.ndarray,
    labels: np.ndarray,
    spec: CandidateSpec,
    folds: int = 5,
    *,
    mirrored: np.ndarray | None = None,
    max_epochs: int | None = None,
) -> np.ndarray:
    """Probabilities for every picture from a head fitted without it (stratified folds, seeded by the spec).

    Cheap for frozen-backbone candidates: the features are computed once and only the head is refitted.
    Each fold's head trains for `max_epochs` (default: the spec's) without early stopping.
    """
    labels = np.asarray(labels)
    features = np.asarray(features, dtype=np.float32)
    if len(features) != len(labels):
        raise InvalidInput(f"{len(features)} feature rows but {len(labels)} labels.")
    num_classes = int(labels.max()) + 1
    counts = np.bincount(labels, minlength=num_classes)
    if folds < 2 or counts.min() < 2:
        raise InvalidInput("Out-of-fold predictions need at least 2 folds and 2 pictures in every class.")
    fold_of = _stratified_folds(labels, folds, spec.seed)
    fold_spec = replace(spec, max_epochs=max_epochs or spec.max_epochs)
    use_mirror = mirrored is not None and "flip" in spec.augmentation
    proba = np.zeros((len(labels), num_classes), np.float32)
    for fold in range(folds):
        held, kept = fold_of == fold, fold_of != fold
        if not held.any():
            continue
        train_x, train_y = features[kept], labels[kept]
        test_x = features[held]
        if use_mirror:
            train_x = np.concatenate([train_x, mirrored[kept]])
            train_y = np.concatenate([train_y, labels[kept]])
            test_x = (test_x + mirrored[held]) * np.float32(0.5)
        head, _ = fit_head(train_x, train_y, None, None, fold_spec, class_names=[str(c) for c in range(num_classes)])
        proba[held] = head.predict_proba(test_x)
    return proba


def _stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(labels), np.int64)
    offset = 0
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        # Continue the round-robin across classes so that small classes do not all start in fold 0.
        fold_of[members] = (np.arange(len(members)) + offset) % folds
        offset += len(members)
    return fold_of


def _mistake(image_id: str, given: int, predicted: int, row: np.ndarray) -> Mistake:
    return Mistake(str(image_id), given, predicted, float(row[predicted]), float(row[given]))


def _check_pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or len(y_true) == 0:
        raise InvalidInput(
            f"True and predicted labels must be two equally long lists, got {y_true.shape}, {y_pred.shape}."
        )
    if min(y_true.min(), y_pred.min()) < 0:
        raise InvalidInput("Class indices cannot be negative.")
    return y_true.astype(np.int64), y_pred.astype(np.int64)


def _check_proba(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim != 2 or len(proba) != len(labels) or len(labels) == 0:
        raise InvalidInput(f"Probabilities {proba.shape} must have one row per label ({len(labels)}).")
    return proba


def _check_ids(ids: Sequence[str], labels: np.ndarray) -> None:
    if len(ids) != len(labels):
        raise InvalidInput(f"{len(ids)} picture ids for {len(labels)} labels.")
