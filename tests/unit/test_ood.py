"""'None of the above' models (pipelines.ood): centroid distances on features, max probability, thresholds."""

from __future__ import annotations

import numpy as np

from pipelines.ood import OodModel, fit_centroids, fit_max_probability, none_of_the_above
from pipelines.predictions import answers


def clusters(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.zeros((2, 16), dtype=np.float32)
    centres[0, 0] = centres[1, 1] = 10
    labels = np.arange(n) % 2
    return centres[labels] + rng.normal(0, 1, (n, 16)).astype(np.float32), labels


def test_pictures_far_from_every_class_have_a_small_known_share() -> None:
    rng = np.random.default_rng(0)
    train, labels = clusters(rng, 200)
    val, _ = clusters(rng, 100)
    ood = fit_centroids(train, labels, val, 2)
    known, _ = clusters(rng, 100)
    unseen = np.zeros((100, 16), dtype=np.float32)
    unseen[:, 5] = 10
    unseen += rng.normal(0, 1, (100, 16)).astype(np.float32)

    known_share = ood.known_share(ood.distances(features=known))
    unseen_share = ood.known_share(ood.distances(features=unseen))

    assert (known_share < 0.01).mean() <= 0.05
    assert (unseen_share < 0.01).mean() == 1.0
    assert np.all(np.diff(ood.val_distances) >= 0)


def test_the_model_survives_a_round_trip_through_bytes() -> None:
    rng = np.random.default_rng(1)
    train, labels = clusters(rng, 40)
    ood = fit_centroids(train, labels, train[:10], 2)

    back = OodModel.from_bytes(ood.to_bytes())

    assert back.kind == "centroid"
    np.testing.assert_allclose(back.distances(features=train), ood.distances(features=train))
    plain = OodModel.from_bytes(fit_max_probability(np.array([[0.9, 0.1], [0.6, 0.4]])).to_bytes())
    assert plain.kind == "max_probability" and plain.centroids is None
    np.testing.assert_allclose(plain.val_distances, [0.1, 0.4])


def test_max_probability_flags_answers_less_sure_than_the_known_ones() -> None:
    ood = fit_max_probability(np.array([[0.99, 0.01]] * 50 + [[0.8, 0.2]] * 50))

    shares = ood.known_share(ood.distances(probabilities=np.array([[0.95, 0.05], [0.55, 0.45]])))

    assert shares.tolist() == [0.5, 0.0]


def test_the_flag_comes_with_a_reason_and_a_threshold_of_zero_turns_it_off() -> None:
    assert none_of_the_above(0.5, 0.01) == (False, None)
    flagged, reason = none_of_the_above(0.0, 0.01)
    assert flagged and "unlike every class" in reason
    assert none_of_the_above(0.0, 0.0) == (False, None)

    result = answers(
        np.array([[0.9, 0.1], [0.6, 0.4]]), ["a", "b"], top_k=1, uncertain_below=0.5, known_share=np.array([1, 0])
    )
    assert [(r.label, r.none_of_the_above) for r in result] == [("a", False), ("a", True)]
    assert [r.none_of_the_above for r in answers(np.array([[0.9, 0.1]]), ["a", "b"], top_k=1, uncertain_below=0.5)] == [
        False
    ]


def test_a_tiny_validation_split_is_helped_by_left_out_training_distances() -> None:
    rng = np.random.default_rng(2)
    train, labels = clusters(rng, 60)
    ood = fit_centroids(train, labels, train[:0], 2)
    known, _ = clusters(rng, 200)

    assert len(ood.val_distances) == 60
    assert (ood.known_share(ood.distances(features=known)) < 0.01).mean() <= 0.1
