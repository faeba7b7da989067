"""Numpy classifier heads: fitting on features, early stopping and the stop callback, inference, bytes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pipelines.candidates import CandidateSpec
from pipelines.errors import InvalidInput
from pipelines.heads import Head, fit_head, softmax

SOFTMAX = CandidateSpec(
    kind="frozen_head", color="rgb", input_size=224, backbone="efficientnet_lite0", max_epochs=40, batch_size=64
)
MLP = dataclasses.replace(SOFTMAX, head="mlp", hidden_units=32, dropout=0.2)


def blobs(per_class: int, num_classes: int = 3, dim: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters, far apart along random directions, offset and scaled like real features."""
    centers = np.random.default_rng(0).normal(size=(num_classes, dim)) * 3.0
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(num_classes), per_class)
    features = centers[labels] + rng.normal(size=(len(labels), dim))
    return (features * 5.0 + 10.0).astype(np.float32), labels


def rings(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric rings: not linearly separable, easy for one hidden layer."""
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, 2 * per_class)
    radius = np.repeat([1.0, 3.0], per_class) + rng.normal(scale=0.2, size=2 * per_class)
    features = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1).astype(np.float32)
    return features, np.repeat([0, 1], per_class)


def test_softmax_head_learns_separable_classes() -> None:
    x, y = blobs(100)
    vx, vy = blobs(30, seed=1)

    head, history = fit_head(x, y, vx, vy, SOFTMAX, class_names=["a", "b", "c"])

    assert head.kind == "softmax" and head.class_names == ("a", "b", "c")
    assert np.mean(head.predict(vx) == vy) > 0.95
    assert history.best_val_accuracy > 0.95
    proba = head.predict_proba(vx)
    assert proba.dtype == np.float32 and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)


def test_mlp_head_beats_softmax_where_classes_are_not_linear() -> None:
    x, y = rings(200)
    vx, vy = rings(100, seed=1)
    spec = dataclasses.replace(MLP, max_epochs=60, learning_rate=0.01)

    mlp, _ = fit_head(x, y, vx, vy, spec)
    linear, _ = fit_head(x, y, vx, vy, dataclasses.replace(SOFTMAX, learning_rate=0.01))

    assert mlp.kind == "mlp" and mlp.hidden_weights.shape == (2, 32)
    assert np.mean(mlp.predict(vx) == vy) > 0.9 > np.mean(linear.predict(vx) == vy)


def test_on_epoch_sees_metrics_and_can_stop() -> None:
    x, y = blobs(50)
    seen: list[tuple[int, dict[str, float]]] = []

    def on_epoch(epoch: int, metrics: dict[str, float]) -> bool:
        seen.append((epoch, metrics))
        return epoch == 3

    _, history = fit_head(x, y, x, y, SOFTMAX, on_epoch=on_epoch)

    assert [epoch for epoch, _ in seen] == [1, 2, 3]
    assert {"val_accuracy", "train_accuracy", "loss", "seconds"} <= set(seen[0][1])
    assert history.stopped_because == "asked to stop" and len(history.epochs) == 3


def test_early_stopping_keeps_the_best_epoch() -> None:
    x, y = blobs(40)
    noise = np.random.default_rng(2).permutation(y)  # validation labels no model can learn

    _, history = fit_head(x, y, x, noise, dataclasses.replace(SOFTMAX, max_epochs=200), patience=5)

    assert len(history.epochs) < 200
    assert history.stopped_because.startswith("no better validation accuracy")
    assert history.best_val_accuracy == max(row["val_accuracy"] for row in history.epochs)


def test_class_balanced_weights_help_a_rare_class() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, (400, 2)), rng.normal(1.2, 1, (20, 2))]).astype(np.float32)
    y = np.repeat([0, 1], [400, 20])
    plain, _ = fit_head(x, y, None, None, dataclasses.replace(SOFTMAX, max_epochs=30))
    balanced, _ = fit_head(x, y, None, None, dataclasses.replace(SOFTMAX, max_epochs=30, class_balanced=True))

    rare = y == 1
    assert np.mean(balanced.predict(x[rare]) == 1) > np.mean(plain.predict(x[rare]) == 1)


def test_fitting_is_deterministic_for_a_seed() -> None:
    x, y = blobs(30)
    first, _ = fit_head(x, y, x, y, MLP)
    second, _ = fit_head(x, y, x, y, MLP)

    assert np.array_equal(first.hidden_weights, second.hidden_weights)
    assert np.array_equal(first.weights, second.weights)


@pytest.mark.parametrize("spec", [pytest.param(SOFTMAX, id="softmax"), pytest.param(MLP, id="mlp")])
def test_bytes_round_trip(spec: CandidateSpec) -> None:
    x, y = blobs(20)
    head, _ = fit_head(x, y, None, None, dataclasses.replace(spec, max_epochs=3), class_names=["x", "y", "zé"])

    again = Head.from_bytes(head.to_bytes())

    assert again.class_names == ("x", "y", "zé") and again.kind == head.kind
    np.testing.assert_array_equal(again.predict_proba(x), head.predict_proba(x))


def test_bad_inputs_are_refused() -> None:
    x, y = blobs(10)
    head, _ = fit_head(x, y, None, None, dataclasses.replace(SOFTMAX, max_epochs=1))

    with pytest.raises(InvalidInput, match="another backbone"):
        head.predict_proba(np.zeros((2, 7), np.float32))
    with pytest.raises(InvalidInput):
        fit_head(x, y[:-1], None, None, SOFTMAX)
    with pytest.raises(InvalidInput):
        fit_head(np.full_like(x, np.nan), y, None, None, SOFTMAX)
    with pytest.raises(InvalidInput):
        Head.from_bytes(b"not an npz")
    with pytest.raises(InvalidInput):
        Head(weights=np.zeros((4, 3), np.float32), bias=np.zeros(3, np.float32), class_names=("a", "b"))


def test_softmax_is_stable_for_large_logits() -> None:
    proba = softmax(np.array([[1000.0, 0.0], [-1000.0, 1000.0]]))

    assert np.isfinite(proba).all() and np.allclose(proba, [[1, 0], [0, 1]])


@pytest.mark.parametrize("spec", [SOFTMAX, MLP], ids=["softmax", "mlp"])
def test_an_earlier_head_unfolds_to_the_same_logits(spec: CandidateSpec) -> None:
    from pipelines.heads import _folded_head, _unfolded_params

    x, y = blobs(60)
    head, _ = fit_head(x, y, None, None, dataclasses.replace(spec, max_epochs=3), class_names=["a", "b", "c"])
    other, _ = blobs(40, seed=3)  # standardized with other statistics, as a later data set would be
    mean, std = other.mean(axis=0), other.std(axis=0)

    again = _folded_head(_unfolded_params(head, mean, std, ("a", "b", "c")), mean, std, ("a", "b", "c"))

    assert np.allclose(again.logits(x), head.logits(x), rtol=1e-4, atol=1e-3)


def test_a_warm_start_learns_a_new_class_in_a_few_epochs_and_keeps_the_old_ones() -> None:
    x, y = blobs(100, num_classes=4)
    vx, vy = blobs(30, num_classes=4, seed=1)
    old = y < 3
    earlier, _ = fit_head(x[old], y[old], vx[vy < 3], vy[vy < 3], SOFTMAX, class_names=["a", "b", "c"])
    few = dataclasses.replace(SOFTMAX, max_epochs=2)

    warm, _ = fit_head(x, y, vx, vy, few, class_names=["a", "b", "c", "d"], start=earlier)
    assert np.mean(warm.predict(vx) == vy) > 0.95
    assert np.mean(warm.predict(vx[vy < 3]) == vy[vy < 3]) > 0.95

    # the class order may change: a class the earlier head knew keeps its weights under its name
    reordered, _ = fit_head(x, 3 - y, vx, 3 - vy, few, class_names=["d", "c", "b", "a"], start=earlier)
    assert np.mean(reordered.predict(vx) == 3 - vy) > 0.95


def test_an_earlier_head_of_another_shape_is_refused() -> None:
    x, y = blobs(30)
    earlier, _ = fit_head(x[:, :10], y, None, None, dataclasses.replace(SOFTMAX, max_epochs=1))
    with pytest.raises(InvalidInput, match="takes 10 features"):
        fit_head(x, y, None, None, SOFTMAX, start=earlier)
    mlp, _ = fit_head(x, y, None, None, dataclasses.replace(MLP, max_epochs=1))
    with pytest.raises(InvalidInput, match="another shape"):
        fit_head(x, y, None, None, SOFTMAX, start=mlp)
