"""Evaluation numbers on hand-checked cases, and label-mistake finding with out-of-fold heads."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import metrics
from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput

Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2])
PROBA = np.array(
    [
        [0.9, 0.05, 0.05],
        [0.6, 0.3, 0.1],
        [0.2, 0.7, 0.1],
        [0.1, 0.8, 0.1],
        [0.1, 0.35, 0.55],
        [0.0, 0.05, 0.95],
    ]
)
IDS = ["a", "b", "c", "d", "e", "f"]


def test_accuracy_and_confusion_matrix() -> None:
    assert metrics.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    np.testing.assert_array_equal(
        metrics.confusion_matrix(Y_TRUE, Y_PRED, 3),
        [[2, 1, 0], [0, 1, 1], [0, 0, 1]],
    )


def test_per_class_scores() -> None:
    scores = metrics.per_class_scores(metrics.confusion_matrix(Y_TRUE, Y_PRED, 3), ["cat", "dog", "eel"])

    cat, dog, eel = scores
    assert (cat.name, cat.precision, cat.recall, cat.support) == ("cat", 1.0, pytest.approx(2 / 3), 3)
    assert cat.f1 == pytest.approx(0.8)
    assert (dog.precision, dog.recall, dog.f1) == (0.5, 0.5, 0.5)
    assert (eel.precision, eel.recall) == (0.5, 1.0)


def test_a_class_never_predicted_scores_zero_not_nan() -> None:
    scores = metrics.per_class_scores(metrics.confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2), ["a", "b"])

    assert (scores[1].precision, scores[1].recall, scores[1].f1) == (0.0, 0.0, 0.0)


def test_calibration_bins_and_expected_error() -> None:
    result = metrics.calibration(Y_TRUE, PROBA, num_bins=5)

    assert len(result.bins) == 5 and sum(b.count for b in result.bins) == 6
    top = result.bins[4]  # confidences 0.8, 0.9, 0.95: all correct
    assert top.count == 3 and top.accuracy == 1.0 and top.confidence == pytest.approx((0.8 + 0.9 + 0.95) / 3)
    expected = sum(b.count * abs(b.accuracy - b.confidence) for b in result.bins) / 6
    assert result.expected_error == pytest.approx(expected)
    perfect = metrics.calibration(np.array([0, 1]), np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert perfect.expected_error == 0.0


def test_evaluate_puts_it_together() -> None:
    result = metrics.evaluate(Y_TRUE, PROBA, ["cat", "dog", "eel"])

    assert result.accuracy == pytest.approx(4 / 6)
    assert [c.name for c in result.classes] == ["cat", "dog", "eel"]
    assert result.confusion.sum() == 6


def test_misclassified_lists_the_most_confident_mistakes_first() -> None:
    found = metrics.misclassified(Y_TRUE, Y_PRED, PROBA, IDS)

    assert [(m.image_id, m.given, m.predicted) for m in found] == [("c", 0, 1), ("e", 1, 2)]
    assert found[0].confidence == pytest.approx(0.7) and found[0].given_probability == pytest.approx(0.2)


def test_possible_label_mistakes_need_a_strong_disagreement() -> None:
    proba = np.array([[0.97, 0.03], [0.2, 0.8], [0.01, 0.99], [0.5, 0.5]])
    labels = np.array([1, 1, 0, 0])

    found = metrics.possible_label_mistakes(proba, labels, ["w", "x", "y", "z"], threshold=0.9)

    assert [m.image_id for m in found] == ["y", "w"]  # least probability on the given class first
    with pytest.raises(InvalidInput):
        metrics.possible_label_mistakes(proba, labels, ["w"], threshold=0.9)


def test_out_of_fold_probabilities_find_planted_label_mistakes() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 4
    labels = np.repeat(np.arange(3), 40)
    features = (centers[labels] + rng.normal(size=(120, 16))).astype(np.float32)
    given = labels.copy()
    planted = [5, 50, 100]
    given[planted] = (labels[planted] + 1) % 3
    spec = CandidateSpec(
        kind="frozen_head",
        color="rgb",
        input_size=224,
        backbone="efficientnet_lite0",
        max_epochs=30,
        batch_size=32,
        learning_rate=0.02,
    )

    proba = metrics.out_of_fold_head_proba(features, given, spec, folds=4)
    found = metrics.possible_label_mistakes(proba, given, [str(i) for i in range(120)], threshold=0.8)

    assert proba.shape == (120, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert {int(m.image_id) for m in found} == set(planted)
    assert all(m.predicted == labels[int(m.image_id)] for m in found)


def test_out_of_fold_uses_mirrored_rows_when_the_spec_flips() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 10)
    features = (labels[:, None] * 3 + rng.normal(size=(20, 4))).astype(np.float32)
    spec = CandidateSpec(
        kind="frozen_head", color="rgb", input_size=224, backbone="efficientnet_lite0", max_epochs=5,
        augmentation=frozenset({"flip"}),
    )  # fmt: skip

    proba = metrics.out_of_fold_head_proba(features, labels, spec, folds=2, mirrored=features + 0.01)

    assert np.mean(proba.argmax(axis=1) == labels) > 0.9


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidInput):
        metrics.accuracy(np.array([0, 1]), np.array([0]))
    with pytest.raises(InvalidInput):
        metrics.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(InvalidInput):
        metrics.out_of_fold_head_proba(np.zeros((3, 2), np.float32), np.array([0, 1, 1]), _spec(), folds=2)


def _spec() -> CandidateSpec:
    return CandidateSpec(kind="frozen_head", color="rgb", input_size=224, backbone="efficientnet_lite0")
