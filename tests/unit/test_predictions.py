"""Serving math on tiny arrays: answers (top-k, unsure flag) and the features a head decides on."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.errors import InvalidInput
from pipelines.predictions import answer, answers

CLASSES = ("cat", "dog", "bird")


def test_the_answer_lists_the_top_classes_best_first() -> None:
    result = answer(np.array([0.2, 0.7, 0.1]), CLASSES, top_k=2, uncertain_below=0.5)

    assert result.label == "dog" and result.confidence == pytest.approx(0.7)
    assert [label for label, _ in result.top] == ["dog", "cat"]
    assert result.uncertain is False


@pytest.mark.parametrize(
    ("probabilities", "threshold", "uncertain"),
    [
        pytest.param([0.45, 0.35, 0.2], 0.5, True, id="below-the-default"),
        pytest.param([0.5, 0.3, 0.2], 0.5, False, id="at-the-threshold"),
        pytest.param([0.8, 0.1, 0.1], 0.9, True, id="stricter-threshold"),
        pytest.param([0.4, 0.3, 0.3], 0.0, False, id="never-unsure"),
    ],
)
def test_an_answer_is_unsure_below_the_threshold(probabilities, threshold, uncertain) -> None:
    assert answer(np.array(probabilities), CLASSES, top_k=1, uncertain_below=threshold).uncertain is uncertain


def test_top_k_larger_than_the_classes_lists_every_class_and_ties_keep_class_order() -> None:
    result = answer(np.array([0.4, 0.2, 0.4]), CLASSES, top_k=10, uncertain_below=0.5)

    assert [label for label, _ in result.top] == ["cat", "bird", "dog"]


def test_answers_give_one_answer_per_row() -> None:
    rows = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8]])

    assert [a.label for a in answers(rows, CLASSES, top_k=1, uncertain_below=0.5)] == ["cat", "bird"]


@pytest.mark.parametrize(
    ("probabilities", "top_k", "threshold"),
    [
        pytest.param([0.5, 0.5], 1, 0.5, id="fewer-probabilities-than-classes"),
        pytest.param([0.2, 0.7, 0.1], 0, 0.5, id="top-zero"),
        pytest.param([0.2, 0.7, 0.1], 1, 1.5, id="threshold-above-one"),
    ],
)
def test_unusable_inputs_are_refused(probabilities, top_k, threshold) -> None:
    with pytest.raises(InvalidInput):
        answer(np.array(probabilities), CLASSES, top_k=top_k, uncertain_below=threshold)


def test_views_hold_the_mirror_image_only_where_asked_and_the_head_averages_them() -> None:
    import keras
    from keras import layers

    from pipelines.features import FeatureExtractor, extract_views, image_input
    from pipelines.heads import Head

    inputs = image_input(4, 1)
    extractor = FeatureExtractor(keras.Model(inputs, layers.Flatten()(layers.Rescaling(1.0)(inputs))))
    images = np.random.default_rng(0).integers(0, 255, (3, 4, 4, 1), dtype=np.uint8)

    features, mirrored = extract_views(extractor, images, np.array([False, True, False]))

    flat = images.reshape(3, -1).astype(np.float32)
    np.testing.assert_allclose(features, flat)
    np.testing.assert_allclose(mirrored, images[1:2, :, ::-1].reshape(1, -1).astype(np.float32))
    head = Head(np.eye(16, 2, dtype=np.float32), np.zeros(2, np.float32), ("a", "b"))
    np.testing.assert_allclose(
        head.predict_proba_views(features[1:2], mirrored), head.predict_proba((features[1:2] + mirrored) / 2)
    )
    with pytest.raises(InvalidInput):
        extract_views(extractor, images, np.array([True]))
    with pytest.raises(InvalidInput):
        head.predict_proba_views(features, mirrored)


@pytest.mark.parametrize(
    ("correct", "total", "low", "high"),
    [
        pytest.param(0, 0, 0.0, 1.0, id="nothing-known"),
        pytest.param(8, 10, 0.490, 0.943, id="few"),
        pytest.param(800, 1000, 0.774, 0.824, id="many"),
        pytest.param(10, 10, 0.722, 1.0, id="all-right"),
    ],
)
def test_the_accuracy_interval_narrows_with_more_feedback(correct, total, low, high) -> None:
    from pipelines.predictions import accuracy_interval

    assert accuracy_interval(correct, total) == pytest.approx((low, high), abs=1e-3)
